"""Open-set identification on development data: celeba-299, one crop against another.

    python benchmarks/identify_dev.py [--crops upright align] [--splits 5]

The 299 celeba-299 people are split at random (``--splits`` seeds) into an enrolled half (the
first image of each is the gallery, the rest mated probes) and a non-enrolled half (every image a
non-mated probe); per crop of the default model: rank-1, and DIR (rank-1 and within the
threshold) at FAR 1% and 0.1%, the threshold set on the non-mated probes' best distances
(``calibration.threshold_at_far``). ``upright+align`` averages the two crops' embeddings.
Development data only: what LFW's identification benchmark (``identify_lfw.py``) reports is
checked here before any default moves. Writes benchmarks/results/identify_dev.{json,md}.
"""

from __future__ import annotations

import argparse

import numpy as np

from _paths import DATA, RESULTS
from _recognition_common import write_result

FARS = (0.01, 0.001)


def celeba() -> tuple[list, np.ndarray]:
    people = sorted(p for p in (DATA / "celeba-299" / "faces").iterdir() if p.is_dir())
    pairs = [(f, i) for i, p in enumerate(people) for f in sorted(p.glob("*.jpg"))]
    return [f for f, _ in pairs], np.array([i for _, i in pairs])


def one_split(views: dict, labels: np.ndarray, seed: int) -> dict:
    from facespace.calibration import threshold_at_far

    people = np.unique(labels)
    enrolled = np.isin(labels, np.random.default_rng(seed).permutation(people)[: len(people) // 2])
    first = np.r_[True, labels[1:] != labels[:-1]]
    gallery, mated, nonmated = (np.flatnonzero(m) for m in (first & enrolled, ~first & enrolled, ~enrolled))
    out = {}
    for name, e in views.items():
        d = np.clip(2 - 2 * e[np.r_[mated, nonmated]] @ e[gallery].T, 0, 4)
        best, dist = d.argmin(1), d.min(1)
        right = labels[gallery][best[: len(mated)]] == labels[mated]
        row = {"rank1": float(right.mean())}
        for far in FARS:
            t = threshold_at_far(dist[len(mated):], far)
            row[f"dir@{far:g}"] = float(np.mean(right & (dist[: len(mated)] <= t)))
        out[name] = row
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crops", nargs="+", default=["upright", "align"])
    parser.add_argument("--splits", type=int, default=5)
    args = parser.parse_args()
    from facespace import FacePipeline
    from facespace.evaluation.cache import embed_paths

    paths, labels = celeba()
    views = {c: np.asarray(embed_paths(FacePipeline(align=c), paths, progress=False).embeddings, np.float32)
             for c in args.crops}
    if {"upright", "align"} <= set(views):
        mean = views["upright"] + views["align"]
        views["upright+align"] = mean / np.linalg.norm(mean, axis=1, keepdims=True)
    splits = [one_split(views, labels, seed) for seed in range(args.splits)]
    table = {name: {k: float(np.mean([s[name][k] for s in splits])) for k in splits[0][name]} for name in views}
    result = {"benchmark": "identify_dev", "data": "celeba-299 (development)", "images": len(paths),
              "people": int(len(np.unique(labels))), "splits": args.splits, "crops": table}
    write_result("identify_dev.json", result)
    lines = ["# Open-set identification on celeba-299 (development data)", "",
             f"{len(paths)} images of {result['people']} people; half the people enrolled (first image), "
             f"{args.splits} random splits, means. Command: `python benchmarks/identify_dev.py`.", "",
             "| crop | rank-1 % | DIR@FAR1% | DIR@FAR0.1% |", "|---|---|---|---|"]
    lines += [f"| {n} | {100 * r['rank1']:.2f} | {100 * r['dir@0.01']:.2f} | {100 * r['dir@0.001']:.2f} |"
              for n, r in table.items()]
    (RESULTS / "identify_dev.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
