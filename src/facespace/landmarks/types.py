"""The 68-point landmark scheme (iBUG 300-W / Multi-PIE) and the one interface every
landmark model satisfies, so callers never branch on which model located the points."""
from __future__ import annotations

from typing import Literal, Protocol

import numpy as np

#: Named parts of the 68-point scheme, as index ranges (end exclusive), in the order and
#: with the names face_recognition's ``face_landmarks`` uses.
PARTS: dict[str, tuple[int, int]] = {
    "chin": (0, 17),
    "left_eyebrow": (17, 22),
    "right_eyebrow": (22, 27),
    "nose_bridge": (27, 31),
    "nose_tip": (31, 36),
    "left_eye": (36, 42),
    "right_eye": (42, 48),
    "top_lip": (48, 55),  # face_recognition's top_lip also closes over 64..60; see parts()
    "bottom_lip": (54, 60),
}

LandmarkModel = Literal["dlib68", "mesh"]
LANDMARK_MODELS: tuple[LandmarkModel, ...] = ("dlib68", "mesh")


class Landmarker(Protocol):
    """Locates 68 points on each face given its detection box."""

    name: str

    def locate(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """``image``: RGB uint8 (H, W, 3); ``boxes``: (n, 4) x1, y1, x2, y2 in pixels.
        Returns (n, 68, 2) float32 x, y in image pixels."""
        ...


#: face_recognition closes each lip's outline over the inner mouth points: these follow its parts.
_TOP_LIP_INNER = (64, 63, 62, 61, 60)
_BOTTOM_LIP_INNER = (48, 60, 67, 66, 65, 64)


def parts(points: np.ndarray) -> dict[str, list[list[float]]]:
    """The 68 points (68, 2) grouped into named parts, as face_recognition's ``face_landmarks``."""
    p = np.asarray(points, dtype=np.float64).reshape(68, 2)
    out = {name: p[a:b].tolist() for name, (a, b) in PARTS.items()}
    out["top_lip"] += p[list(_TOP_LIP_INNER)].tolist()
    out["bottom_lip"] += p[list(_BOTTOM_LIP_INNER)].tolist()
    return out
