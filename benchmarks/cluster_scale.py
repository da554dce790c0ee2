"""Clustering at scale on the kNN graph (writes benchmarks/results/cluster_scale.{json,md}).

Two parts:

* **Quality on LFW**: all 13,233 LFW faces clustered by each method on all pairs and on the
  FAISS kNN graph (``graph="knn"``, ``facespace.clustering.KNN_NEIGHBOURS`` neighbours),
  each at the method's ``default_threshold`` for 13,233 faces; pairwise and BCubed F1 of
  both, their difference (the target: within 0.005), and how alike the two partitions are
  (pairwise F1 of one against the other).
* **Time and memory** at 10k, 100k and 1M faces: the LFW embeddings (the first 10,000 for
  10k) plus the face-like distractors of ``search_scale.py`` (mixtures of 2-3 real
  embeddings with noise), clustered on the kNN graph at the method's default threshold for
  that many faces. Each size runs in a fresh process: the kNN search once
  (``nearest_neighbours``: exact up to 50,000 faces, IVF-Flat above), then each method on it
  (``nearest=``), each timed in wall and CPU seconds (the shared machine stretches wall time),
  and each step's peak resident memory (Linux ``VmHWM``, reset before each step; the
  process's whole memory, the data and the evaluation cache's leftovers included), with the
  resident memory after loading the data for reference.

    python benchmarks/cluster_scale.py [--sizes 10000 100000 1000000] [--methods ...] [--skip-quality]

The machine is shared with other sessions (load averages are recorded): compare within a run.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time

import numpy as np

from _paths import REPO, RESULTS
from _recognition_common import lfw_embeddings, machine, machine_note

METHODS = ["chinese-whispers", "components", "agglomerative"]


def faces_of_size(n: int) -> tuple[np.ndarray, str, float]:
    """(n embeddings: LFW first, then distractors; model name; its verification threshold)."""
    from search_scale import distractors

    _, _, real, _, pipeline = lfw_embeddings(progress=False)
    if n <= len(real):
        return real[:n], pipeline.model_name, pipeline.threshold
    extra = distractors(real, n - len(real), np.random.default_rng(0))
    return np.concatenate([real, extra]), pipeline.model_name, pipeline.threshold


def memory_mb(field: str) -> float:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak since :func:`reset_peak`) of this process, MB."""
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def reset_peak() -> None:
    """Start a new peak-RSS measurement (Linux: ``5`` into ``clear_refs`` resets VmHWM)."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def child(n: int, methods: list[str]) -> dict:
    """One size in this process: the kNN search once (timed), then each method on it (timed)."""
    from facespace.clustering import KNN_EXACT_MAX, cluster, default_threshold, knn_graph, nearest_neighbours

    x, model, verification = faces_of_size(n)
    x = np.ascontiguousarray(x)
    gc.collect()
    data_rss = memory_mb("VmRSS")
    reset_peak()
    t0, c0 = time.perf_counter(), time.process_time()
    nearest = nearest_neighbours(x)
    out = {"faces": n, "neighbours": int(nearest[1].shape[1] - 1), "search": "exact" if n <= KNN_EXACT_MAX else "ivf-flat",
           "knn_seconds": round(time.perf_counter() - t0, 1), "knn_cpu_seconds": round(time.process_time() - c0, 1),
           "data_rss_mb": round(data_rss), "knn_peak_rss_mb": round(memory_mb("VmHWM")), "methods": []}
    for method in methods:
        reset_peak()
        threshold = default_threshold(model, method, n, verification)
        t0, c0 = time.perf_counter(), time.process_time()
        result = cluster(x, method, threshold=threshold, graph="knn", nearest=nearest)
        out["methods"].append({"method": method, "threshold": round(threshold, 4), "clusters": result.n_clusters,
                               "seconds": round(time.perf_counter() - t0, 1),
                               "cpu_seconds": round(time.process_time() - c0, 1),
                               "peak_rss_mb": round(memory_mb("VmHWM")),
                               "edges": int(len(knn_graph(x, threshold, nearest=nearest)[0]))})
        print(out["methods"][-1], file=sys.stderr, flush=True)
    out["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    return out


def run_child(n: int, methods: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO / "benchmarks")])}
    out = subprocess.run([sys.executable, __file__, "--child", str(n), *methods], capture_output=True,
                         text=True, env=env)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        return {"faces": n, "failed": out.stderr[-2000:]}
    return json.loads(lines[-1][len("RESULT "):])


def quality(methods: list[str]) -> list[dict]:
    """Each method on all 13,233 LFW faces, all pairs against the kNN graph."""
    from facespace.clustering import bcubed_scores, cluster, default_threshold, pairwise_scores

    _, labels, x, _, pipeline = lfw_embeddings(progress=False)
    rows = []
    for method in methods:
        threshold = default_threshold(pipeline.model_name, method, len(x), pipeline.threshold)
        found = {}
        row = {"method": method, "threshold": round(threshold, 4), "faces": len(x)}
        for graph in ("all-pairs", "knn"):
            t0 = time.perf_counter()
            result = cluster(x, method, threshold=threshold, graph=graph)
            found[graph] = result.labels
            row[graph] = {"pairwise_f1": round(pairwise_scores(labels, result.labels)["f1"], 4),
                          "bcubed_f1": round(bcubed_scores(labels, result.labels)["f1"], 4),
                          "clusters": result.n_clusters, "seconds": round(time.perf_counter() - t0, 1)}
        row["pairwise_f1_difference"] = round(row["knn"]["pairwise_f1"] - row["all-pairs"]["pairwise_f1"], 4)
        row["bcubed_f1_difference"] = round(row["knn"]["bcubed_f1"] - row["all-pairs"]["bcubed_f1"], 4)
        row["partition_agreement_pairwise_f1"] = round(pairwise_scores(found["all-pairs"], found["knn"])["f1"], 4)
        rows.append(row)
        print(row, flush=True)
    return rows


def markdown(result: dict) -> str:
    lines = ["# Clustering at scale (kNN graph)", "", "## Quality on LFW (13,233 faces): all pairs vs kNN graph", "",
             "| method | threshold | pairwise F1 all-pairs | kNN | BCubed F1 all-pairs | kNN | same partition (F1) |",
             "|---|---|---|---|---|---|---|"]
    for r in result.get("lfw_quality", []):
        lines.append(f"| {r['method']} | {r['threshold']} | {r['all-pairs']['pairwise_f1']} | {r['knn']['pairwise_f1']} | "
                     f"{r['all-pairs']['bcubed_f1']} | {r['knn']['bcubed_f1']} | {r['partition_agreement_pairwise_f1']} |")
    lines += ["", "## Time and peak memory (kNN graph, LFW + face-like distractors)", "",
              "The kNN search runs once per size; each method then clusters on it (wall and CPU seconds; "
              "the machine is shared, so wall time is stretched by others' load).", "",
              "| faces | step | threshold | edges kept | wall s | CPU s | clusters | peak RSS of the step (MB) |",
              "|---|---|---|---|---|---|---|---|"]
    for r in result["scale"]:
        if "failed" in r:
            lines.append(f"| {r['faces']:,} | failed | | | | | | |")
            continue
        lines.append(f"| {r['faces']:,} | data (embeddings, resident) | | | | | | {r['data_rss_mb']} |")
        lines.append(f"| {r['faces']:,} | kNN search ({r['search']}, k={r['neighbours']}) | | | {r['knn_seconds']} | "
                     f"{r['knn_cpu_seconds']} | | {r['knn_peak_rss_mb']} |")
        for m in r["methods"]:
            lines.append(f"| {r['faces']:,} | {m['method']} | {m['threshold']} | {m['edges']:,} | {m['seconds']} | "
                         f"{m['cpu_seconds']} | {m['clusters']:,} | {m['peak_rss_mb']} |")
    return "\n".join(lines + ["", machine_note(result["machine"], result["load_average_before"]), ""])


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print("RESULT " + json.dumps(child(int(sys.argv[2]), sys.argv[3:])))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--quality-only", action="store_true",
                        help="rerun the LFW quality table only; keep the committed file's time and memory rows")
    args = parser.parse_args()
    before = [round(v, 2) for v in os.getloadavg()]
    rows = quality(args.methods) if not args.skip_quality else []
    scale = []
    if args.quality_only:
        scale = json.loads((RESULTS / "cluster_scale.json").read_text())["scale"]
    for n in ([] if args.quality_only else args.sizes):
        scale.append(run_child(n, args.methods))
        print(scale[-1], flush=True)
    result = {"benchmark": "cluster_scale", "load_average_before": before, "lfw_quality": rows, "scale": scale,
              "command": "python " + " ".join(["benchmarks/cluster_scale.py", *sys.argv[1:]]), "machine": machine()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "cluster_scale.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "cluster_scale.md").write_text(markdown(result))
    print(f"wrote {RESULTS / 'cluster_scale.json'} and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
