"""Landmark accuracy: dlib's annotated-faces XML files and the inter-ocular normalised error.

The files (``imglab`` format, e.g. ``photos/dlib_faces/*_with_face_landmarks.xml``) list, per
image, face boxes (``top``, ``left``, ``width``, ``height``) each with 68 ``part`` points.
The error of a face is the mean point-to-point distance over the 68 points divided by the
distance between the outer eye corners (points 36 and 45), the 300-W convention.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["AnnotatedFace", "read_landmark_xml", "interocular_error"]

#: The outer eye corners of the 68-point scheme (the image's left eye, then its right).
OUTER_EYE_CORNERS = (36, 45)


@dataclass(frozen=True)
class AnnotatedFace:
    """One annotated face: its image, box (x1, y1, x2, y2) and 68 points (x, y)."""

    image: Path
    box: np.ndarray
    points: np.ndarray


def read_landmark_xml(path: str | Path) -> list[AnnotatedFace]:
    """Every face with all 68 parts in an imglab XML file (image paths resolved beside it)."""
    path = Path(path)
    faces = []
    for image in ET.parse(path).getroot().iter("image"):
        for box in image.iter("box"):
            parts = {int(p.get("name")): (float(p.get("x")), float(p.get("y"))) for p in box.iter("part")}
            if sorted(parts) != list(range(68)):
                continue
            left, top = float(box.get("left")), float(box.get("top"))
            width, height = float(box.get("width")), float(box.get("height"))
            faces.append(AnnotatedFace(image=path.parent / image.get("file"),
                                       box=np.array([left, top, left + width, top + height]),
                                       points=np.array([parts[i] for i in range(68)])))
    return faces


def interocular_error(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Mean point distance over the 68 points, in units of the truth's outer-eye-corner distance."""
    predicted = np.asarray(predicted, dtype=np.float64).reshape(68, 2)
    truth = np.asarray(truth, dtype=np.float64).reshape(68, 2)
    a, b = OUTER_EYE_CORNERS
    scale = float(np.linalg.norm(truth[a] - truth[b]))
    return float(np.linalg.norm(predicted - truth, axis=1).mean() / max(scale, 1e-6))
