"""MTCNN recall, false positives and speed on dlib's annotated example photos.

    python benchmarks/detection_recall.py [--data DIR] [--threads N] [--repeats R] [--backend onnx|torch]

Reads ``photos/dlib_faces/{training,testing}.xml`` (imglab format, 43 faces in
9 PASCAL VOC photos), detects with the registry's default detector (on the default
runtime of its networks, or ``--backend``), counts a
face as found when a detection overlaps it with IoU >= 0.5 (boxes compared as
they are: dlib's are tighter than MTCNN's) and every unmatched detection as a
false positive. Times one-by-one and whole-batch detection and writes
everything, with machine details, to ``benchmarks/results/detection.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np

from facespace.detection.mtcnn import MTCNN
from facespace.detection.nms import pairwise_overlap
from facespace.detection.types import DETECTOR_BACKENDS, default_detector_backend
from facespace.evaluation.report import machine_info

from _paths import DATA, RESULTS


def annotations(folder: Path) -> dict[str, np.ndarray]:
    out = {}
    for name in ("training.xml", "testing.xml"):
        for image in ET.parse(folder / name).getroot().iter("image"):
            out[image.get("file")] = np.array(
                [[int(b.get("left")), int(b.get("top")),
                  int(b.get("left")) + int(b.get("width")), int(b.get("top")) + int(b.get("height"))]
                 for b in image.iter("box")], dtype=np.float32).reshape(-1, 4)
    return out


def load_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise SystemExit(f"cannot read {path}")
    return np.ascontiguousarray(image[:, :, ::-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (torch or ONNX Runtime)")
    parser.add_argument("--backend", choices=DETECTOR_BACKENDS, default=default_detector_backend(),
                        help="runtime of MTCNN's networks (default: the library's default)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "detection.json")
    args = parser.parse_args()
    if args.threads:
        os.environ["FACESPACE_NUM_THREADS"] = str(args.threads)  # read when the networks load

    folder = args.data / "photos" / "dlib_faces"
    truth = annotations(folder)
    images = [load_rgb(folder / name) for name in truth]
    detector = MTCNN.pretrained(backend=args.backend)
    detector.detect(images[:1])  # warm-up

    single_s, batch_s = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        results = [detector.detect_one(image) for image in images]
        single_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        batch_results = detector.detect(images)
        batch_s.append(time.perf_counter() - start)

    per_image = {}
    found = total = false_positives = 0
    for (name, gt), det, image in zip(truth.items(), results, images):
        iou = pairwise_overlap(gt, det.boxes)
        hit = int((iou.max(axis=1) >= 0.5).sum()) if len(det) else 0
        fp = int((iou.max(axis=0) < 0.5).sum()) if len(det) else 0
        found, total, false_positives = found + hit, total + len(gt), false_positives + fp
        per_image[name] = {"size_hw": list(image.shape[:2]), "faces": len(gt), "found": hit,
                           "detections": len(det), "false_positives": fp,
                           "mean_matched_iou": float(iou.max(axis=1).mean()) if len(det) else 0.0}
    same = all(len(a) == len(b) and np.allclose(a.boxes, b.boxes, atol=1e-2)
               for a, b in zip(results, batch_results))

    n = len(images)
    report = {
        "dataset": "dlib examples/faces training.xml + testing.xml (PASCAL VOC 2011 photos)",
        "detector": repr(detector),
        "backend": args.backend,
        "images": n,
        "faces": total,
        "found_iou_0.5": found,
        "recall": found / total,
        "false_positives": false_positives,
        "ms_per_image_one_by_one": 1000 * min(single_s) / n,
        "ms_per_image_batch": 1000 * min(batch_s) / n,
        "batch_equals_one_by_one": same,
        "image_sizes_hw": sorted({tuple(im.shape[:2]) for im in images}),
        "per_image": per_image,
        "machine": machine_info(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"recall {found}/{total} = {found / total:.3f}, false positives {false_positives}")
    print(f"{report['ms_per_image_one_by_one']:.0f} ms/image one by one, "
          f"{report['ms_per_image_batch']:.0f} ms/image batched ({n} images, ~500x375), "
          f"{args.backend} backend, {args.threads or 'default'} threads; written to {args.out}")


if __name__ == "__main__":
    main()
