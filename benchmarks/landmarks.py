"""68-point landmark accuracy and speed on the 43 annotated faces of photos/dlib_faces.

    python benchmarks/landmarks.py

For each landmark model that can be built here (``facespace.landmarks.registry``: dlib68, and
the face mesh once it exists): MTCNN on each annotated image, each annotated face matched to the
MTCNN detection overlapping its box most (IoU >= 0.3; unmatched faces are counted as missed),
the model's 68 points on that detection, and the normalised mean error against the annotations
(mean point distance / outer-eye-corner distance, ``facespace.evaluation.landmarks``), plus ms
per face of ``locate`` alone.

Caveat, measured here too: the XML files say their points "are from dlib's
shape_predictor_68_face_landmarks.dat"; dlib68 given the XML's own box (as a dlib rectangle,
right = left + width - 1) reproduces them exactly on most faces (``reproduced_exactly``). So these
are dlib68's outputs, not independent hand annotation: dlib68's NME is its error from a different
(MTCNN-mapped) box, and any other model is measured against dlib68. The images are PASCAL VOC
2011 photos, not part of iBUG 300-W, on which dlib68 was trained.
Writes benchmarks/results/landmarks.{json,md}.
"""

from __future__ import annotations

import os
import time
from glob import glob

import numpy as np

from facespace.detection.mtcnn import MTCNN
from facespace.errors import FacespaceError
from facespace.evaluation.landmarks import interocular_error, read_landmark_xml
from facespace.imageio import load_image
from facespace.landmarks.dlib68 import load_model, predict
from facespace.landmarks.registry import build_landmarker
from facespace.landmarks.types import LANDMARK_MODELS

from _paths import DATA, RESULTS
from _recognition_common import write_result
from dlib_box import iou

FACES = DATA / "photos" / "dlib_faces"


def matched_boxes(faces) -> list[np.ndarray | None]:
    """The MTCNN box of each annotated face (None: no detection overlaps it enough)."""
    detector = MTCNN.pretrained()
    found = {}
    out = []
    for face in faces:
        if face.image not in found:
            found[face.image] = detector.detect([load_image(face.image)])[0]
        det = found[face.image]
        overlap = iou(face.box, det.boxes[:, :4].astype(float)) if len(det) else np.zeros(1)
        out.append(det.boxes[int(overlap.argmax()), :4].astype(float) if overlap.max() >= 0.3 else None)
    return out


def measure(name: str, faces, boxes) -> dict:
    landmarker = build_landmarker(name)
    errors, seconds = [], 0.0
    per_file: dict[str, list[float]] = {}
    for face, box in zip(faces, boxes):
        if box is None:
            continue
        image = load_image(face.image)
        start = time.perf_counter()
        points = landmarker.locate(image, box[None])[0]
        seconds += time.perf_counter() - start
        errors.append(interocular_error(points, face.points))
        per_file.setdefault(face.source, []).append(errors[-1])
    return {"faces": len(errors), "missed": sum(b is None for b in boxes),
            "nme_mean": float(np.mean(errors)), "nme_median": float(np.median(errors)),
            "nme_max": float(np.max(errors)), "ms_per_face": 1e3 * seconds / max(len(errors), 1),
            "nme_by_file": {k: float(np.mean(v)) for k, v in per_file.items()}}


def reproduced(faces) -> int:
    """Faces whose annotations dlib68 reproduces exactly from the XML's own box."""
    model = load_model()
    count = 0
    for face in faces:
        box = face.box - np.array([0, 0, 1, 1])  # dlib rectangles are inclusive
        count += int((np.floor(predict(model, load_image(face.image), box[None])[0] + 0.5) == face.points).all())
    return count


def markdown(result: dict) -> str:
    lines = ["# 68-point landmarks on the annotated dlib_faces", "",
             f"{result['faces']} annotated faces in {len(result['files'])} files; boxes: MTCNN. NME: mean point "
             "error / outer-eye-corner distance. Reproduce: `python benchmarks/landmarks.py`.", "",
             "| model | faces | missed | NME mean | NME median | NME max | ms per face |", "|---|---|---|---|---|---|---|"]
    for name, row in result["models"].items():
        if "error" in row:
            lines.append(f"| {name} | - | - | not available: {row['error']} | | | |")
            continue
        lines.append(f"| {name} | {row['faces']} | {row['missed']} | {row['nme_mean']:.4f} | {row['nme_median']:.4f} "
                     f"| {row['nme_max']:.4f} | {row['ms_per_face']:.1f} |")
    lines += ["", f"Caveat: dlib68 reproduces the annotations exactly, from the XML's own boxes, on "
              f"{result['reproduced_exactly']} of {result['faces']} faces: they are dlib68's output (the XML says so), "
              "so dlib68's NME here measures only the effect of starting from an MTCNN box, and other models are "
              "measured against dlib68. None of the images (PASCAL VOC 2011) is in dlib68's training set (iBUG 300-W).",
              f"Load average during the run: {result['loadavg']} (shared machine).", ""]
    return "\n".join(lines)


def main() -> None:
    faces = []
    files = sorted(glob(str(FACES / "*_with_face_landmarks.xml")))
    for path in files:
        for face in read_landmark_xml(path):
            faces.append(face)
            object.__setattr__(face, "source", os.path.basename(path))
    boxes = matched_boxes(faces)
    models = {}
    for name in LANDMARK_MODELS:
        try:
            models[name] = measure(name, faces, boxes)
        except (ImportError, FacespaceError) as exc:
            models[name] = {"error": f"{type(exc).__name__}: {exc}"}
    result = {"data": "photos/dlib_faces/*_with_face_landmarks.xml", "files": [os.path.basename(f) for f in files],
              "faces": len(faces), "models": models, "reproduced_exactly": reproduced(faces),
              "loadavg": [round(v, 2) for v in os.getloadavg()]}
    write_result("landmarks.json", result)
    (RESULTS / "landmarks.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
