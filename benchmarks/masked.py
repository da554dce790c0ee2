"""Masked faces: LFW view 2 accuracy and VAL@FAR=1e-3 with no mask, one face masked, both masked.

    python benchmarks/masked.py [--folds N] [--models M ...] [--aligns A ...]

For each pretrained model and crop (upright, the default; align; margin), ``facespace.evaluation.report.run_pairs``
on LFW view 2 ``pairs.txt`` (the 10-fold protocol; a test set: nothing here is chosen on it)
three times: unoccluded, ``mask:first`` (each pair's first image masked) and ``mask:both``.
The mask (``facespace.occlusion.draw_mask``) is drawn from dlib68's 68 points on the detected
face before cropping; detection and the 5 alignment points are those of the unmasked image, so
the numbers measure the embedding, not the detector. ``--folds N`` keeps the first N folds
(say so when quoting). Writes benchmarks/results/masked.{json,md} and masked.png (examples).
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

from facespace import FacePipeline
from facespace.evaluation.pairs import read_lfw_pairs
from facespace.evaluation.report import run_pairs
from facespace.imageio import load_image
from facespace.landmarks.registry import build_landmarker
from facespace.occlusion import Occlusion, draw_mask
from facespace.pretrained.registry import get_config

from _paths import DATA, RESULTS
from _recognition_common import write_result

LFW = DATA / "lfw"
MODELS = ("facenet-msceleb-128", "facenet-casia-512")
ALIGNS = ("upright", "align", "margin")
CONDITIONS = {"none": None, "mask:first": Occlusion("mask", "first"), "mask:both": Occlusion("mask", "both")}


def view2_pairs(folds: int | None):
    pairs = read_lfw_pairs(LFW / "pairs.txt", LFW / "lfw-deepfunneled")
    if folds:
        keep = np.flatnonzero(pairs.folds < folds)
        pairs = pairs.subset(keep)
    return pairs


def one_config(model: str, align: str, pairs) -> dict:
    pipeline = FacePipeline(model=model, align=align)
    rows = {}
    for name in ("none", "mask:both", "mask:first"):  # both first: it embeds every masked image once
        start = time.perf_counter()
        result = run_pairs(pipeline, pairs, occlusion=CONDITIONS[name], progress=True)
        metrics = result.report.to_dict()
        rows[name] = {"accuracy": metrics["accuracy"], "accuracy_std": metrics["accuracy_std"],
                      "val": metrics["val"], "val_std": metrics["val_std"], "far": metrics["far"],
                      "auc": metrics["auc"], "wall_s": round(time.perf_counter() - start, 1)}
        print(model, align, name, rows[name], flush=True)
    return {"model": model, "align": align, "preprocessing_id": pipeline.preprocessing_id, "conditions": rows}


def examples(path, pairs, count: int = 6) -> None:
    """A strip of masked LFW faces (the first images of the first same-person pairs)."""
    landmarker = build_landmarker("dlib68")
    from facespace.detection.mtcnn import MTCNN

    detector = MTCNN.pretrained()
    tiles = []
    for source in list(dict.fromkeys(pairs.first))[:count]:
        image = load_image(source)
        found = detector.detect([image])[0]
        if len(found) == 0:
            continue
        box = found.boxes[int(np.argmax(found.scores))][:4]
        tiles.append(np.hstack([image, draw_mask(image, landmarker.locate(image, box[None])[0])]))
    grid = np.vstack([np.hstack(tiles[i:i + 2]) for i in range(0, len(tiles) - 1, 2)])
    cv2.imwrite(str(path), cv2.cvtColor(cv2.resize(grid, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA),
                                        cv2.COLOR_RGB2BGR))


def markdown(result: dict) -> str:
    lines = ["# Masked faces on LFW view 2", "",
             f"{result['pairs']} pairs in {result['folds']} folds"
             + (f" (the first {result['folds_used']} of 10: the shared CPU allowed no more)" if result["folds_used"] else "")
             + "; the mask from dlib68's 68 points, detection on the unmasked image. Accuracy: the fold protocol "
             "(each fold's threshold from the other folds); VAL at FAR = 1e-3 (with 300 different-person pairs a "
             "fold, FAR moves in steps of 1/300, so VAL here is the rate at zero false accepts: noisy). "
             "Reproduce: `python benchmarks/masked.py"
             + (f" --folds {result['folds_used']}" if result["folds_used"] else "") + "`.", "",
             "| model | crop | condition | accuracy | VAL@FAR=1e-3 | AUC |", "|---|---|---|---|---|---|"]
    for run in result["runs"]:
        for name, row in run["conditions"].items():
            lines.append(f"| {run['model']} | {run['align']} | {name} | {100 * row['accuracy']:.2f}% "
                         f"+- {100 * row['accuracy_std']:.2f} | {100 * row['val']:.1f}% +- {100 * row['val_std']:.1f}"
                         f" | {row['auc']:.4f} |")
    lines += ["", "![masked examples](masked.png)", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--folds", type=int, default=None, help="only the first N folds")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--aligns", nargs="+", default=list(ALIGNS))
    args = parser.parse_args()
    pairs = view2_pairs(args.folds)
    examples(RESULTS / "masked.png", pairs)
    runs = []
    configs = [(m, a) for m in args.models for a in args.aligns]
    configs.sort(key=lambda c: c[1] != get_config(c[0]).align)  # each model's registered crop first
    for model, align in configs:  # the files are rewritten after each run: a long run keeps what it finished
            runs.append(one_config(model, align, pairs))
            result = {"data": "LFW view 2 pairs.txt (test set; report only)", "pairs": len(pairs),
                      "folds": int(pairs.n_folds), "folds_used": args.folds, "runs": runs}
            write_result("masked.json", result)
            (RESULTS / "masked.md").write_text(markdown(result))


if __name__ == "__main__":
    main()
