"""MTCNN against BlazeFace (short and full range), side by side on one machine in one run.

    python benchmarks/detectors.py [--parts recall,speed,throughput,lfw,lfw-test] [--lfw-pairs FILE]

* ``recall``: faces found (IoU >= 0.5 with dlib's 43 annotated boxes, ``detection_recall.py``'s
  rule) and false positives (unmatched detections; ``dogs.jpg`` has no face) on
  ``photos/dlib_faces``.
* ``speed``: ms per image at 640x480 and 1280x720: every third photo under ``photos/``
  (``--photo-step``) centre-cropped to the aspect ratio and resized, detected one at a time,
  the detectors interleaved image by image; the median of 3 runs per image, averaged.
* ``throughput``: end-to-end images/s (load, detect, align, embed with the default model) on
  500 LFW images (the first image of each of the first 500 people, sorted).
* ``lfw``: verification accuracy with each detector through ``facespace evaluate pairs``
  (embeddings cached per detector) on development pairs: LFW view 1 ``pairsDevTest.txt``
  (1000 pairs, 10 folds made by the tool) unless ``--lfw-pairs`` names another file.
* ``lfw-test``: the same on LFW view 2 ``pairs.txt`` (6000 pairs, the official 10 folds): the
  test set, reported beside the development figure; no detector or setting is chosen on it.
  Both embed one crop for every detector (``--align``, default ``align``).

Writes ``benchmarks/results/detectors.{json,md}`` with the machine and load averages (the
machine is shared: compare the detectors as ratios within one run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from facespace.detection.nms import pairwise_overlap
from facespace.detection.types import DETECTOR_NAMES
from facespace.evaluation.report import machine_info
from facespace.pipeline import DetectorSettings, FacePipeline

from _paths import DATA, RESULTS
from detection_recall import annotations, load_rgb

SIZES = {"640x480": (640, 480), "1280x720": (1280, 720)}


def build(name: str):
    return DetectorSettings(name=name).build("cpu")


def recall(name: str) -> dict:
    folder = DATA / "photos" / "dlib_faces"
    truth = annotations(folder)
    truth["dogs.jpg"] = np.zeros((0, 4), np.float32)
    detector = build(name)
    found = total = false_pos = 0
    per_image = {}
    for file, boxes in truth.items():
        det = detector.detect([load_rgb(folder / file)])[0]
        hit = fp = 0
        if len(det) and len(boxes):
            iou = pairwise_overlap(boxes, det.boxes)
            hit, fp = int((iou.max(axis=1) >= 0.5).sum()), int((iou.max(axis=0) < 0.5).sum())
        else:
            fp = len(det)
        found, total, false_pos = found + hit, total + len(boxes), false_pos + fp
        per_image[file] = {"faces": len(boxes), "found": hit, "false_positives": fp}
    return {"faces": total, "found": found, "recall": found / total, "false_positives": false_pos,
            "per_image": per_image}


def photos() -> list[Path]:
    found = sorted(p for p in (DATA / "photos").rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    return [p for p in found if "dlib_faces" not in p.parts or p.name != "dogs.jpg"]


def fit(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Centre-crop to the aspect ratio of ``size`` (w, h), then resize to it."""
    h, w = image.shape[:2]
    target = size[0] / size[1]
    if w / h > target:
        cw = round(h * target)
        image = image[:, (w - cw) // 2 : (w - cw) // 2 + cw]
    else:
        ch = round(w / target)
        image = image[(h - ch) // 2 : (h - ch) // 2 + ch]
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def speed(names: list[str], images: dict[str, list[np.ndarray]]) -> dict[str, dict]:
    """ms per image of each detector, interleaved image by image so that the shared machine's
    load falls on all detectors alike: the median of 3 runs per image, averaged over images."""
    detectors = {name: build(name) for name in names}
    for detector in detectors.values():
        detector.detect(images["640x480"][:1])  # warm-up
    out: dict[str, dict] = {name: {} for name in names}
    for label, batch in images.items():
        times: dict[str, list[float]] = {name: [] for name in names}
        for image in batch:
            for name, detector in detectors.items():
                runs = []
                for _ in range(3):
                    start = time.perf_counter()
                    detector.detect([image])
                    runs.append(time.perf_counter() - start)
                times[name].append(float(np.median(runs)))
        for name in names:
            out[name][f"ms_per_image_{label}"] = round(1000 * float(np.mean(times[name])), 2)
    return out


def throughput(name: str, n: int = 500) -> dict:
    people = sorted((DATA / "lfw" / "lfw-deepfunneled").iterdir())[:n]
    paths = [sorted(p.glob("*.jpg"))[0] for p in people]
    pipeline = FacePipeline(detector=DetectorSettings(name=name))
    pipeline.embed_images(paths[:8])  # warm-up: loads both networks
    start = time.perf_counter()
    results = pipeline.embed_images(paths)
    wall = time.perf_counter() - start
    return {"images": len(paths), "images_per_s": round(len(paths) / wall, 2),
            "images_without_face": sum(1 for r in results if not r.faces)}


def lfw(name: str, pairs: Path, align: str) -> dict:
    cmd = [sys.executable, "-m", "facespace.cli.main", "evaluate", "pairs", "--pairs", str(pairs),
           "--root", str(DATA / "lfw" / "lfw-deepfunneled"), "--detector", name, "--align", align,
           "--quiet", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.strip()[-500:]}")
    report = json.loads(proc.stdout)
    keep = ("accuracy", "accuracy_std", "val", "val_std", "far", "auc", "eer")
    return {"pairs": report["pairs"], "missed_detections": report["missed_detections"],
            "pairs_with_missed_detection": report["pairs_with_missed_detection"],
            **{k: v for k, v in report["metrics"].items() if k in keep}}


def lfw_cells(lf: dict) -> str:
    """Accuracy, VAL and missed detections of one ``lfw`` part, as three table cells."""
    acc = f"{100 * lf['accuracy']:.2f}%" if "accuracy" in lf else "-"
    val = f"{100 * lf['val']:.2f}%" if "val" in lf else "-"
    return f"{acc} | {val} | {lf.get('missed_detections', '-')}"


def markdown(result: dict) -> str:
    rows = result["detectors"]
    lines = ["# Detectors: MTCNN and BlazeFace", "",
             f"Machine: {result['machine']['cpu']}, {result['machine'].get('cpus_usable')} usable cores, "
             f"shared with other sessions (load average {result['load_before']} before the first run, "
             f"{result['load_after']} after the last"
             + "".join(f"; before the {k[len('load_before_'):]} rerun {v}" for k, v in result.items()
                       if k.startswith("load_before_"))
             + "): compare as ratios within one run.", "",
             "| detector | recall (43 faces) | false positives | ms/img 640x480 | ms/img 1280x720 | "
             "end-to-end img/s (500 LFW) | LFW dev accuracy | dev VAL@FAR | dev missed | "
             "LFW view 2 (test) accuracy | test VAL@FAR | test missed |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        rc, sp, tp = (r.get(k, {}) for k in ("recall", "speed", "throughput"))
        lines.append(f"| {name} | {rc.get('found', '-')}/{rc.get('faces', '-')} | {rc.get('false_positives', '-')} | "
                     f"{sp.get('ms_per_image_640x480', '-')} | {sp.get('ms_per_image_1280x720', '-')} | "
                     f"{tp.get('images_per_s', '-')} | {lfw_cells(r.get('lfw', {}))} | "
                     f"{lfw_cells(r.get('lfw-test', {}))} |")
    lines += ["", f"LFW development pairs: {result.get('lfw_pairs')}; test: LFW view 2 pairs.txt (reported, "
              f"chose nothing); crop for every detector: `{result.get('lfw_align', 'align')}`", "",
              f"Command: `{result['command']}`", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="recall,speed,throughput,lfw,lfw-test")
    parser.add_argument("--detectors", default=",".join(DETECTOR_NAMES))
    parser.add_argument("--lfw-pairs", type=Path, default=DATA / "lfw" / "pairsDevTest.txt")
    parser.add_argument("--align", default="align", help="the crop both LFW parts embed (one for every detector)")
    parser.add_argument("--out", type=Path, default=RESULTS / "detectors")
    parser.add_argument("--photo-step", type=int, default=3, help="time every N-th photo (all: 1)")
    parser.add_argument("--merge", action="store_true", help="update these parts in an existing OUT.json")
    args = parser.parse_args()
    parts = args.parts.split(",")
    result = {"command": "python benchmarks/detectors.py " + " ".join(sys.argv[1:]),
              "load_before": [round(x, 2) for x in os.getloadavg()], "lfw_pairs": args.lfw_pairs.name, "lfw_align": args.align,
              "detectors": {}}
    names = args.detectors.split(",")
    if args.merge and args.out.with_suffix(".json").exists():  # keep the other parts of an earlier run
        earlier = json.loads(args.out.with_suffix(".json").read_text())
        result = {**earlier, "command": earlier["command"] + " ; " + result["command"],
                  "lfw_pairs": Path(earlier.get("lfw_pairs", args.lfw_pairs.name)).name, "lfw_align": args.align,
                  "load_before": earlier["load_before"], "load_before_" + "+".join(parts): result["load_before"]}
    if "speed" in parts:
        loaded = [load_rgb(p) for p in photos()[:: args.photo_step]]
        images = {label: [fit(im, size) for im in loaded] for label, size in SIZES.items()}
        result["speed_images"] = len(loaded)
        for name, row in speed(names, images).items():
            result["detectors"].setdefault(name, {})["speed"] = row
            print(f"{name}: speed: {json.dumps(row)}", flush=True)
    for name in names:
        row = result["detectors"].setdefault(name, {})
        for part in (p for p in parts if p != "speed"):
            print(f"{name}: {part} ...", flush=True)
            row[part] = {"recall": lambda: recall(name), "throughput": lambda: throughput(name),
                         "lfw": lambda: lfw(name, args.lfw_pairs, args.align),
                         "lfw-test": lambda: lfw(name, DATA / "lfw" / "pairs.txt", args.align)}[part]()
            print(f"{name}: {part}: {json.dumps({k: v for k, v in row[part].items() if k != 'per_image'})}",
                  flush=True)
    result["load_after"] = [round(x, 2) for x in os.getloadavg()]
    result["machine"] = machine_info()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(f"wrote {args.out}.json and .md")


if __name__ == "__main__":
    main()
