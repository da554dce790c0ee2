"""Presets: named trade-offs between cost and accuracy, each with its own calibrated threshold.

* ``fast``     -- the default crop, one view, int8 network (ONNX Runtime), BlazeFace (short range)
  as the detector, with the relaxed MTCNN pass where it finds no face;
* ``balanced`` -- the default pipeline (what ``FacePipeline()`` is);
* ``accurate`` -- several views of each face (crops, mirror images, optionally both pretrained
  models) fused into one embedding whose squared distance is the weighted mean of the views'.

What each preset holds (views, weights, thresholds) is data, ``data/presets.json``, written by
``benchmarks/robust_dev.py --write-presets`` from development data only (Pointing'04 and LFW
view 1; thresholds from ``pairsDevTrain.txt``); its measured cost per face is stored beside it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Literal, get_args

from .alignment import AlignMode
from .detection.types import DetectorName
from .embedding import Backend
from .errors import OptionError, check_choice

__all__ = ["PRESETS", "Preset", "PresetConfig", "View", "get_preset"]

Preset = Literal["fast", "balanced", "accurate"]
PRESETS: tuple[str, ...] = get_args(Preset)


@dataclass(frozen=True)
class View:
    """One way of embedding a face: a model, its crop, with or without the mirror image, and the
    view's weight in the fused squared distance."""

    model: str
    align: AlignMode
    flip: bool = False
    weight: float = 1.0

    def to_dict(self) -> dict:
        return {"model": self.model, "align": self.align, "flip": self.flip, "weight": self.weight}


@dataclass(frozen=True)
class PresetConfig:
    """A preset: its views, the embedding runtime, its threshold, its detector and where they came from."""

    name: str
    views: tuple[View, ...]
    #: The embedding runtime; None: the default for the device (ONNX Runtime on the CPU, torch elsewhere).
    backend: Backend | None
    threshold: float
    source: str = ""
    ms_per_face: float | None = None
    #: The detector when the pipeline names none; None: MTCNN.
    detector: DetectorName | None = None

    def to_dict(self) -> dict:
        out = {"views": [v.to_dict() for v in self.views], "backend": self.backend,
               "threshold": self.threshold, "source": self.source, "ms_per_face": self.ms_per_face}
        return out if self.detector is None else {**out, "detector": self.detector}


def _preset(name: str, data: dict) -> PresetConfig:
    views = tuple(View(v["model"], v["align"], bool(v.get("flip", False)), float(v.get("weight", 1.0)))
                  for v in data["views"])
    if not views or any(v.weight <= 0 for v in views):
        raise OptionError(f"preset {name!r}: needs at least one view, each with a positive weight")
    backend = data.get("backend")
    if backend is not None:
        check_choice(backend, Backend, f"preset {name!r} backend")
    detector = data.get("detector")
    if detector is not None:
        check_choice(detector, DetectorName, f"preset {name!r} detector")
    return PresetConfig(name, views, backend, float(data["threshold"]),
                        data.get("source", ""), data.get("ms_per_face"), detector)


@lru_cache(maxsize=1)
def _presets() -> dict[str, PresetConfig]:
    data = json.loads(resources.files("facespace").joinpath("data/presets.json").read_text())
    return {name: _preset(name, data["presets"][name]) for name in PRESETS}


def get_preset(name: str) -> PresetConfig:
    """The preset called ``name`` (one of :data:`PRESETS`)."""
    return _presets()[check_choice(name, Preset, "preset")]
