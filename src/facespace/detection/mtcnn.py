"""MTCNN face detection (Zhang et al., "Joint Face Detection and Alignment using
Multi-task Cascaded Convolutional Networks", 2016), written for batches of
images of different sizes.

Pipeline, per image:

1. Image pyramid: scales ``12 / min_face_size * factor**k`` while the shorter
   side stays >= 12 px. P-Net runs on every level; all images that reach a level
   run in as few forward passes as possible (similar sizes are zero-padded into
   one batch; only output cells whose 12x12 window lies inside the image count,
   so padding never changes a result). Each cell scoring >= ``thresholds[0]``
   is a 12x12 window (stride 2) mapped back to the image; NMS 0.5 per level,
   NMS 0.7 across levels, then box regression and squaring.
2. R-Net on 24x24 crops (zero-padded where a box leaves the image): score
   filter, NMS 0.7, regression, squaring.
3. O-Net on 48x48 crops: score filter, landmarks, regression, NMS 0.7 with
   overlap measured against the smaller box ("min").

Crops of all images go through R-Net and O-Net together. Boxes use continuous
pixel coordinates (pixel ``i`` spans ``[i, i + 1)``).

Everything but the three networks runs in NumPy, and the networks are called on NumPy
arrays: ONNX Runtime graphs directly (``backend="onnx"``: no torch in the process), torch
modules through :func:`torch_runner` (``backend="torch"``, any device). No tensor ever
crosses between the stages.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from ..errors import WeightsError, check_choice
from ..runtime.preprocess import normalise_array
from .nms import batched_nms
from .types import DETECT_PIXELS, DetectorBackend, Detections, check_image

__all__ = ["MTCNN"]

_CELL = 12
_STRIDE = 2
# A padded P-Net batch may hold at most this much more area than its images.
_PAD_SLACK = 1.3
# Pixels per P-Net call on the CPU: a larger batch's activations leave the core's L2 cache. One
# core, ONNX Runtime: 31-34 Mpx/s up to 40k pixels a call, 24 Mpx/s for 16 LFW images at once
# (150x150 each); detection of 200 LFW images took 7.1 ms an image against 8.0 with batches of 16.
_CPU_BATCH_PIXELS = 40_000
# Crops per R-Net / O-Net forward pass: small enough that a pass's activations stay in the core's
# L2 cache. Measured on one core (CPU time, 800 R-Net / 160 O-Net crops): R-Net 35 ms in chunks
# of 32 against 87 ms in chunks of 1024, O-Net 38 against 88; 16 and 64 are within 10% of 32.
_CHUNK = 32

#: A network as the stages call it: NCHW float32 input -> its outputs as float32 arrays.
Runner = Callable[[np.ndarray], list[np.ndarray]]


def torch_runner(net: Any, device: str) -> Runner:
    """A torch module (P-, R- or O-Net, BlazeFace) on ``device`` as a :data:`Runner`."""
    import torch

    from ..runtime.threads import apply_thread_default

    apply_thread_default()
    net.to(device).eval()

    def run(x: np.ndarray) -> list[np.ndarray]:
        with torch.inference_mode():
            # channels-last, the layout oneDNN's convolutions prefer (2x faster on large photos)
            outs = net(torch.from_numpy(x).to(device).contiguous(memory_format=torch.channels_last))
        return [o.float().cpu().numpy() for o in outs]
    return run


def _runner(net: Any, device: str) -> Runner:
    """An ONNX Runtime network (it has ``run``) as it is; a torch module through :func:`torch_runner`."""
    run = getattr(net, "run", None)
    if callable(run) and not hasattr(net, "parameters"):
        return run
    return torch_runner(net, device)


def _net_input(pixels: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 -> the networks' contiguous (N, 3, H, W) float32 input, ``(x - 127.5) / 128``."""
    return normalise_array(pixels, "fixed")


class MTCNN:
    """Three-stage cascaded face detector with five landmarks.

    Build it with :meth:`pretrained` (weights from the registry) or from the
    three networks (torch modules, or :class:`~facespace.runtime.onnx_backend.OnnxNetwork`).
    ``min_face_size`` is the smallest face side (pixels) the
    pyramid looks for; ``thresholds`` are the P-, R- and O-Net score cut-offs;
    ``factor`` is the pyramid's scale step.

    ``max_pixels`` is the working size: a larger image is detected on a copy
    downscaled to that many pixels and its boxes and landmarks are mapped back,
    so detection memory (about 1 GB for a 36-megapixel image at full size) stays
    bounded; ``min_face_size`` then applies to the copy. ``None`` detects at full size.
    """

    def __init__(self, pnet: Any, rnet: Any, onet: Any, *, min_face_size: float = 20,
                 thresholds: Sequence[float] = (0.6, 0.7, 0.7), factor: float = 0.709,
                 device: str = "cpu", max_pixels: int | None = DETECT_PIXELS) -> None:
        if not min_face_size > 0:
            raise ValueError(f"min_face_size must be positive, got {min_face_size}")
        if not 0 < factor < 1:
            raise ValueError(f"factor must lie in (0, 1), got {factor}")
        thresholds = tuple(float(t) for t in thresholds)
        if len(thresholds) != 3 or not all(0 <= t <= 1 for t in thresholds):
            raise ValueError(f"thresholds must be three values in [0, 1], got {thresholds}")
        if max_pixels is not None and not max_pixels >= 4 * _CELL * _CELL:
            raise ValueError(f"max_pixels must be at least {4 * _CELL * _CELL}, got {max_pixels}")
        self.max_pixels = max_pixels
        self.min_face_size = float(min_face_size)
        self.thresholds = thresholds
        self.factor = float(factor)
        self.device = str(device)
        self.pnet, self.rnet, self.onet = pnet, rnet, onet
        self._runners = tuple(_runner(net, self.device) for net in (pnet, rnet, onet))

    @classmethod
    def from_files(cls, paths: Mapping[str, str | Path], device: str = "cpu", **params) -> "MTCNN":
        """Load from a mapping with keys ``pnet``, ``rnet``, ``onet`` to state-dict files (torch)."""
        from ..pretrained.loader import load_mtcnn_net

        missing = {"pnet", "rnet", "onet"} - set(paths)
        if missing:
            raise WeightsError(f"MTCNN needs weight files for {sorted(missing)}")
        nets = []
        for key in ("pnet", "rnet", "onet"):
            try:
                nets.append(load_mtcnn_net(key, paths[key], device))
            except (OSError, RuntimeError, EOFError, ValueError) as exc:
                raise WeightsError(f"could not load MTCNN {key} weights from {paths[key]}: {exc}") from exc
        return cls(*nets, device=device, **params)

    @classmethod
    def pretrained(cls, name: str | None = None, device: str = "cpu",
                   backend: DetectorBackend = "torch", **params) -> "MTCNN":
        """The registry's detector ``name`` (default: the registry's default detector).

        ``backend="onnx"`` runs the three networks with ONNX Runtime on the CPU
        (exported into the weight cache on first use; same detections; no torch once cached).
        """
        check_choice(backend, DetectorBackend, "detector backend")
        if backend == "onnx":
            from ..runtime.onnx_backend import load_onnx_mtcnn

            return cls(*load_onnx_mtcnn(name), device=device, **params)
        from ..pretrained.weights import weight_paths

        return cls.from_files(weight_paths(name, kind="detector"), device=device, **params)

    # ------------------------------------------------------------------ API

    def detect_one(self, image: np.ndarray) -> Detections:
        """Faces in one RGB uint8 ``H x W x 3`` image."""
        return self.detect([image])[0]

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """Faces in each of a batch of RGB uint8 ``H x W x 3`` images (sizes may differ)."""
        arrays = [check_image(image, i) for i, image in enumerate(images)]
        if not arrays:
            return []
        small, sizes = self._working_copies(arrays)
        boxes, groups = self._stage_pnet(small)
        boxes, groups = self._stage_rnet(small, boxes, groups)
        return _full_size(self._stage_onet(small, boxes, groups), arrays, sizes)

    def refine(self, images: Sequence[np.ndarray], proposals: Sequence[np.ndarray]) -> list[Detections]:
        """O-Net alone on another detector's (K, 4) face boxes per image: MTCNN's boxes, scores and
        landmarks for the faces O-Net confirms (score >= ``thresholds[2]``), at the cost of one
        48x48 crop a face instead of the pyramid."""
        arrays = [check_image(image, i) for i, image in enumerate(images)]
        if not arrays:
            return []
        if len(proposals) != len(arrays):
            raise ValueError(f"{len(arrays)} images but {len(proposals)} sets of proposals")
        small, sizes = self._working_copies(arrays)
        boxes = []
        for p, a, size in zip(proposals, arrays, sizes):
            p = np.asarray(p, np.float32).reshape(-1, 4)
            boxes.append(p if size is None else p * np.float32([size[0] / a.shape[1], size[1] / a.shape[0]] * 2))
        groups = np.concatenate([np.full(len(p), i, np.int64) for i, p in enumerate(boxes)])
        return _full_size(self._stage_onet(small, _square(np.concatenate(boxes)), groups), arrays, sizes)

    def _working_copies(self, arrays: list[np.ndarray]) -> tuple[list[np.ndarray], list]:
        """Each image at its working size (:meth:`_working_size`: itself, or a downscaled copy) and that size."""
        sizes = [self._working_size(a.shape) for a in arrays]
        return [a if size is None else cv2.resize(a, size, interpolation=cv2.INTER_AREA)
                for a, size in zip(arrays, sizes)], sizes

    def _working_size(self, shape: Sequence[int]) -> tuple[int, int] | None:
        """None, or the (width, height) within ``max_pixels`` that an image is detected at; each side is
        mapped back by its own ratio, so rounding a side never shifts the boxes."""
        height, width = shape[:2]
        if self.max_pixels is None or height * width <= self.max_pixels:
            return None
        scale = math.sqrt(self.max_pixels / (height * width))
        return max(1, math.floor(width * scale)), max(1, math.floor(height * scale))

    def __repr__(self) -> str:
        return (f"MTCNN(min_face_size={self.min_face_size:g}, thresholds={self.thresholds}, "
                f"factor={self.factor:g}, device='{self.device}')")

    # --------------------------------------------------------------- stages

    def scales(self, height: int, width: int) -> list[float]:
        """The pyramid's scales for an image of this size (empty when too small)."""
        m = _CELL / self.min_face_size
        side = min(height, width) * m
        out = []
        while side >= _CELL:
            out.append(m * self.factor ** len(out))
            side *= self.factor
        return out

    def _stage_pnet(self, arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Candidate (K, 4) squared boxes and their (K,) image indices."""
        pyramids = [self.scales(*a.shape[:2]) for a in arrays]
        levels = max((len(p) for p in pyramids), default=0)
        found_boxes, found_groups = [], []
        for level in range(levels):
            members = [i for i, p in enumerate(pyramids) if len(p) > level]
            scaled = {i: _resize(arrays[i], pyramids[i][level]) for i in members}
            parts = [self._pnet_batch([scaled[i] for i in batch], batch, pyramids[batch[0]][level])
                     for batch in _pad_batches(members, {i: s.shape[:2] for i, s in scaled.items()},
                                               _CPU_BATCH_PIXELS if self.device == "cpu" else None)]
            boxes, scores, regs, groups = (np.concatenate(column) for column in zip(*parts))
            if len(boxes) == 0:
                continue
            keep = batched_nms(boxes, scores, groups, 0.5, "union")
            found_boxes.append(np.concatenate([boxes[keep], scores[keep, None], regs[keep]], axis=1))
            found_groups.append(groups[keep])
        if not found_boxes:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
        cand, groups = np.concatenate(found_boxes), np.concatenate(found_groups)
        keep = batched_nms(cand[:, :4], cand[:, 4], groups, 0.7, "union")
        cand, groups = cand[keep], groups[keep]
        return _square(_regress(cand[:, :4], cand[:, 5:9])), groups

    def _pnet_batch(self, images: list[np.ndarray], indices: list[int], scale: float):
        heights = np.array([im.shape[0] for im in images])
        widths = np.array([im.shape[1] for im in images])
        if len(images) == 1:
            batch = images[0][None]  # no padding: no copy
        else:
            batch = np.zeros((len(images), heights.max(), widths.max(), 3), dtype=np.uint8)
            for k, im in enumerate(images):
                batch[k, : im.shape[0], : im.shape[1]] = im
        reg, prob = self._runners[0](_net_input(batch))
        prob = prob[:, 1]
        # Keep only cells whose whole 12x12 window lies inside that image.
        rows = np.arange(prob.shape[1]) * _STRIDE + _CELL
        cols = np.arange(prob.shape[2]) * _STRIDE + _CELL
        valid = (rows[None, :, None] <= heights[:, None, None]) & (cols[None, None, :] <= widths[:, None, None])
        b, r, c = np.nonzero((prob >= self.thresholds[0]) & valid)
        x1 = c.astype(np.float32) * _STRIDE
        y1 = r.astype(np.float32) * _STRIDE
        boxes = np.stack([x1, y1, x1 + _CELL, y1 + _CELL], axis=1) / np.float32(scale)
        return boxes, prob[b, r, c], reg[b, :, r, c], np.asarray(indices, dtype=np.int64)[b]

    def _stage_rnet(self, arrays, boxes, groups):
        if boxes.shape[0] == 0:
            return boxes, groups
        boxes = np.round(boxes)
        regs, probs = self._run(self._runners[1], _crops(arrays, boxes, groups, 24))
        keep = probs[:, 1] >= self.thresholds[1]
        boxes, groups, regs, scores = boxes[keep], groups[keep], regs[keep], probs[keep, 1]
        keep = batched_nms(boxes, scores, groups, 0.7, "union")
        return _square(_regress(boxes[keep], regs[keep])), groups[keep]

    def _stage_onet(self, arrays, boxes, groups) -> list[Detections]:
        results = [Detections.empty() for _ in arrays]
        if boxes.shape[0] == 0:
            return results
        boxes = np.round(boxes)
        regs, marks, probs = self._run(self._runners[2], _crops(arrays, boxes, groups, 48))
        keep = probs[:, 1] >= self.thresholds[2]
        boxes, groups, regs, marks = boxes[keep], groups[keep], regs[keep], marks[keep]
        scores = probs[keep, 1]
        wh = boxes[:, 2:] - boxes[:, :2]
        xs = boxes[:, 0:1] + wh[:, 0:1] * marks[:, :5]
        ys = boxes[:, 1:2] + wh[:, 1:2] * marks[:, 5:]
        landmarks = np.stack([xs, ys], axis=2)
        boxes = _regress(boxes, regs)
        keep = batched_nms(boxes, scores, groups, 0.7, "min")  # descending score order
        boxes, scores, landmarks, groups = boxes[keep], scores[keep], landmarks[keep], groups[keep]
        for i in range(len(arrays)):
            sel = groups == i
            if sel.any():
                results[i] = Detections(boxes[sel], scores[sel], landmarks[sel])
        return results

    @staticmethod
    def _run(run: Runner, crops: np.ndarray) -> tuple[np.ndarray, ...]:
        outs = [run(_net_input(crops[start : start + _CHUNK])) for start in range(0, len(crops), _CHUNK)]
        return tuple(np.concatenate(parts) for parts in zip(*outs))


# ---------------------------------------------------------------- helpers
def _full_size(found: list[Detections], arrays: list[np.ndarray], sizes: list) -> list[Detections]:
    """Detections made at each image's working size mapped back to the image (each side by its ratio)."""
    return [d if size is None else d.scaled(a.shape[1] / size[0], a.shape[0] / size[1])
            for d, a, size in zip(found, arrays, sizes)]



def _resize(image: np.ndarray, scale: float) -> np.ndarray:
    height, width = image.shape[:2]
    size = (math.ceil(width * scale), math.ceil(height * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interp)


def _pad_batches(members: list[int], shapes: dict[int, tuple[int, int]],
                 max_pixels: int | None = None) -> list[list[int]]:
    """Group images so that zero-padding each group to its largest size wastes little, and a
    group's padded batch holds at most ``max_pixels`` pixels (one image may hold more)."""
    order = sorted(members, key=lambda i: shapes[i][0] * shapes[i][1], reverse=True)
    batches: list[list[int]] = []
    for i in order:
        if batches:
            group = batches[-1] + [i]
            h = max(shapes[j][0] for j in group)
            w = max(shapes[j][1] for j in group)
            area = sum(shapes[j][0] * shapes[j][1] for j in group)
            if h * w * len(group) <= min(_PAD_SLACK * area, max_pixels or math.inf):
                batches[-1] = group
                continue
        batches.append([i])
    return batches


def _regress(boxes: np.ndarray, regs: np.ndarray) -> np.ndarray:
    """Shift box edges by offsets given as fractions of the box's width/height."""
    wh = np.tile(boxes[:, 2:] - boxes[:, :2], (1, 2))
    return boxes + regs * wh


def _square(boxes: np.ndarray) -> np.ndarray:
    """Grow each box to a square of its longer side, about the same centre."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]).max(axis=1, keepdims=True) / 2
    return np.concatenate([centre - half, centre + half], axis=1)


def _crops(arrays: list[np.ndarray], boxes: np.ndarray, groups: np.ndarray, size: int) -> np.ndarray:
    """(N, size, size, 3) uint8 crops of integer boxes; outside the image reads as 0."""
    out = np.zeros((len(boxes), size, size, 3), dtype=np.uint8)
    coords = np.round(boxes).astype(np.int64)
    for k, (g, (x1, y1, x2, y2)) in enumerate(zip(groups.tolist(), coords.tolist())):
        image = arrays[g]
        height, width = image.shape[:2]
        x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
        if sx1 >= sx2 or sy1 >= sy2:
            continue  # entirely outside the image: an all-zero crop
        patch = image[sy1:sy2, sx1:sx2]
        if (sx1, sy1, sx2, sy2) != (x1, y1, x2, y2):
            padded = np.zeros((y2 - y1, x2 - x1, 3), dtype=np.uint8)
            padded[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = patch
            patch = padded
        interp = cv2.INTER_AREA if patch.shape[0] > size else cv2.INTER_LINEAR
        out[k] = cv2.resize(patch, (size, size), interpolation=interp)
    return out
