"""BlazeFace face detection (MediaPipe's short- and full-range models), decoded as MediaPipe does.

Per image: letterbox into the model's square input (black borders; MediaPipe's
``keep_aspect_ratio``), one forward pass, decode every anchor (SSD anchors of unit size at cell
centres: ``SsdAnchorsCalculator`` with ``fixed_anchor_size``), keep scores >= ``min_score``
(logits clipped to +-100, then the sigmoid), and merge overlapping boxes with MediaPipe's
*weighted* non-maximum suppression (IoU > 0.3: the cluster's score-weighted mean box and
keypoints, the best score). Whole images are downscaled to the input, as MediaPipe does, so
faces smaller than about a tenth (short range) or a twentieth (full range) of the longer image
side are not found; use the full-range model or MTCNN for small faces.

BlazeFace's six keypoints are the eyes, the nose tip, the mouth *centre* and the two ear
tragions. The five alignment points need mouth corners: they are placed at a fixed offset from
the mouth centre in the face's own frame (eye axis, inter-ocular distance), fitted on
development images against MTCNN's corners (``benchmarks/fit_blazeface_mouth.py``; CelebA
dev photos, never LFW).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from ..errors import check_choice
from .mtcnn import MTCNN, Runner, torch_runner
from .types import DetectorBackend, Detections, check_image, default_detector_backend

__all__ = ["BlazeFace", "BlazeFaceRange", "BLAZEFACE_RANGES", "RefinedBlazeFace", "mouth_corners", "proposals"]

#: Which BlazeFace: "short" (128 px, faces within ~2 m) or "full" (192 px, smaller faces).
BlazeFaceRange = Literal["short", "full"]
BLAZEFACE_RANGES: tuple[BlazeFaceRange, ...] = ("short", "full")


@dataclass(frozen=True)
class _Variant:
    model: str
    size: int
    strides: tuple[int, ...]
    anchors_per_cell: tuple[int, ...]
    #: Mouth corners from the mouth centre, in units of the eye vector e (left to right eye) and
    #: of n (e turned to point down the face): corner = centre -+ along * e + down * n. Fitted
    #: against MTCNN's corners on CelebA-299 by benchmarks/fit_blazeface_mouth.py (results/blazeface_mouth.json).
    mouth: tuple[float, float]


_VARIANTS = {
    "short": _Variant("blazeface", 128, (8, 16), (2, 6), (0.444, -0.080)),
    "full": _Variant("blazeface-full", 192, (4,), (1,), (0.440, -0.071)),
}
_SCORE_CLIP = 100.0
_NMS_IOU = 0.3
#: BlazeFace's box -> the box MTCNN's O-Net is given: its centre moved by these fractions of the box
#: side (x, y) and its side scaled, so it matches MTCNN's own final box; medians over 150 celeba-299
#: development photos (``python benchmarks/fast_detector.py --fit-proposals``).
PROPOSAL_SHIFT = (-0.010, -0.108)
PROPOSAL_SCALE = 1.039


def anchors(variant: _Variant) -> np.ndarray:
    """(A, 2) anchor centres in [0, 1] (x, y), in the network's output order."""
    out = []
    for stride, per_cell in zip(variant.strides, variant.anchors_per_cell):
        cells = variant.size // stride
        ys, xs = np.meshgrid((np.arange(cells) + 0.5) / cells, (np.arange(cells) + 0.5) / cells, indexing="ij")
        centres = np.stack([xs.ravel(), ys.ravel()], 1)
        out.append(np.repeat(centres, per_cell, axis=0))
    return np.concatenate(out).astype(np.float32)


def mouth_corners(eyes: np.ndarray, mouth: np.ndarray, offsets: tuple[float, float]) -> np.ndarray:
    """(N, 2, 2) mouth corners (image-left first) from (N, 2, 2) eyes (image-left first) and (N, 2)
    mouth centres, ``offsets`` = (along, down) as in :attr:`_Variant.mouth`."""
    along, down = offsets
    e = eyes[:, 1] - eyes[:, 0]
    n = np.stack([-e[:, 1], e[:, 0]], 1)  # e turned 90 degrees: points down the face in image coords
    return np.stack([mouth - along * e + down * n, mouth + along * e + down * n], 1)


class BlazeFace:
    """MediaPipe's BlazeFace as a :class:`~facespace.detection.types.Detector`.

    ``range``: "short" or "full" (see :data:`BlazeFaceRange`); ``min_score``: the face
    probability a detection needs (MediaPipe's default 0.5). ``backend``: the network's runtime,
    "onnx" (ONNX Runtime, exported into the weight cache on first use; no torch once cached) or
    "torch"; None: :func:`~facespace.detection.types.default_detector_backend` (ONNX Runtime on the CPU).
    """

    def __init__(self, range: BlazeFaceRange = "short", min_score: float = 0.5,
                 device: str = "cpu", backend: DetectorBackend | None = None) -> None:
        self.range: BlazeFaceRange = check_choice(range, BlazeFaceRange, "BlazeFace range")
        if not 0 <= min_score <= 1:
            raise ValueError(f"min_score must lie in [0, 1], got {min_score}")
        self.min_score = float(min_score)
        self.variant = _VARIANTS[self.range]
        self.device = str(device)
        self.backend: DetectorBackend = check_choice(backend or default_detector_backend(self.device),
                                                     DetectorBackend, "detector backend")
        self._run: Runner = self._load()
        self.anchors = anchors(self.variant)

    def _load(self) -> Runner:
        if self.backend == "onnx":
            from ..runtime.onnx_backend import load_onnx_detector

            return load_onnx_detector(self.variant.model, self.variant.size).run
        from ..pretrained.loader import load_network

        return torch_runner(load_network(self.variant.model, "detector", self.device), self.device)

    def __repr__(self) -> str:
        return (f"BlazeFace(range={self.range!r}, min_score={self.min_score:g}, device='{self.device}', "
                f"backend={self.backend!r})")

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """Faces in each of a batch of RGB uint8 ``H x W x 3`` images (sizes may differ)."""
        arrays = [check_image(image, i) for i, image in enumerate(images)]
        if not arrays:
            return []
        batch, frames = zip(*(self._letterbox(a) for a in arrays))
        x = np.ascontiguousarray((np.stack(batch).astype(np.float32) / np.float32(127.5) - 1).transpose(0, 3, 1, 2))
        regressors, logits = self._run(x)
        logits = logits[..., 0]
        return [self._decode(r, s, frame) for r, s, frame in zip(regressors, logits, frames)]

    def _letterbox(self, image: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float]]:
        """The image scaled to fit the square input, centred on black; and (scale, x0, y0) to map back."""
        size = self.variant.size
        height, width = image.shape[:2]
        scale = size / max(height, width)
        w, h = max(1, round(width * scale)), max(1, round(height * scale))
        canvas = np.zeros((size, size, 3), np.uint8)
        x0, y0 = (size - w) // 2, (size - h) // 2
        canvas[y0 : y0 + h, x0 : x0 + w] = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        return canvas, (w / width, x0, y0)

    def _decode(self, raw: np.ndarray, logits: np.ndarray, frame: tuple[float, float, float]) -> Detections:
        """Boxes and keypoints of the anchors that pass ``min_score``, merged, in image pixels."""
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -_SCORE_CLIP, _SCORE_CLIP)))
        keep = np.flatnonzero(scores >= self.min_score)
        if keep.size == 0:
            return Detections.empty()
        size = self.variant.size
        centres = self.anchors[keep] * size  # in input pixels
        raw = raw[keep]
        cx, cy = centres[:, 0] + raw[:, 0], centres[:, 1] + raw[:, 1]
        half = raw[:, 2:4] / 2
        boxes = np.stack([cx - half[:, 0], cy - half[:, 1], cx + half[:, 0], cy + half[:, 1]], 1)
        points = raw[:, 4:16].reshape(-1, 6, 2) + centres[:, None, :]
        boxes, points, scores = _weighted_nms(boxes, points, scores[keep], _NMS_IOU)
        scale, x0, y0 = frame
        offset = np.array([x0, y0], np.float32)
        boxes = (boxes.reshape(-1, 2, 2) - offset).reshape(-1, 4) / scale
        points = (points - offset) / scale
        return Detections(boxes, scores, five_points(points, self.variant.mouth))


def proposals(boxes: np.ndarray, shift: tuple[float, float] = PROPOSAL_SHIFT,
              scale: float = PROPOSAL_SCALE) -> np.ndarray:
    """(K, 4) square boxes for O-Net from BlazeFace's (K, 4) boxes (see :data:`PROPOSAL_SHIFT`)."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    side = (boxes[:, 2:] - boxes[:, :2]).mean(axis=1, keepdims=True)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2 + np.float32(shift) * side
    half = side * np.float32(scale) / 2
    return np.concatenate([centre - half, centre + half], axis=1)


class RefinedBlazeFace:
    """BlazeFace (short range) finds the faces; MTCNN's O-Net, given one 48x48 crop a face, confirms
    each and measures its box and five landmarks again, so the crops are MTCNN's at about a tenth of
    its cost. An image where O-Net confirms none of BlazeFace's faces keeps BlazeFace's."""

    def __init__(self, blazeface: BlazeFace, mtcnn: MTCNN) -> None:
        self.blazeface, self.mtcnn = blazeface, mtcnn

    def __repr__(self) -> str:
        return f"RefinedBlazeFace({self.blazeface!r}, {self.mtcnn!r})"

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """Faces in each of a batch of RGB uint8 ``H x W x 3`` images (sizes may differ)."""
        found = self.blazeface.detect(images)
        refined = self.mtcnn.refine(images, [proposals(d.boxes) for d in found])
        return [r if len(r) else d for r, d in zip(refined, found)]


def five_points(points: np.ndarray, offsets: tuple[float, float]) -> np.ndarray:
    """(N, 5, 2) alignment points (left eye, right eye, nose, mouth left, mouth right, as seen)
    from BlazeFace's (N, 6, 2) keypoints (eye, eye, nose tip, mouth centre, tragion, tragion)."""
    eyes = points[:, :2]
    swap = eyes[:, 0, 0] > eyes[:, 1, 0]
    eyes = np.where(swap[:, None, None], eyes[:, ::-1], eyes)
    return np.concatenate([eyes, points[:, 2:3], mouth_corners(eyes, points[:, 3], offsets)], 1).astype(np.float32)


def _area(boxes: np.ndarray) -> np.ndarray:
    return np.prod(np.clip(boxes[..., 2:] - boxes[..., :2], 0, None), axis=-1)


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of one box with each of ``others`` (x1, y1, x2, y2)."""
    inter = _area(np.concatenate([np.maximum(box[:2], others[:, :2]), np.minimum(box[2:], others[:, 2:])], 1))
    return inter / np.maximum(_area(box) + _area(others) - inter, 1e-12)


def _weighted_nms(boxes: np.ndarray, points: np.ndarray, scores: np.ndarray,
                  threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MediaPipe's weighted NMS: the best remaining box and all boxes overlapping it by IoU >
    ``threshold`` become one detection, their score-weighted mean, with the best score."""
    order = np.argsort(-scores, kind="stable")
    out_boxes, out_points, out_scores = [], [], []
    while order.size:
        cluster = order[_iou(boxes[order[0]], boxes[order]) > threshold]
        cluster = cluster if cluster.size else order[:1]
        weights = scores[cluster] / scores[cluster].sum()
        out_boxes.append(weights @ boxes[cluster])
        out_points.append(np.tensordot(weights, points[cluster], 1))
        out_scores.append(scores[order[0]])
        order = order[~np.isin(order, cluster)]
    return (np.array(out_boxes, np.float32), np.array(out_points, np.float32),
            np.array(out_scores, np.float32))
