"""Search at scale: exact vs FAISS over 1,000,000 embeddings (writes benchmarks/results/search_scale.json).

The database: every real LFW embedding plus distractors, each a random
mixture of 2-3 real embeddings with Gaussian noise, renormalised -- face-like
points that are nobody in particular. Distractors are mixed only from people
who are never queried, so none of them is a perturbed copy of a query or of
its mates (rank-1 identification stays meaningful). Queries: one
image of each LFW person with at least two images, whose other images are in
the database. Reported per index: build seconds, median and p99 latency of
one query at a time, CPU time of one query (the calling thread's: what a query costs when the shared machine's other
load stretches wall time), recall@1 (same nearest neighbour as exact search),
identification rank-1 and bytes per face (codes alone and the whole index).

    python benchmarks/search_scale.py [--n 1000000] [--kinds exact ivf-sq8 ivf-pq hnsw-sq8] [--queries 1000]
    python benchmarks/search_scale.py --curve --threads 1   # recall-latency of ivf-sq8: nprobe x exact re-ranking

--synthetic uses random unit vectors instead of the LFW cache (a smoke test).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from _recognition_common import lfw_embeddings, write_result


def distractors(real: np.ndarray, n: int, rng: np.random.Generator, noise: float = 0.25) -> np.ndarray:
    out = np.empty((n, real.shape[1]), np.float32)
    for s in range(0, n, 100_000):
        m = min(100_000, n - s)
        parts = rng.integers(2, 4, size=m)
        idx = rng.integers(0, len(real), size=(m, 3))
        w = rng.dirichlet(np.ones(3), size=m)
        w[parts == 2, 2] = 0
        mix = np.einsum("mk,mkd->md", w, real[idx]) + rng.normal(scale=noise / np.sqrt(real.shape[1]),
                                                                  size=(m, real.shape[1]))
        out[s:s + m] = mix / np.linalg.norm(mix, axis=1, keepdims=True)
    return out


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--n", type=int, default=1_000_000, help="database size (default 1,000,000)")
    parser.add_argument("--kinds", nargs="+", default=["exact", "ivf-sq8", "ivf-pq", "hnsw-sq8"])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--nprobe", type=int, default=None, help="IVF lists probed (default: the library's)")
    parser.add_argument("--ef-search", type=int, default=None, help="HNSW search breadth (default: the library's)")
    parser.add_argument("--tag", default="", help="suffix of the result file name (for parameter sweeps)")
    parser.add_argument("--threads", type=int, default=None, help="FAISS/BLAS threads (default: library's)")
    parser.add_argument("--synthetic", action="store_true", help="random unit vectors instead of LFW (smoke test)")
    parser.add_argument("--rerank", type=int, default=None, help="candidates re-ranked exactly per result "
                        "(default: the library's; 0: codes only)")
    parser.add_argument("--curve", action="store_true", help="sweep ivf-sq8 over --nprobes x --reranks instead "
                        "(writes search_scale_curve.{json,md,png})")
    parser.add_argument("--nprobes", type=int, nargs="+", default=[32, 64, 96, 128, 192, 256])
    parser.add_argument("--reranks", type=int, nargs="+", default=[0, 4, 16, 64])
    return parser.parse_args()


def real_embeddings(args: argparse.Namespace, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, str]:
    """(embeddings, person labels, model name): LFW's, or random unit vectors with --synthetic."""
    if args.synthetic:
        dim = 128
        real = rng.normal(size=(13233, dim)).astype(np.float32)
        real /= np.linalg.norm(real, axis=1, keepdims=True)
        return real, np.arange(len(real)) // 2, "synthetic"
    _, labels, real, _, pipeline = lfw_embeddings(args.model)
    return real, labels, pipeline.model_name


def measure(kind: str, index, queries: np.ndarray, exact_ids: np.ndarray, db_labels: np.ndarray,
            truth_labels: np.ndarray, build: float) -> dict:
    """One query at a time through ``index``: latency, recall@1 against exact search, rank-1, bytes per face."""
    times, cpu, ids = [], [], []
    for q in queries:
        t, c = time.perf_counter(), time.thread_time()
        _, i = index.search(q[None], 1)
        times.append(time.perf_counter() - t)
        cpu.append(time.thread_time() - c)
        ids.append(i[0, 0])
    ids = np.array(ids)
    run = {"index": kind, "build_seconds": round(build, 2),
           "latency_ms_median": round(1000 * float(np.median(times)), 3),
           "latency_ms_p99": round(1000 * float(np.percentile(times, 99)), 3),
           "cpu_ms_median": round(1000 * float(np.median(cpu)), 3),
           "recall_at_1": float(np.mean(ids == exact_ids[:, 0])),
           "rank1_identification": float(np.mean(db_labels[ids] == truth_labels)),
           "code_bytes_per_face": index.code_bytes,
           "index_bytes_per_face": round(float(index.bytes_per_vector), 1)}
    if kind.startswith("ivf"):
        run["nlist"], run["nprobe"] = index.nlist, index.nprobe
    if kind.startswith("hnsw"):
        run["ef_search"] = index.base.hnsw.efSearch
    if kind != "exact":
        run["rerank"] = index.rerank
    return run


def curve(db: np.ndarray, queries: np.ndarray, exact_ids: np.ndarray, db_labels: np.ndarray,
          truth_labels: np.ndarray, nprobes: list[int], reranks: list[int]) -> list[dict]:
    """The recall-latency curve of ivf-sq8: one index (built with the float vectors kept for
    re-ranking), searched with every ``nprobe`` x ``rerank`` (0: the 8-bit codes alone)."""
    from facespace.gallery.search import FaissIndex

    t0 = time.perf_counter()
    index = FaissIndex(db, "ivf-sq8", rerank=max(max(reranks), 1))
    build = time.perf_counter() - t0
    print(f"ivf-sq8 + float vectors built in {build:.1f}s", flush=True)
    points = []
    for rerank in reranks:
        for nprobe in nprobes:
            index.set_search(nprobe=nprobe, rerank=rerank)
            points.append(measure("ivf-sq8", index, queries, exact_ids, db_labels, truth_labels, build))
            print(points[-1], flush=True)
    return points


def plot_curve(points: list[dict], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for rerank in sorted({p["rerank"] for p in points}):
        line = [p for p in points if p["rerank"] == rerank]
        ax.plot([p["latency_ms_median"] for p in line], [p["recall_at_1"] for p in line], "o-",
                label=f"re-rank {rerank} x k" if rerank else "8-bit codes only")
        for p in line:
            ax.annotate(str(p["nprobe"]), (p["latency_ms_median"], p["recall_at_1"]), fontsize=7,
                        textcoords="offset points", xytext=(3, -8))
    ax.axhline(0.99, color="grey", lw=0.8, ls="--")
    ax.axvline(2.0, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("median latency of one query, ms (one thread)")
    ax.set_ylabel("recall@1 against exact search")
    ax.set_title("IVF-SQ8 at 1M faces: lists probed (labels) and exact re-ranking")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def curve_markdown(result: dict) -> str:
    lines = [f"# Search at {result['database']:,} faces: recall-latency of IVF-SQ8 ({result['model']})", "",
             f"{result['queries']} queries, one at a time, FAISS on {result['machine'].get('faiss_threads')} thread(s); "
             "recall@1 = same nearest neighbour as exact search; rank-1 = the right person first. "
             f"Exact search: {result['exact']['latency_ms_median']} ms median ({result['exact']['cpu_ms_median']} ms "
             "of CPU: the machine was shared with other sessions, load average "
             f"{result['machine'].get('load_average')}, which stretches long queries most). The index keeps "
             "the float vectors for re-ranking (650 bytes a face); the rows with re-rank 0 search its 8-bit "
             "codes alone, as an index without them (138 bytes a face) does.", "",
             "| re-rank x k | nprobe | median ms | p99 ms | median CPU ms | recall@1 | rank-1 | bytes/face (index) |",
             "|---|---|---|---|---|---|---|---|"]
    for p in result["runs"]:
        lines.append(f"| {p['rerank']} | {p['nprobe']} | {p['latency_ms_median']} | {p['latency_ms_p99']} | "
                     f"{p['cpu_ms_median']} | "
                     f"{p['recall_at_1']:.3f} | {p['rank1_identification']:.3f} | {p['index_bytes_per_face']} |")
    return "\n".join(lines + ["", "![recall-latency](search_scale_curve.png)", ""])


def main() -> int:
    from facespace.gallery.search import ExactIndex, build_index

    args = parse_args()
    rng = np.random.default_rng(0)
    if args.threads:
        import faiss

        faiss.omp_set_num_threads(args.threads)

    real, labels, model = real_embeddings(args, rng)
    counts = np.bincount(labels)
    first = np.r_[True, labels[1:] != labels[:-1]]
    query_rows = np.flatnonzero(first & (counts[labels] >= 2))
    rng.shuffle(query_rows)
    query_rows = query_rows[:args.queries]
    base_rows = np.setdiff1d(np.arange(len(real)), query_rows)
    extra = max(args.n - len(base_rows), 0)
    t0 = time.perf_counter()
    pool = real[~np.isin(labels, labels[query_rows])]  # people never queried
    db = np.concatenate([real[base_rows], distractors(pool, extra, rng)]) if extra else real[base_rows][:args.n]
    db_labels = np.concatenate([labels[base_rows], np.full(extra, -1)])[:len(db)]
    print(f"database {len(db):,} x {db.shape[1]} ({len(base_rows):,} real) in {time.perf_counter() - t0:.1f}s; "
          f"{len(query_rows)} queries", flush=True)
    queries = real[query_rows]

    exact = ExactIndex(db)
    _, exact_ids = exact.search(queries, 1)
    if args.curve:
        return write_curve(args, db, queries, exact, exact_ids, db_labels, labels[query_rows], model, extra, pool)
    runs = []
    for kind in args.kinds:
        t0 = time.perf_counter()
        params = {k: v for k, v in (("nprobe", args.nprobe), ("ef_search", args.ef_search), ("rerank", args.rerank))
                  if v is not None}
        index = exact if kind == "exact" else build_index(db, kind, **params)
        build = time.perf_counter() - t0
        runs.append(measure(kind, index, queries, exact_ids, db_labels, labels[query_rows], build))
        print(runs[-1], flush=True)
        if index is not exact:
            del index
    name = ("search_scale" if not args.synthetic and args.n == 1_000_000
            else f"search_scale_{'synthetic_' if args.synthetic else ''}{args.n}")
    write_result(f"{name}{'_' + args.tag if args.tag else ''}.json",
                 {"benchmark": "search_scale", "model": model, "database": len(db), "dim": int(db.shape[1]),
                  "real_embeddings": int(len(base_rows)), "distractors": int(extra),
                  "distractor_source_embeddings": int(len(pool)), "queries": len(query_rows),
                  "runs": runs})
    return 0


def write_curve(args, db, queries, exact, exact_ids, db_labels, truth_labels, model, extra, pool) -> int:
    from _paths import RESULTS

    exact_run = measure("exact", exact, queries, exact_ids, db_labels, truth_labels, 0.0)
    points = curve(db, queries, exact_ids, db_labels, truth_labels, args.nprobes, args.reranks)
    name = "search_scale_curve" + (f"_{args.tag}" if args.tag else "")
    path = write_result(f"{name}.json", {
        "benchmark": "search_scale --curve", "model": model, "database": len(db), "dim": int(db.shape[1]),
        "distractors": int(extra), "distractor_source_embeddings": int(len(pool)), "queries": len(queries),
        "exact": exact_run, "runs": points,
        "command": "python benchmarks/search_scale.py --curve --threads 1"})
    import json

    result = json.loads(path.read_text())
    plot_curve(points, RESULTS / f"{name}.png")
    (RESULTS / f"{name}.md").write_text(curve_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
