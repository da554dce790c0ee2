"""Turning a detected face into the fixed-size crop the embedding network expects.

Three ways, the ones the literature compares:

* ``"align"``  -- a 5-point similarity transform (rotation, uniform scale,
  translation) that maps the detected landmarks onto a canonical template;
* ``"margin"`` -- the detector's box widened by a margin and resized, as in
  David Sandberg's facenet (the framing both pretrained models were trained on);
* ``"upright"`` -- the margin crop's framing, turned so the eye line is level: the
  detector's box (which holds turned faces well) with the roll that ``align`` removes;
* ``"centre"`` -- a fixed centre crop with no detection at all (the FaceNet
  paper's 98.87% LFW setting; only meaningful for pre-cropped images like LFW);
* ``"align68"`` -- the similarity transform that maps 68 landmarks (``facespace.landmarks``,
  located on the detected box) onto :func:`template_68`, the mean 68 points of celeba-299 faces
  inside the ``"align"`` crop (``benchmarks/derive_template68.py``): the same framing, fitted
  on 68 points instead of 5.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from importlib import resources
from typing import Literal, Sequence, get_args

import cv2
import numpy as np

AlignMode = Literal["align", "margin", "upright", "centre", "align68"]
ALIGN_MODES: tuple[str, ...] = get_args(AlignMode)

#: Canonical landmark positions (left eye, right eye, nose, mouth left, mouth
#: right) as fractions of the output side: the mean MTCNN landmarks inside Sandberg's
#: 32-px-margin crop at 160 px, mirrored to be symmetric, of 1,000 of the 1,549 LFW
#: images of people who appear in no view-2 pair (``benchmarks/derive_template.py``;
#: ``benchmarks/results/template.json``; no test image chose it). Aligned faces keep the
#: framing the pretrained networks saw in training, only upright and centred.
DEFAULT_TEMPLATE = np.array(
    [
        [0.3337, 0.4153],
        [0.6663, 0.4153],
        [0.5000, 0.5707],
        [0.3528, 0.7073],
        [0.6472, 0.7073],
    ],
    dtype=np.float64,
)


#: The 68-scheme point each point's mirror image is (left <-> right), for symmetric templates.
MIRROR_68: tuple[int, ...] = (
    *range(16, -1, -1), *range(26, 16, -1), 27, 28, 29, 30, 35, 34, 33, 32, 31,
    45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40, 54, 53, 52, 51, 50, 49, 48,
    59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65)


@lru_cache(maxsize=1)
def template_68() -> np.ndarray:
    """The "align68" template: 68 points (x, y) as fractions of the output side (package data)."""
    text = resources.files("facespace").joinpath("data/template68.json").read_text()
    return np.asarray(json.loads(text)["template"], dtype=np.float64)


def template_id(template: np.ndarray | None = None) -> str:
    """A short fingerprint of a template, recorded with embeddings made by aligning to it."""
    values = DEFAULT_TEMPLATE if template is None else np.asarray(template)
    return "t" + hashlib.sha1(np.round(values, 4).tobytes()).hexdigest()[:8]


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (Umeyama 1991) taking ``src`` points to ``dst``.

    Returns the 2x3 affine matrix. Reflections are excluded, so a face is never mirrored.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    covariance = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(covariance)
    d = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1, 1] = -1
    rotation = u @ d @ vt
    variance = (src_c**2).sum() / len(src)
    scale = np.trace(np.diag(s) @ d) / variance if variance > 0 else 1.0
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, None]])


def align_face(
    image: np.ndarray,
    landmarks: np.ndarray,
    size: int = 160,
    template: np.ndarray | None = None,
) -> np.ndarray:
    """Warp ``image`` so the 5 (or 68) ``landmarks`` land on the template, giving a size x size crop."""
    points = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    if template is None:
        template = template_68() if len(points) == 68 else DEFAULT_TEMPLATE
    matrix = similarity_transform(points, np.asarray(template) * size)
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def margin_crop(image: np.ndarray, box: Sequence[float], size: int = 160, margin: int = 32) -> np.ndarray:
    """Crop ``box`` widened by ``margin`` pixels in total per axis (Sandberg's rule), resized to size x size.

    The margin is counted in the source image's pixels, clipped to the image, and the
    (not always square) crop is resized to a square, exactly as the pretrained
    networks' training crops were made.
    """
    height, width = image.shape[:2]
    x1 = int(max(np.floor(box[0]) - margin / 2, 0))
    y1 = int(max(np.floor(box[1]) - margin / 2, 0))
    x2 = int(min(np.floor(box[2]) + margin / 2, width))
    y2 = int(min(np.floor(box[3]) + margin / 2, height))
    if x2 - x1 < 2 or y2 - y1 < 2:
        raise ValueError(f"face box {list(map(float, box))} lies outside the {width}x{height} image")
    crop = image[y1:y2, x1:x2]
    interpolation = cv2.INTER_AREA if (x2 - x1) > size else cv2.INTER_LINEAR
    return cv2.resize(crop, (size, size), interpolation=interpolation)


def centre_crop(image: np.ndarray, size: int = 160, fraction: float = 0.64) -> np.ndarray:
    """The central square covering ``fraction`` of the shorter side, resized to size x size.

    With LFW's 250 px images the default 0.64 takes the central 160 px unscaled.
    """
    height, width = image.shape[:2]
    side = max(int(round(min(height, width) * fraction)), 1)
    top, left = (height - side) // 2, (width - side) // 2
    crop = image[top : top + side, left : left + side]
    if side == size:
        return np.ascontiguousarray(crop)
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(crop, (size, size), interpolation=interpolation)


#: The longer side (pixels) of the MTCNN box of a typical training-sized face: the median over the
#: 1,549 LFW images of people in no view-2 pair (125 px). Sandberg's 32 px margin was made for faces
#: of that size; ``upright`` scales the margin with the face, so a 40 px face in a video frame and a
#: 400 px face in a portrait are framed alike (an absolute margin frames them very differently).
REFERENCE_FACE_SIDE = 125.0


def relative_margin(box: Sequence[float], margin: float, reference: float = REFERENCE_FACE_SIDE) -> float:
    """``margin`` (pixels at a face of ``reference`` pixels) for a face with this ``box``."""
    return margin * max(box[2] - box[0], box[3] - box[1], 1.0) / reference


def upright_crop(image: np.ndarray, box: Sequence[float], landmarks: np.ndarray, size: int = 160,
                 margin: int = 32) -> np.ndarray:
    """The margin crop of ``box`` (its margin scaled with the face, :func:`relative_margin`) after
    turning the image about the box's centre so the eye line (``landmarks`` 0 and 1) is level."""
    points = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    dx, dy = points[1] - points[0]
    roll = float(np.degrees(np.arctan2(dy, dx)))
    margin = relative_margin(box, margin)
    if abs(roll) < 0.5:
        return margin_crop(image, box, size, margin)
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half = 0.75 * max(box[2] - box[0], box[3] - box[1]) + margin  # holds the turned crop
    x0, y0 = int(np.floor(cx - half)), int(np.floor(cy - half))
    side = int(np.ceil(2 * half)) + 1
    height, width = image.shape[:2]
    patch = cv2.copyMakeBorder(image[max(y0, 0):max(min(y0 + side, height), 0), max(x0, 0):max(min(x0 + side, width), 0)],
                               max(-y0, 0), max(y0 + side - height, 0), max(-x0, 0), max(x0 + side - width, 0),
                               cv2.BORDER_CONSTANT, value=(0, 0, 0))
    turn = cv2.getRotationMatrix2D((cx - x0, cy - y0), roll, 1.0)
    level = cv2.warpAffine(patch, turn, (patch.shape[1], patch.shape[0]), flags=cv2.INTER_LINEAR)
    local = [box[0] - x0, box[1] - y0, box[2] - x0, box[3] - y0]
    return margin_crop(level, local, size, margin)
