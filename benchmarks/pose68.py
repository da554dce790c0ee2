"""Pose from 68 points against pose from MTCNN's 5, on Pointing'04's labelled pan and tilt.

    python benchmarks/pose68.py [--limit N]

Every Pointing'04 image (development data): MTCNN's detections (from the evaluation cache
``detections/`` store, shared with benchmarks/pointing04.py; computed when absent), the
detection overlapping the labelled face box most, then ``facespace.pose.estimate_pose`` on its
5 landmarks and on dlib68's 68 points located on its box. Mean absolute error of yaw against pan
and of pitch against tilt, overall, per labelled angle and for |pan| <= 30 (near frontal), raw
(no scale fitted). Writes benchmarks/results/pose68.{json,md}.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from facespace import FacePipeline
from facespace.evaluation.cache import _CachedRun, default_cache_root, file_sha1
from facespace.evaluation.pointing04 import list_images, read_face_box
from facespace.imageio import load_image
from facespace.landmarks.registry import build_landmarker
from facespace.pose import estimate_pose

from _paths import DATA, RESULTS
from _recognition_common import write_result
from pointing04 import labelled_face, mae_table


class _Det:  # the cached record in the shape labelled_face() reads
    def __init__(self, record: dict) -> None:
        self.boxes, self.landmarks = record["boxes"], record["landmarks"]

    def __len__(self) -> int:
        return len(self.boxes)


def estimates(images) -> tuple[np.ndarray, np.ndarray, float]:
    """(n, 3) poses from 5 and from 68 points (NaN where no detection overlaps), seconds per 68-point face."""
    run = _CachedRun(FacePipeline(), default_cache_root(), cache=True)
    landmarker = build_landmarker("dlib68")
    five, sixty_eight = np.full((len(images), 3), np.nan), np.full((len(images), 3), np.nan)
    seconds, faces = 0.0, 0
    for begin in range(0, len(images), 64):
        chunk = images[begin:begin + 64]
        arrays = [load_image(im.path) for im in chunk]
        records = run.detections([file_sha1(im.path) for im in chunk], arrays)
        for j, (im, array, record) in enumerate(zip(chunk, arrays, records)):
            chosen = labelled_face(_Det(record), read_face_box(im.path))
            if chosen is None:
                continue
            p5 = estimate_pose(record["landmarks"][chosen])
            t = time.perf_counter()
            points = landmarker.locate(array, record["boxes"][chosen][None, :4])[0]
            seconds += time.perf_counter() - t
            faces += 1
            p68 = estimate_pose(points)
            five[begin + j] = (p5.yaw, p5.pitch, p5.roll)
            sixty_eight[begin + j] = (p68.yaw, p68.pitch, p68.roll)
    run.flush()
    return five, sixty_eight, seconds / max(faces, 1)


def compare(est: np.ndarray, pan: np.ndarray, tilt: np.ndarray) -> dict:
    frontal = np.abs(pan) <= 30
    within = np.abs(tilt) < 90
    return {"yaw_vs_pan": mae_table(est[:, 0], pan), "pitch_vs_tilt": mae_table(est[:, 1], tilt),
            "yaw_vs_pan_tilt_within_60": mae_table(est[within, 0], pan[within]),
            "yaw_vs_pan_frontal": mae_table(est[frontal, 0], pan[frontal]),
            "pitch_vs_tilt_frontal": mae_table(est[frontal & within, 1], tilt[frontal & within])}


def markdown(result: dict) -> str:
    rows = [("yaw vs pan, all", "yaw_vs_pan"), ("yaw vs pan, tilt within +-60", "yaw_vs_pan_tilt_within_60"),
            ("yaw vs pan, pan within +-30", "yaw_vs_pan_frontal"), ("pitch vs tilt, all", "pitch_vs_tilt"),
            ("pitch vs tilt, pan within +-30, tilt within +-60", "pitch_vs_tilt_frontal")]
    lines = ["# Head pose from 68 points vs 5 points (Pointing'04)", "",
             f"{result['images']} images; face: the MTCNN detection best overlapping the labelled box; raw estimates "
             "(no scale fitted). Reproduce: `python benchmarks/pose68.py`.", "",
             "| MAE (degrees) | 5 points (MTCNN) | 68 points (dlib68) |", "|---|---|---|"]
    for label, key in rows:
        a, b = result["five"][key], result["sixty_eight"][key]
        lines.append(f"| {label} | {a['mae']:.1f} (n={a['n']}) | {b['mae']:.1f} (n={b['n']}) |")
    lines += ["", "Per labelled pan (yaw MAE, all tilts):", "", "| pan | 5 points | 68 points |", "|---|---|---|"]
    for pan, row in result["five"]["yaw_vs_pan"]["per_angle"].items():
        other = result["sixty_eight"]["yaw_vs_pan"]["per_angle"][pan]
        if row["mae"] is not None and other["mae"] is not None:
            lines.append(f"| {pan} | {row['mae']:.1f} | {other['mae']:.1f} |")
    lines += ["", f"dlib68 landmarks: {1e3 * result['ms_per_face_68']:.1f} ms per face (shared machine).", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=None, help="only the first N images (quick checks)")
    args = parser.parse_args()
    images = list_images(DATA / "pointing04")[:args.limit]
    five, sixty_eight, per_face = estimates(images)
    pan = np.array([im.pan for im in images], float)
    tilt = np.array([im.tilt for im in images], float)
    result = {"data": "Pointing'04, every image (development data)", "images": len(images),
              "five": compare(five, pan, tilt), "sixty_eight": compare(sixty_eight, pan, tilt),
              "ms_per_face_68": per_face}
    write_result("pose68.json", result)
    (RESULTS / "pose68.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
