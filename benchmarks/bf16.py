"""bfloat16 embedding (``backend="torch-bf16"``) against float32: development accuracy, speed.

    python benchmarks/bf16.py [--threads 1] [--repeats 5] [--test]

The adoption rule (issue 13): bf16 becomes a ``--backend`` value only if it is faster than float32
and its accuracy on the development sets -- LFW view 1 ``pairsDevTest`` (1,000 pairs, best
threshold by 10 identity-disjoint folds, ``PairSet.with_folds``; ``pairsDevTrain`` too, 2,200 pairs)
and the Pointing'04 pose pairs
(``facespace.evaluation.pointing04.pose_pairs``, 5 identity-disjoint folds) -- is within 0.1
points of float32's. Detections and crops are the same for both (the evaluation cache); only the
embedding differs. ``--test`` also reports LFW view 2 (``pairs.txt``, the test set: reported,
never used to choose). Speed: faces/s at batch 32 and batch 1 on the same 32 LFW crops, the two
precisions interleaved ``--repeats`` times, ``--threads`` torch threads. Writes
benchmarks/results/bf16.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from datetime import datetime, timezone

import numpy as np

from _paths import DATA, RESULTS

PRECISIONS = ("torch", "torch-bf16")


def lfw(pipeline, pairs_name: str) -> tuple[dict, np.ndarray]:
    from facespace.evaluation.pairs import find_lfw_layout, read_lfw_pairs
    from facespace.evaluation.report import run_pairs

    images_dir, pairs_file = find_lfw_layout(DATA / "lfw", DATA / "lfw" / pairs_name)
    pairs = read_lfw_pairs(pairs_file, images_dir)
    if len(set(pairs.folds.tolist())) < 2:  # view 1 has no folds: identity-disjoint ones are made
        pairs = pairs.with_folds(10)
    run = run_pairs(pipeline, pairs, progress=False)
    m = run.report
    return {"accuracy": m.accuracy, "accuracy_std": m.accuracy_std, "val": m.val, "auc": m.auc}, \
        run.embeddings.embeddings


def pointing04(pipeline) -> dict:
    from facespace.evaluation.cache import embed_paths
    from facespace.evaluation.pointing04 import list_images, pose_pairs
    from facespace.evaluation.protocol import evaluate_pairs
    from facespace.evaluation.scoring import pair_distances

    pairs, _, _ = pose_pairs(list_images(DATA / "pointing04"))
    distances = pair_distances(embed_paths(pipeline, pairs.paths(), progress=False), pairs)
    r = evaluate_pairs(distances, pairs.same, pairs.folds)
    return {"pairs": r.n_pairs, "accuracy": r.accuracy, "accuracy_std": r.accuracy_std, "val": r.val}


def speed(crops: np.ndarray, repeats: int) -> dict:
    """Faces/s of each precision at batch 32 and batch 1 (16 crops one by one), interleaved."""
    from facespace.embedding import Embedder

    embedders = {p: Embedder(backend=p) for p in PRECISIONS}
    runs = {p: {"batch32": [], "batch1": []} for p in PRECISIONS}
    for e in embedders.values():
        e.embed_crops(crops)  # load and warm up
    for _ in range(repeats):
        for p, e in embedders.items():
            start = time.perf_counter()
            e.embed_crops(crops)
            runs[p]["batch32"].append(len(crops) / (time.perf_counter() - start))
            start = time.perf_counter()
            for i in range(16):
                e.embed_crops(crops[i : i + 1])
            runs[p]["batch1"].append(16 / (time.perf_counter() - start))
    return {p: {k: {"faces_per_s": statistics.median(v), "runs": v} for k, v in r.items()}
            for p, r in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--test", action="store_true", help="also LFW view 2 (test set, reported only)")
    args = parser.parse_args()
    import torch

    from facespace import FacePipeline
    from facespace.evaluation.report import machine_info

    torch.set_num_threads(args.threads)
    out = {"benchmark": "bf16 embedding vs float32", "machine": machine_info(), "threads": args.threads,
           "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "mkldnn_bf16_supported": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()), "load_average_before": [round(x, 2) for x in os.getloadavg()],
           "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "development": {}, "test": {}}
    embedded = {}
    for p in PRECISIONS:
        pipeline = FacePipeline(backend=p)
        out["development"][p] = {"preprocessing_id": pipeline.preprocessing_id}
        out["development"][p]["lfw_view1_devtrain"] = lfw(pipeline, "pairsDevTrain.txt")[0]
        out["development"][p]["lfw_view1_devtest"], embedded[p] = lfw(pipeline, "pairsDevTest.txt")
        out["development"][p]["pointing04"] = pointing04(pipeline)
        if args.test:
            out["test"][p] = {"lfw_view2": lfw(pipeline, "pairs.txt")[0]}
        print(p, json.dumps(out["development"][p]), flush=True)
    cos = np.sum(embedded["torch"] * embedded["torch-bf16"], axis=1)
    out["agreement_lfw_devtest"] = {"min_cosine": float(cos.min()), "median_cosine": float(np.median(cos)),
                                    "max_abs_diff": float(np.abs(embedded["torch"] - embedded["torch-bf16"]).max())}
    dev = out["development"]
    drops = {k: round(100 * (dev["torch"][k]["accuracy"] - dev["torch-bf16"][k]["accuracy"]), 3)
             for k in ("lfw_view1_devtrain", "lfw_view1_devtest", "pointing04")}
    from int8 import face_crops

    lfw_paths = sorted((DATA / "lfw" / "lfw-deepfunneled").glob("*/*.jpg"))[:40]
    out["speed"] = speed(face_crops(FacePipeline(), lfw_paths)[:32], args.repeats)
    faster = out["speed"]["torch-bf16"]["batch32"]["faces_per_s"] / out["speed"]["torch"]["batch32"]["faces_per_s"]
    out["accuracy_drop_points"], out["speedup_batch32"] = drops, round(faster, 3)
    out["adoptable"] = bool(faster > 1 and all(d <= 0.1 for d in drops.values()))
    out["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    (RESULTS / "bf16.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: out[k] for k in ("accuracy_drop_points", "speedup_batch32", "adoptable",
                                          "agreement_lfw_devtest")}, indent=2))


if __name__ == "__main__":
    main()
