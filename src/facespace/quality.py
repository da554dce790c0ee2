"""How far a face's comparisons can be trusted: one score in [0, 1] per face, the estimated
probability that a comparison involving it is decided right (0.99: about one wrong decision in a hundred).

The score is a logistic function of five things the pipeline already knows about a face:
the detector's confidence, how far the head is turned (|yaw|) and tilted (|pitch|) by its
landmark pose, its size in pixels and the sharpness of its crop (variance of the Laplacian).
The weights are data (``data/quality.json``), fitted by ``benchmarks/robust_dev.py`` on
development pairs only (Pointing'04 and LFW view 1) to predict whether a pair containing the
face is verified correctly at the calibrated threshold; a pair's quality is its worse face's. Each
weight keeps its known direction (quality never rises as a face turns or shrinks); a feature whose
fitted weight went the other way on the development pairs is left out (sharpness, so far: the
development faces are rarely blurred).

A face the detector did not find (a fallback crop) has quality 0: nothing vouches for it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import cv2
import numpy as np

from .types import Face

__all__ = ["FEATURES", "QualityModel", "face_features", "sharpness"]

#: The features, in the order of the weights.
FEATURES = ("score_logit", "abs_yaw", "abs_pitch", "log2_size", "log_sharpness")


def sharpness(crop: np.ndarray) -> float:
    """Variance of the Laplacian of the crop's grey image: low for blurred faces."""
    grey = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def face_features(face: Face, crop: np.ndarray) -> np.ndarray:
    """The :data:`FEATURES` of one detected face and its network-input crop."""
    p = min(max(float(face.score), 1e-6), 1 - 1e-6)
    yaw = abs(face.pose.yaw) if face.pose is not None else 90.0
    pitch = abs(face.pose.pitch) if face.pose is not None else 90.0
    side = max(min(face.box[2] - face.box[0], face.box[3] - face.box[1]), 1.0)
    return np.array([min(math.log(p / (1 - p)), 14.0), min(yaw, 90.0), min(pitch, 90.0),
                     math.log2(side), math.log(sharpness(crop) + 1.0)], dtype=np.float64)


@dataclass(frozen=True)
class QualityModel:
    """Logistic weights over :data:`FEATURES` (after standardising with ``mean``/``scale``)."""

    weights: tuple[float, ...]
    bias: float
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    source: str = ""

    def score_features(self, features: np.ndarray) -> np.ndarray:
        """Quality of each row of (n, 5) features."""
        z = (np.atleast_2d(features) - np.array(self.mean)) / np.array(self.scale)
        return 1.0 / (1.0 + np.exp(-(z @ np.array(self.weights) + self.bias)))

    def score(self, face: Face, crop: np.ndarray) -> float:
        if not face.detected:
            return 0.0
        return float(self.score_features(face_features(face, crop))[0])

    def to_dict(self) -> dict:
        return {"features": list(FEATURES), "weights": list(self.weights), "bias": self.bias,
                "mean": list(self.mean), "scale": list(self.scale), "source": self.source}

    @classmethod
    def from_dict(cls, data: dict) -> "QualityModel":
        if list(data.get("features", [])) != list(FEATURES):
            raise ValueError(f"quality model features {data.get('features')} are not {list(FEATURES)}")
        return cls(tuple(data["weights"]), float(data["bias"]), tuple(data["mean"]), tuple(data["scale"]),
                   data.get("source", ""))

    @classmethod
    def load(cls, path: str | Path | None = None) -> "QualityModel":
        """The fitted model (``data/quality.json``), or the one in ``path``."""
        return _load(str(path) if path is not None else None)


@lru_cache(maxsize=4)
def _load(path: str | None) -> QualityModel:
    if path is None:
        text = resources.files("facespace").joinpath("data/quality.json").read_text()
    else:
        text = Path(path).read_text()
    return QualityModel.from_dict(json.loads(text))
