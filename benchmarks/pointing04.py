"""Pointing'04: landmark pose against the labels, and verification accuracy against pan.

    python benchmarks/pointing04.py [--data DIR] [--threads N] [--models M ...] [--no-pose]

(a) Pose: MTCNN on every image; the face is the detection that best overlaps the labelled
face box (the count where the image-centre rule would pick another is reported);
``facespace.pose.estimate_pose`` on its landmarks; mean absolute error of yaw against pan
and of pitch against tilt, overall and per labelled angle, raw and with a yaw/pitch scale
fitted (least squares through 0) on series 1 and reported on series 2.

(b) Verification: ``facespace.evaluation.pointing04.pose_pairs`` (same-person pairs across
the two series at every pose, different-person pairs at matched poses, 5 identity-disjoint
folds of 3 people), embeddings from ``embed_paths`` (cached; face nearest the centre),
``evaluate_pairs`` per |pan| bucket, for frontal (|pan| <= 30) and turned (|pan| >= 45)
pairs, and overall. Writes benchmarks/results/pointing04.{json,md,png}. Nothing here is
chosen on LFW.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from facespace.detection.mtcnn import MTCNN
from facespace.detection.nms import pairwise_overlap
from facespace.evaluation.pointing04 import PAN_BUCKETS, list_images, pose_pairs, read_face_box
from facespace.evaluation.protocol import evaluate_pairs
from facespace.evaluation.report import machine_info
from facespace.face_choice import choose_index
from facespace.imageio import load_image
from facespace.pose import estimate_pose

from _paths import DATA, RESULTS

#: (model, align, flip) runs of part (b).
RUNS = [("facenet-msceleb-128", "align", False), ("facenet-msceleb-128", "margin", False),
        ("facenet-msceleb-128", "margin", True)]
CASIA_RUN = ("facenet-casia-512", "margin", False)


# -- (a) pose -----------------------------------------------------------------------------
def labelled_face(det, box: np.ndarray) -> int | None:
    """Index of the detection overlapping the labelled box most (None: no detection overlaps)."""
    if len(det) == 0:
        return None
    iou = pairwise_overlap(box[None], det.boxes[:, :4])[0]
    return int(np.argmax(iou)) if iou.max() > 0 else None


def detect_poses(images, batch: int = 32) -> dict:
    """Per image: estimated (yaw, pitch, roll) or NaN, and whether the centre rule agrees."""
    detector = MTCNN.pretrained()
    est = np.full((len(images), 3), np.nan)
    centre_differs = 0
    for begin in range(0, len(images), batch):
        chunk = images[begin:begin + batch]
        arrays = [load_image(im.path) for im in chunk]
        for j, (im, arr, det) in enumerate(zip(chunk, arrays, detector.detect(arrays))):
            chosen = labelled_face(det, read_face_box(im.path))
            if chosen is None:
                continue
            centre_differs += int(choose_index(det.boxes, arr.shape, "central") != chosen)
            p = estimate_pose(det.landmarks[chosen])
            est[begin + j] = (p.yaw, p.pitch, p.roll)
    return {"estimates": est, "centre_rule_differs": centre_differs}


def mae_table(estimate: np.ndarray, truth: np.ndarray) -> dict:
    """MAE overall and per labelled value (NaN estimates are left out and counted as missed)."""
    ok = np.isfinite(estimate)
    rows = {}
    for value in np.unique(truth):
        sel = truth == value
        err = np.abs(estimate[sel & ok] - value)
        rows[int(value)] = {"n": int(sel.sum()), "missed": int((sel & ~ok).sum()),
                            "mae": float(err.mean()) if len(err) else None,
                            "mean_estimate": float(estimate[sel & ok].mean()) if len(err) else None}
    return {"mae": float(np.abs(estimate[ok] - truth[ok]).mean()), "n": int(ok.sum()), "per_angle": rows}


def scale_fit(estimate: np.ndarray, truth: np.ndarray) -> float:
    """Least-squares scale through 0 mapping estimates onto labels (finite rows only)."""
    ok = np.isfinite(estimate)
    return float(np.dot(estimate[ok], truth[ok]) / np.dot(estimate[ok], estimate[ok]))


def pose_report(images) -> dict:
    found = detect_poses(images)
    est = found["estimates"]
    pan = np.array([im.pan for im in images], float)
    tilt = np.array([im.tilt for im in images], float)
    series = np.array([im.series for im in images])
    yaw_pose = np.abs(tilt) < 90  # tilt +-90 exists only at pan 0
    s1, s2 = series == 1, series == 2
    k_yaw, k_pitch = scale_fit(est[s1, 0], pan[s1]), scale_fit(est[s1, 1], tilt[s1])
    return {
        "face": "detection best overlapping the labelled box",
        "centre_rule_differs": found["centre_rule_differs"],
        "raw_all": {"yaw_vs_pan": mae_table(est[:, 0], pan), "pitch_vs_tilt": mae_table(est[:, 1], tilt)},
        "raw_yaw_vs_pan_tilt_within_60": mae_table(est[yaw_pose, 0], pan[yaw_pose]),
        "scaled_on_series1": {"yaw_scale": k_yaw, "pitch_scale": k_pitch},
        "scaled_series2": {"yaw_vs_pan": mae_table(k_yaw * est[s2, 0], pan[s2]),
                           "pitch_vs_tilt": mae_table(k_pitch * est[s2, 1], tilt[s2])},
        "roll": {"mean_abs": float(np.nanmean(np.abs(est[:, 2])))},
    }


# -- (b) verification -----------------------------------------------------------------------
def metrics(distances, pairs, selection) -> dict:
    r = evaluate_pairs(distances[selection], pairs.same[selection], pairs.folds[selection])
    return {"n_pairs": r.n_pairs, "n_same": r.n_same, "accuracy": r.accuracy, "accuracy_std": r.accuracy_std,
            "val": r.val, "far": r.far, "auc": r.auc, "eer": r.eer}


def verification_run(model: str, align: str, flip: bool, pairs, pans: np.ndarray) -> dict:
    from facespace import FacePipeline
    from facespace.evaluation.cache import embed_paths
    from facespace.evaluation.scoring import pair_distances

    start = time.perf_counter()
    embeddings = embed_paths(FacePipeline(model=model, align=align, flip=flip), pairs.paths())
    distances = pair_distances(embeddings, pairs)
    size = np.abs(pans)
    return {"model": model, "align": align, "flip": flip, "wall_s": round(time.perf_counter() - start, 1),
            "missed_detections": len(embeddings.missed),
            "overall": metrics(distances, pairs, np.ones(len(pairs), bool)),
            "frontal": metrics(distances, pairs, size <= 30), "turned": metrics(distances, pairs, size >= 45),
            "per_pan": {int(b): metrics(distances, pairs, size == b) for b in PAN_BUCKETS}}


# -- output ---------------------------------------------------------------------------------
def _f(value, scale: float = 1.0, digits: int = 1) -> str:
    return "-" if value is None else f"{scale * value:.{digits}f}"


def pose_markdown(pose: dict) -> list[str]:
    raw, scaled = pose["raw_all"], pose["scaled_series2"]
    k = pose["scaled_on_series1"]
    lines = ["## Pose from landmarks", "",
             f"Raw (all 2,790 images): yaw-vs-pan MAE {raw['yaw_vs_pan']['mae']:.1f} deg, "
             f"pitch-vs-tilt MAE {raw['pitch_vs_tilt']['mae']:.1f} deg. Scale fitted on series 1 "
             f"(yaw x{k['yaw_scale']:.2f}, pitch x{k['pitch_scale']:.2f}), on series 2: yaw MAE "
             f"{scaled['yaw_vs_pan']['mae']:.1f}, pitch MAE {scaled['pitch_vs_tilt']['mae']:.1f} deg. "
             f"The image-centre face rule picks another detection in {pose['centre_rule_differs']} images.", ""]
    for title, key in (("pan", "yaw_vs_pan"), ("tilt", "pitch_vs_tilt")):
        lines += [f"| {title} | images | no face | raw mean est. | raw MAE | series-2 scaled MAE |", "|---|---|---|---|---|---|"]
        for angle, row in raw[key]["per_angle"].items():
            s = scaled[key]["per_angle"].get(angle, {})
            lines.append(f"| {angle:+d} | {row['n']} | {row['missed']} | {_f(row['mean_estimate'])} | "
                         f"{_f(row['mae'])} | {_f(s.get('mae'))} |")
        lines.append("")
    return lines


def verification_markdown(runs: list[dict]) -> list[str]:
    head = "| run | " + " | ".join(f"\\|pan\\|={b}" for b in PAN_BUCKETS) + " | frontal | turned | all |"
    lines = ["## Verification against pan", "", "Accuracy % / VAL % at FAR=1e-3 (5 identity-disjoint folds).", "",
             head, "|---" * (len(PAN_BUCKETS) + 4) + "|"]
    for r in runs:
        cells = [r["per_pan"][b] for b in PAN_BUCKETS] + [r["frontal"], r["turned"], r["overall"]]
        name = f"{r['model']} {r['align']}{' +flip' if r['flip'] else ''}"
        lines.append(f"| {name} | " + " | ".join(f"{_f(c['accuracy'], 100)} / {_f(c['val'], 100, 0)}"
                                                 for c in cells) + " |")
    return lines + [""]


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for r in runs:
        name = f"{r['model']} {r['align']}{' +flip' if r['flip'] else ''}"
        for ax, key in zip(axes, ("accuracy", "val")):
            ax.plot(PAN_BUCKETS, [100 * (r["per_pan"][b][key] or np.nan) for b in PAN_BUCKETS], "o-", label=name)
    for ax, label in zip(axes, ("accuracy %", "VAL % @ FAR=1e-3")):
        ax.set_xlabel("|pan| (degrees)"), ax.set_ylabel(label), ax.set_xticks(PAN_BUCKETS), ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Pointing'04 pose-matched pairs")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--casia", action="store_true", help="also facenet-casia-512 with the margin crop")
    parser.add_argument("--out", type=Path, default=RESULTS / "pointing04")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    images = list_images(args.data / "pointing04")
    start = time.perf_counter()
    pose = pose_report(images)
    pose["wall_s"] = round(time.perf_counter() - start, 1)
    pairs, _, pans = pose_pairs(images)
    runs = [verification_run(m, a, f, pairs, pans) for m, a, f in RUNS + ([CASIA_RUN] if args.casia else [])]
    result = {"data": str(args.data / "pointing04"), "images": len(images),
              "pairs": {"n": len(pairs), "same": int(pairs.same.sum()), "folds": pairs.n_folds,
                        "folds_origin": pairs.folds_origin},
              "pose": pose, "verification": runs, "machine": machine_info()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2, default=float))
    text = ["# Pointing'04: pose and verification against pan", "",
            f"{len(images)} images, {len(pairs)} pairs ({int(pairs.same.sum())} same). "
            "Run: `python benchmarks/pointing04.py`.", ""]
    args.out.with_suffix(".md").write_text("\n".join(text + pose_markdown(pose) + verification_markdown(runs)))
    plot(runs, args.out.with_suffix(".png"))
    print("\n".join(pose_markdown(pose) + verification_markdown(runs)))


if __name__ == "__main__":
    main()
