"""dlib's 68-point shape predictor (Kazemi & Sullivan 2014) run in numpy, without dlib.

The model (``pretrained.toml``: ``dlib68``) is a cascade of 15 levels of 500 depth-4 regression
trees. Each level reads 500 grey pixels at points fixed relative to landmarks of the current
shape (each hangs from its nearest landmark of the mean shape, ``anchor_idx``, offset by
``deltas`` turned and scaled by the similarity transform from the mean shape to the current
one), compares pairs of them in each tree and adds the reached leaves' shape increments. Shapes
live in the unit square of the face box, mapped to pixels by ``x * (right - left) + left``
(dlib's ``unnormalizing_tform``); a pixel outside the image reads 0.

:func:`predict` follows dlib's arithmetic step for step (float32 shapes, increments added in
tree order, pixel points rounded half up, grey = the channels' integer mean), so its points
rounded to whole pixels are dlib's (``tests/test_landmarks.py`` against a run of dlib itself).

The trees were trained on boxes from dlib's HOG face detector, which frames a face tighter and
lower than MTCNN; :class:`Dlib68` maps an MTCNN box onto such a box with the linear correction
in the registry (``box_from_mtcnn``, fitted by ``benchmarks/dlib_box.py`` on LFW view 1
pairsDevTrain images) before predicting.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..alignment import similarity_transform
from ..errors import WeightsError
from ..pretrained.dlib_format import ShapePredictorModel, read_shape_predictor
from ..pretrained.registry import get_config
from ..pretrained.weights import weight_paths

__all__ = ["Dlib68", "predict", "to_grey", "mtcnn_to_dlib_box", "load_model"]

MODEL_NAME = "dlib68"


@lru_cache(maxsize=1)
def load_model(name: str = MODEL_NAME) -> ShapePredictorModel:
    """The registered predictor's trees, fetched and checked on first use, read once per process."""
    return read_shape_predictor(weight_paths(name, kind="landmarker")["weights"])


def to_grey(image: np.ndarray) -> np.ndarray:
    """dlib's pixel intensity: an RGB pixel's integer channel mean (grey input is kept)."""
    image = np.asarray(image)
    if image.ndim == 2:
        return image.astype(np.float32)
    return (image[..., :3].astype(np.uint16).sum(axis=2) // 3).astype(np.float32)


def _pixels(grey: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Grey values at ``points`` (x, y; rounded half up as dlib's ``point`` does), 0 outside."""
    xy = np.floor(points + 0.5).astype(np.int64)
    height, width = grey.shape
    inside = (xy[:, 0] >= 0) & (xy[:, 0] < width) & (xy[:, 1] >= 0) & (xy[:, 1] < height)
    out = np.zeros(len(xy), np.float32)
    out[inside] = grey[xy[inside, 1], xy[inside, 0]]
    return out


def _predict_one(model: ShapePredictorModel, grey: np.ndarray, box: np.ndarray) -> np.ndarray:
    left, top, right, bottom = (float(v) for v in box)
    scale = np.array([right - left, bottom - top])
    offset = np.array([left, top])
    shape = model.initial_shape.copy()
    trees = np.arange(model.split_idx.shape[1])
    depth = int(np.log2(model.split_idx.shape[2] + 1))
    for level in range(len(model.split_idx)):
        tform = similarity_transform(model.initial_shape, shape)[:, :2].astype(np.float32)
        normalised = model.deltas[level] @ tform.T + shape[model.anchor_idx[level]]
        features = _pixels(grey, normalised.astype(np.float64) * scale + offset)
        node = np.zeros(len(trees), np.int64)
        for _ in range(depth):
            idx = model.split_idx[level, trees, node]
            go_left = features[idx[:, 0]] - features[idx[:, 1]] > model.split_thresh[level, trees, node]
            node = np.where(go_left, 2 * node + 1, 2 * node + 2)
        leaves = model.leaf_values[level, trees, node - model.split_idx.shape[2]]
        # dlib adds the increments one tree at a time in float32: a reduction over axis 0 does the same
        shape = np.add.reduce(np.concatenate([shape[None], leaves]), axis=0, dtype=np.float32)
    return shape.astype(np.float64) * scale + offset


def predict(model: ShapePredictorModel, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """68 points (n, 68, 2) in pixels for each dlib-style box (n, 4: left, top, right, bottom)."""
    grey = to_grey(image)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if not np.isfinite(boxes).all():
        raise ValueError("face boxes contain NaN or infinite values")
    out = np.zeros((len(boxes), model.num_parts, 2), np.float64)
    for i, box in enumerate(boxes):
        out[i] = _predict_one(model, grey, box)
    return out


def mtcnn_to_dlib_box(boxes: np.ndarray, correction: np.ndarray) -> np.ndarray:
    """dlib-style boxes (left, top, right, bottom) from MTCNN boxes (x1, y1, x2, y2).

    ``correction`` = (cx, cy, w, h): the dlib box's centre offset and sides as fractions of the
    MTCNN box's mean side ``s = (w + h) / 2``: centre = MTCNN centre + (cx, cy) * s, sides = (w, h) * s.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    cx, cy, w, h = (float(v) for v in correction)
    side = ((boxes[:, 2] - boxes[:, 0]) + (boxes[:, 3] - boxes[:, 1])) / 2
    centre_x = (boxes[:, 0] + boxes[:, 2]) / 2 + cx * side
    centre_y = (boxes[:, 1] + boxes[:, 3]) / 2 + cy * side
    half_w, half_h = w * side / 2, h * side / 2
    return np.stack([centre_x - half_w, centre_y - half_h, centre_x + half_w, centre_y + half_h], axis=1)


class Dlib68:
    """The :class:`~facespace.landmarks.types.Landmarker` for dlib's 68-point model on MTCNN boxes."""

    name = MODEL_NAME

    def __init__(self) -> None:
        config = get_config(MODEL_NAME, "landmarker")
        correction = config.extra.get("box_from_mtcnn")
        if correction is None or len(correction) != 4:
            raise WeightsError(f"registry entry {MODEL_NAME!r} lacks its 4-number box_from_mtcnn")
        self.correction = np.asarray(correction, dtype=np.float64)
        self.model = load_model(MODEL_NAME)

    def locate(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """68 points (n, 68, 2) float32 for each MTCNN box (n, 4)."""
        dlib_boxes = mtcnn_to_dlib_box(boxes, self.correction)
        return predict(self.model, image, dlib_boxes).astype(np.float32)
