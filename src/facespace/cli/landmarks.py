"""``facespace landmarks IMG...``: the 68 landmarks of every face, as named parts."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from ..errors import FacespaceError
from ..imageio import describe
from ..landmarks.types import LANDMARK_MODELS, PARTS, parts
from .common import add_pipeline_options, check_output, pipeline_from_args
from .infer import _report_failure, write_image

#: Parts drawn as closed outlines (the rest are open polylines).
_CLOSED = {"left_eye", "right_eye", "top_lip", "bottom_lip"}


def register(sub: argparse._SubParsersAction) -> None:
    cmd = sub.add_parser("landmarks", help="68 facial landmarks (chin, eyebrows, nose, eyes, lips) of every face",
                         description="Detect faces and locate the 68 points of the iBUG 300-W scheme on each, "
                                     "grouped into named parts as face_recognition's face_landmarks.")
    cmd.add_argument("images", nargs="+", metavar="IMG")
    cmd.add_argument("--json", action="store_true", help="print one JSON line per image")
    cmd.add_argument("--draw", metavar="OUT_DIR", help="write copies of the images with the landmarks drawn (PNG)")
    cmd.add_argument("--model", dest="landmark_model", default=None, choices=LANDMARK_MODELS,
                     help="landmark model: dlib68 (default: lowest measured error, README 'Landmarks') or mesh "
                          "(MediaPipe face mesh mapped to 68 points)")
    add_pipeline_options(cmd, detection_only=True)
    cmd.set_defaults(handler=run_landmarks)


def draw_landmarks(image: np.ndarray, points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """A copy of ``image`` with each face's box and its parts drawn as outlines."""
    canvas = image.copy()
    for face, box in zip(points, boxes):
        x1, y1, x2, y2 = (int(round(v)) for v in box[:4])
        thickness, radius = max(1, round((x2 - x1) / 150)), max(1, round((x2 - x1) / 80))  # by the face's size
        cv2.rectangle(canvas, (x1, y1), (x2, y2), (0, 200, 0), thickness)
        for name, (a, b) in PARTS.items():
            line = np.round(face[a:b] * 16).astype(np.int32)
            cv2.polylines(canvas, [line], name in _CLOSED, (255, 60, 40), thickness, cv2.LINE_AA, shift=4)
        for x, y in face:
            cv2.circle(canvas, (int(round(x)), int(round(y))), radius, (255, 255, 0), -1, cv2.LINE_AA)
    return canvas


def run_landmarks(args: argparse.Namespace) -> int:
    if args.draw:
        check_output(args.draw, "--draw", folder=True)
    pipeline = pipeline_from_args(args)
    landmarker = pipeline.landmarker(args.landmark_model)
    failures = 0
    for path in args.images:
        name = describe(path)
        try:
            image = pipeline.load(path)
            faces = [f for f in pipeline.detect_arrays([image])[0] if f.detected]
        except FacespaceError as exc:
            _report_failure(name, str(exc))
            failures += 1
            continue
        boxes = np.stack([np.asarray(f.box, np.float64)[:4] for f in faces]) if faces else np.zeros((0, 4))
        points = landmarker.locate(image, boxes) if faces else np.zeros((0, 68, 2), np.float32)
        if args.json:
            print(json.dumps({"source": name, "model": landmarker.name, "faces": [
                {"box": [round(float(v), 2) for v in f.box[:4]], "score": round(f.score, 4),
                 "parts": {k: [[round(x, 2), round(y, 2)] for x, y in v] for k, v in parts(p).items()}}
                for f, p in zip(faces, points)]}))
        else:
            print(f"{name}: {len(faces)} face(s), {landmarker.name}")
            for i, p in enumerate(points):
                named = parts(p)
                tip = np.mean(named["nose_tip"], axis=0)
                print(f"  [{i}] nose tip=({tip[0]:.1f},{tip[1]:.1f}) chin=({named['chin'][8][0]:.1f},"
                      f"{named['chin'][8][1]:.1f}) 68 points")
        if not faces:
            print(f"facespace: warning: {name}: no face found", file=sys.stderr)
        if args.draw and not write_image(Path(args.draw) / (Path(path).stem + "_landmarks.png"),
                                         draw_landmarks(image, points, boxes)):
            failures += 1
    return 1 if failures else 0
