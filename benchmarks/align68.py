"""The "align68" crop (68-point similarity alignment) against "align" (5 points) and "margin".

    python benchmarks/align68.py [--models M ...] [--view2-folds N]

Development pairs: LFW view 1 ``pairsDevTest.txt`` (10-fold protocol within it) and the
Pointing'04 pose pairs (``facespace.evaluation.pointing04.pose_pairs``: overall, frontal
|pan| <= 30 and turned |pan| >= 45; as benchmarks/pointing04.py). LFW view 2 (``pairs.txt``, a test
set) only with ``--view2-folds N`` (the first N folds), reported, never used to choose.
Embeddings come from the evaluation cache. Writes benchmarks/results/align68.{json,md}.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from facespace import FacePipeline
from facespace.evaluation.pairs import read_lfw_pairs
from facespace.evaluation.pointing04 import list_images, pose_pairs
from facespace.evaluation.report import run_pairs

from _paths import DATA, RESULTS
from _recognition_common import write_result
from pointing04 import verification_run

LFW = DATA / "lfw"
CROPS = ("align", "align68", "margin")


def lfw_run(model: str, align: str, pairs) -> dict:
    m = run_pairs(FacePipeline(model=model, align=align), pairs, progress=True).report.to_dict()
    return {k: m[k] for k in ("accuracy", "accuracy_std", "val", "val_std", "auc")}


def markdown(result: dict) -> str:
    lines = ["# 68-point alignment (align68) vs align and margin", "",
             "Accuracy (10-fold protocol on DevTest; 5 identity-disjoint folds on Pointing'04). "
             f"Reproduce: `{result.get('command', 'python benchmarks/align68.py')}`.", "",
             "| model | crop | DevTest acc | DevTest VAL@1e-3 | Pointing'04 all | frontal | turned |"
             + (" LFW view 2 acc (report only) |" if result["view2_folds"] else ""),
             "|---|---|---|---|---|---|---|" + ("---|" if result["view2_folds"] else "")]
    for run in result["runs"]:
        d, p = run["devtest"], run.get("pointing04")
        p04 = (f"{100 * p['overall']['accuracy']:.2f}% | {100 * p['frontal']['accuracy']:.2f}% | "
               f"{100 * p['turned']['accuracy']:.2f}%" if p else "not run | | ")
        row = (f"| {run['model']} | {run['align']} | {100 * d['accuracy']:.2f}% +- {100 * d['accuracy_std']:.2f} "
               f"| {100 * d['val']:.1f}% | {p04} |")
        if "view2" in run:
            row += f" {100 * run['view2']['accuracy']:.2f}% +- {100 * run['view2']['accuracy_std']:.2f} |"
        lines.append(row)
    return "\n".join(lines + [""])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["facenet-msceleb-128", "facenet-casia-512"])
    parser.add_argument("--view2-folds", type=int, default=None)
    parser.add_argument("--no-pointing04", action="store_true", help="LFW DevTest only (a short run)")
    args = parser.parse_args()
    devtest = read_lfw_pairs(LFW / "pairsDevTest.txt", LFW / "lfw-deepfunneled").with_folds(10, 0)
    p04, _, pans = pose_pairs(list_images(DATA / "pointing04"))
    view2 = None
    if args.view2_folds:
        view2 = read_lfw_pairs(LFW / "pairs.txt", LFW / "lfw-deepfunneled")
        view2 = view2.subset(np.flatnonzero(view2.folds < args.view2_folds))
    runs = []
    for model in args.models:
        for align in CROPS:
            run = {"model": model, "align": align, "devtest": lfw_run(model, align, devtest)}
            print(model, align, "devtest", run["devtest"], flush=True)
            if not args.no_pointing04:
                run["pointing04"] = verification_run(model, align, False, p04, pans)
            if view2 is not None:
                run["view2"] = lfw_run(model, align, view2)
            runs.append(run)
            result = {"runs": runs, "view2_folds": args.view2_folds,
                      "command": "python benchmarks/align68.py " + " ".join(sys.argv[1:])}
            write_result("align68.json", result)
            (RESULTS / "align68.md").write_text(markdown(result))


if __name__ == "__main__":
    main()
