"""Calibration: turning distances into decisions, from measured distance distributions.

* :func:`threshold_at_far`: the threshold for a target false-accept rate, from
  impostor distances (one rule, used by the evaluation protocol's VAL@FAR, by
  :meth:`Calibration.fit` and by the benchmarks).
* :class:`Calibration`: distance -> same-person probability (a logistic fit) and
  FAR -> threshold (a table of impostor-distance quantiles) for one model. Its
  numbers are data, fitted by ``benchmarks/identify_lfw.py --calibrate`` and kept
  in ``facespace/data/identify_calibration.json``, one entry per model; the
  gallery search, clustering and the server read it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import FacespaceError

__all__ = ["Calibration", "threshold_at_far", "default_calibration_path", "CALIBRATION_FILE"]

CALIBRATION_FILE = "identify_calibration.json"


def threshold_at_far(impostor_distances, far: float) -> float:
    """The distance threshold whose false-accept rate over these impostor (different-person)
    distances is ``far``, read off the empirical FAR curve by linear interpolation.

    The curve runs from (just below the smallest impostor distance, or 0, FAR 0) through
    (each distinct distance, fraction of impostors at or below it); ``far`` at or above 1
    gives the largest distance. Accepted means ``distance <= threshold``. This is the rule of
    the LFW protocol's VAL@FAR and of every calibrated FAR threshold in facespace.
    """
    impostors = np.sort(np.asarray(impostor_distances, dtype=np.float64).ravel())
    if len(impostors) == 0:
        raise ValueError("no impostor distances to set a FAR threshold on")
    values, counts = np.unique(impostors, return_counts=True)
    rates = np.cumsum(counts) / len(impostors)
    anchor = min(0.0, values[0])
    if anchor == values[0]:  # impostors at distance <= 0: start the curve just below them
        anchor = values[0] - max(1e-6, 1e-3 * (values[-1] - values[0]))
    xs = np.concatenate([[anchor], values])
    fs = np.concatenate([[0.0], rates])
    if far >= fs[-1]:
        return float(xs[-1])
    if far <= 0:
        return float(xs[0])
    # fs is strictly increasing (values are distinct, counts > 0), so np.interp inverts it.
    return float(np.interp(far, fs, xs))


@dataclass(frozen=True)
class Calibration:
    """Distance -> probability and FAR -> threshold for one model.

    ``p(same | d) = 1 / (1 + exp(slope * (d - midpoint)))``; ``far_table`` maps
    a per-comparison false-accept rate to the impostor-distance quantile.
    """

    model: str
    slope: float
    midpoint: float
    far_table: dict[float, float] = field(default_factory=dict)
    source: str = ""

    def probability(self, distance) -> np.ndarray:
        z = np.clip(self.slope * (np.asarray(distance, dtype=np.float64) - self.midpoint), -60, 60)
        return 1.0 / (1.0 + np.exp(z))

    def threshold(self, far: float, comparisons: int = 1) -> float:
        """Distance threshold at which a search over ``comparisons`` impostor identities
        accepts with probability ``far`` (per comparison: 1 - (1 - far) ** (1 / comparisons))."""
        if not 0 < far < 1:
            raise ValueError("far must lie strictly between 0 and 1")
        if not self.far_table:
            raise FacespaceError(f"no FAR calibration for model {self.model!r}; give a threshold instead")
        per = -math.expm1(math.log1p(-far) / max(int(comparisons), 1))
        fars = np.array(sorted(self.far_table))
        dists = np.array([self.far_table[f] for f in fars])
        return float(np.interp(np.log(per), np.log(fars), dists))

    @classmethod
    def fit(cls, distances, same, model: str, source: str = "",
            fars: Sequence[float] = tuple(10.0 ** np.arange(-6, -0.9, 0.25))) -> "Calibration":
        """Logistic regression of ``same`` on ``distance`` (Newton's method), plus FAR quantiles."""
        d = np.asarray(distances, dtype=np.float64)
        y = np.asarray(same, dtype=np.float64)
        if d.shape != y.shape or len(d) < 4 or y.min() == y.max():
            raise ValueError("need distances of both same-person and different-person pairs")
        X = np.stack([np.ones_like(d), d], axis=1)
        w = np.zeros(2)
        for _ in range(100):
            p = 1 / (1 + np.exp(-np.clip(X @ w, -60, 60)))
            grad = X.T @ (y - p) - 1e-6 * w
            hess = (X * (p * (1 - p))[:, None]).T @ X + 1e-6 * np.eye(2)
            step = np.linalg.solve(hess, grad)
            w += step
            if np.abs(step).max() < 1e-10:
                break
        slope = -w[1]
        midpoint = w[0] / slope
        impostor = d[y == 0]
        table = {float(f): threshold_at_far(impostor, f) for f in fars if f * len(impostor) >= 1}
        return cls(model=model, slope=float(slope), midpoint=float(midpoint), far_table=table, source=source)

    def to_dict(self) -> dict:
        return {"slope": self.slope, "midpoint": self.midpoint, "source": self.source,
                "far_table": {f"{k:.3g}": v for k, v in sorted(self.far_table.items())}}

    @classmethod
    def from_dict(cls, model: str, data: dict) -> "Calibration":
        return cls(model=model, slope=float(data["slope"]), midpoint=float(data["midpoint"]),
                   far_table={float(k): float(v) for k, v in data.get("far_table", {}).items()},
                   source=data.get("source", ""))

    @classmethod
    def load(cls, model: str, threshold: float | None = None, path: str | os.PathLike | None = None) -> "Calibration":
        """The stored calibration of ``model``; without one, the file's fallback slope centred
        on ``threshold`` (the model's registered verification threshold)."""
        data = _calibration_data(path)
        if model in data.get("models", {}):
            return cls.from_dict(model, data["models"][model])
        if threshold is None:
            from .pretrained.registry import get_config

            threshold = get_config(model).threshold
        fallback = data["fallback"]
        return cls(model=model, slope=float(fallback["slope"]), midpoint=float(threshold),
                   source=f"fallback: {fallback.get('source', '')}")

    def save(self, path: str | os.PathLike) -> None:
        """Store this calibration in a calibration JSON file (other models' entries kept)."""
        path = Path(path)
        data = json.loads(path.read_text()) if path.is_file() else _calibration_data(None)
        data.setdefault("models", {})[self.model] = self.to_dict()
        path.write_text(json.dumps(data, indent=2) + "\n")


def _calibration_data(path) -> dict:
    if path is not None:
        return json.loads(Path(path).read_text())
    env = os.environ.get("FACESPACE_CALIBRATION")
    if env:
        return json.loads(Path(env).read_text())
    return json.loads(resources.files("facespace").joinpath("data", CALIBRATION_FILE).read_text())


def default_calibration_path() -> Path:
    return Path(str(resources.files("facespace").joinpath("data", CALIBRATION_FILE)))
