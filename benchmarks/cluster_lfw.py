"""Clustering all 13,233 LFW faces into people (writes benchmarks/results/cluster_lfw.json).

For each method: pairwise precision/recall/F1, BCubed precision/recall/F1,
clusters found (LFW has 5,749 people) and seconds. Embeddings come from the
evaluation cache (``embed_paths``). Agglomerative clustering holds all pair
distances (about 0.7 GB for 13,233 faces); k-means runs with k = 5,749 given
and with k estimated.

    python benchmarks/cluster_lfw.py [--methods agglomerative chinese-whispers components kmeans]
                                     [--threshold T] [--limit N]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from _recognition_common import lfw_embeddings, write_result


def main() -> int:
    from facespace.clustering import bcubed_scores, cluster, default_threshold, pairwise_scores

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--methods", nargs="+",
                        default=["agglomerative", "chinese-whispers", "components", "kmeans", "kmeans-estimated"])
    parser.add_argument("--threshold", type=float, default=None,
                        help="squared distance for every method (default: each method's "
                             "facespace.clustering.default_threshold for the number of faces)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N people's faces (quick runs)")
    args = parser.parse_args()

    paths, labels, emb, detected, pipeline = lfw_embeddings(args.model, limit=args.limit)
    people = len(np.unique(labels))
    runs = []
    for method in args.methods:
        name, k = method, None
        if method == "kmeans":
            k = people
        elif method == "kmeans-estimated":
            name = "kmeans"
        threshold = args.threshold if args.threshold is not None else \
            default_threshold(pipeline.model_name, name, len(emb), pipeline.threshold)
        start = time.perf_counter()
        result = cluster(emb, name, threshold=threshold, k=k)
        seconds = time.perf_counter() - start
        run = {"method": method, "params": result.params, "clusters": result.n_clusters,
               "pairwise": pairwise_scores(labels, result.labels), "bcubed": bcubed_scores(labels, result.labels),
               "seconds": round(seconds, 2)}
        runs.append(run)
        print(f"{method:18s} clusters {run['clusters']:6d}  pairwise F1 {run['pairwise']['f1']:.4f}  "
              f"BCubed F1 {run['bcubed']['f1']:.4f}  {seconds:.1f}s", flush=True)
    write_result("cluster_lfw.json" if not args.limit else f"cluster_lfw_first{args.limit}.json", {
        "benchmark": "cluster_lfw", "model": pipeline.model_name, "preprocessing_id": pipeline.preprocessing_id,
        "faces": int(len(labels)), "people": people, "verification_threshold": pipeline.threshold,
        "threshold_rule": "given" if args.threshold is not None else "default_threshold", "runs": runs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
