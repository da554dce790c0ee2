"""Synthetic occlusions drawn on a face from its 68 landmarks: a surgical mask.

The mask's outline runs from the nose bridge (point 29, halfway down the bridge) across the cheeks
(points 1 and 15) and down the jaw line (points 2..14), pushed a little outwards and below the
chin as a worn mask sits. It is filled with a plain light-blue colour shaded like a cylinder
(darker towards the cheeks) with three horizontal pleats along the face's axis; optional ties run
from its corners towards the ears. Edges are anti-aliased, and pixels outside the outline (and
the ties) are never touched. Evaluation uses it through ``--occlude mask[:first|both]``
(:func:`parse_occlusion`): the mask is drawn on the image before the face is cropped, the face box
and 5 alignment points stay those found on the unmasked image, so only the embedding sees it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from .errors import OptionError, check_choice

__all__ = ["Occlusion", "OcclusionKind", "OccludeWhich", "parse_occlusion", "mask_outline", "draw_mask",
           "MASK_VERSION"]

#: What can be drawn on a face.
OcclusionKind = Literal["mask"]
#: Which faces of a pair are occluded: the first image's only, or both.
OccludeWhich = Literal["first", "both"]
#: Bump when the drawing changes: it keys cached embeddings of occluded faces.
MASK_VERSION = 1

MASK_RGB = (160, 200, 228)  # surgical light blue
TIE_RGB = (120, 160, 196)
_OUTWARD = 0.06  # jaw points pushed out from the face centre, as a fraction of the face width
_BELOW_CHIN = 0.07  # the chin point pushed down, as a fraction of the face height


@dataclass(frozen=True)
class Occlusion:
    """An occlusion and which images of a pair it is drawn on."""

    kind: OcclusionKind = "mask"
    which: OccludeWhich = "both"

    def __post_init__(self) -> None:
        check_choice(self.kind, OcclusionKind, "occlusion")
        check_choice(self.which, OccludeWhich, "occluded faces")

    def __str__(self) -> str:
        return f"{self.kind}:{self.which}"


def parse_occlusion(text: str) -> Occlusion:
    """``"mask"`` (both faces), ``"mask:first"`` or ``"mask:both"`` as an :class:`Occlusion`."""
    kind, _, which = str(text).partition(":")
    try:
        return Occlusion(kind, which or "both")  # type: ignore[arg-type]
    except OptionError as exc:
        raise OptionError(f"bad --occlude {text!r} (use mask, mask:first or mask:both): {exc}") from None


def mask_outline(points: np.ndarray) -> np.ndarray:
    """The mask's polygon (k, 2) in pixels from the 68 points (68, 2)."""
    p = np.asarray(points, dtype=np.float64).reshape(68, 2)
    centre = p[[1, 15, 8]].mean(axis=0)
    width = float(np.linalg.norm(p[15] - p[1]))
    height = float(np.linalg.norm(p[8] - p[27]))
    jaw = p[2:15].copy()
    outward = jaw - centre
    outward /= np.maximum(np.linalg.norm(outward, axis=1, keepdims=True), 1e-6)
    jaw += _OUTWARD * width * outward
    down = (p[8] - p[27]) / max(height, 1e-6)
    jaw += _BELOW_CHIN * height * down * np.clip(1 - np.abs(np.arange(2, 15) - 8) / 6, 0, 1)[:, None]
    left_top, right_top = p[1] + _OUTWARD * width * (p[1] - centre) / max(width, 1e-6), \
        p[15] + _OUTWARD * width * (p[15] - centre) / max(width, 1e-6)
    top = [left_top, (left_top + p[29]) / 2 - 0.03 * height * down, p[29],
           (right_top + p[29]) / 2 - 0.03 * height * down, right_top]
    return np.vstack([top, jaw[::-1]])


def _shade(shape: tuple[int, int], points: np.ndarray) -> np.ndarray:
    """The mask's colour per pixel (H, W, 3) float: cylinder shading and three pleats."""
    p = np.asarray(points, dtype=np.float64).reshape(68, 2)
    height, width = shape
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    axis = p[8] - p[29]
    length = max(float(np.linalg.norm(axis)), 1e-6)
    axis /= length
    across = np.array([axis[1], -axis[0]])
    mid = (p[1] + p[15]) / 2
    half = max(float(np.linalg.norm(p[15] - p[1])) / 2, 1e-6)
    u = ((xs - mid[0]) * across[0] + (ys - mid[1]) * across[1]) / half
    v = ((xs - p[29][0]) * axis[0] + (ys - p[29][1]) * axis[1]) / length
    light = 1.0 - 0.30 * np.clip(u, -1.2, 1.2) ** 2
    pleats = 1.0 - 0.07 * (np.cos(2 * np.pi * 3 * np.clip(v, 0, 1)) < -0.6)
    return np.asarray(MASK_RGB, np.float64)[None, None] * (light * pleats)[..., None]


def draw_mask(image: np.ndarray, points: np.ndarray, ties: bool = True) -> np.ndarray:
    """A copy of the RGB ``image`` with a surgical mask drawn over the face whose 68 points are given."""
    image = np.asarray(image)
    points = np.asarray(points, dtype=np.float64).reshape(68, 2)
    if not np.isfinite(points).all():
        raise ValueError("landmarks contain NaN or infinite values")
    height, width = image.shape[:2]
    outline = mask_outline(points)
    alpha = np.zeros((height, width), np.uint8)
    cv2.fillPoly(alpha, [np.round(outline * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    colour = _shade((height, width), points)
    if ties:
        face_width = float(np.linalg.norm(points[15] - points[1]))
        thick = max(int(round(face_width * 0.02)), 1)
        tie_layer = np.zeros((height, width), np.uint8)
        centre = points[[1, 15]].mean(axis=0)
        for corner, ear in ((outline[0], points[0]), (outline[16], points[2]),
                            (outline[4], points[16]), (outline[6], points[14])):
            end = ear + (ear - centre) * 0.15  # towards the ear, just beyond the face's outline
            cv2.line(tie_layer, tuple(int(v) for v in np.round(corner * 16)), tuple(int(v) for v in np.round(end * 16)),
                     255, thick, cv2.LINE_AA, shift=4)
        tie_only = (tie_layer > 0) & (alpha == 0)
        colour[tie_only] = TIE_RGB
        alpha = np.maximum(alpha, np.where(tie_only, tie_layer, 0).astype(np.uint8))
    a = (alpha.astype(np.float64) / 255.0)[..., None]
    out = image[..., :3].astype(np.float64) * (1 - a) + colour * a
    result = image.copy()
    result[..., :3] = np.clip(np.round(out), 0, 255).astype(image.dtype)
    return result
