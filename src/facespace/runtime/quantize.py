"""Static int8 quantisation of an embedding network for ONNX Runtime.

The float ONNX graph (:mod:`facespace.runtime.onnx_backend`) is quantised in
QDQ form with per-channel int8 weights and uint8 activations. The activation
ranges are data, not computed at load time: ``benchmarks/int8.py`` measures
them (min/max) on real face crops of ``celeba-299`` -- identities disjoint
from LFW, where accuracy is then checked -- and stores them in
``facespace/data/int8/<model>.json``. Quantising from stored ranges is
deterministic and needs no images, so every machine builds the same int8
graph from the same float weights. The graph is cached beside the float one,
keyed by :func:`int8_id` (the ranges and the options).

Why: on CPUs with VNNI instructions the int8 graph runs about 3.5x faster than
the float one; its embeddings differ by cosine > 0.99, so it is a separate
backend (``"onnx-int8"``) whose embeddings are labelled ``precision=int8``.
Measured accuracy and speed: ``benchmarks/results/int8.json``.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np

from ..errors import FacespaceError
from ..files import atomic_path
from .onnx_backend import DEFAULT_OPSET, OnnxNetwork, cached_graph, ensure_graph, export_embedder, float_graph

if TYPE_CHECKING:
    from ..pretrained.registry import PretrainedConfig

__all__ = ["calibration_file", "int8_id", "load_int8_embedder", "measure_ranges", "quantize_graph"]

#: Convolutions (with their ReLUs, pools and concatenations) run in int8; the residual additions
#: and the final linear layer stay in float: quantising them too cost 0.12 LFW points instead of
#: 0.07 for a 5% speed gain (benchmarks/results/int8.json).
_QUANT_OPTIONS = {"per_channel": True, "op_types_to_quantize": ["Conv", "Relu", "MaxPool", "Concat"]}


def _ort_quantization():
    try:
        from onnxruntime import quantization
    except ImportError as exc:
        raise FacespaceError("int8 quantisation needs onnxruntime: pip install 'facespace[onnx]'") from exc
    if "calibration_cache_path" not in quantization.quantize_static.__code__.co_varnames:
        raise FacespaceError("int8 quantisation from stored ranges needs onnxruntime >= 1.32")
    return quantization


def calibration_file(name: str) -> Path:
    """The stored activation ranges of embedder ``name`` (raises if it has none)."""
    path = Path(str(resources.files("facespace").joinpath("data", "int8", f"{name}.json")))
    if not path.is_file():
        raise FacespaceError(f"no int8 calibration for {name!r}; make one with "
                             f"`python benchmarks/int8.py --calibrate --model {name}`")
    return path


def int8_id(name: str) -> str:
    """A short id of the int8 form of ``name``: its stored ranges and the quantisation options.
    Embeddings made by int8 graphs with different ids are not the same (see the pipeline's
    ``preprocessing``)."""
    digest = hashlib.sha256(calibration_file(name).read_bytes())
    digest.update(json.dumps(_QUANT_OPTIONS, sort_keys=True).encode())
    return digest.hexdigest()[:10]


def _prepared(float_path: Path, workdir: Path) -> Path:
    """The float graph with shapes inferred and simplified, as the quantiser expects."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = workdir / "prepared.onnx"
    quant_pre_process(str(float_path), str(out))
    return out


def _quantize(prepared: Path, out: Path, reader, ranges: Path) -> None:
    q = _ort_quantization()
    q.quantize_static(str(prepared), str(out), reader, quant_format=q.QuantFormat.QDQ,
                      activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                      calibrate_method=q.CalibrationMethod.MinMax, calibration_cache_path=str(ranges),
                      **_QUANT_OPTIONS)


def measure_ranges(float_path: str | Path, batches: Iterable[np.ndarray], ranges_out: str | Path) -> Path:
    """Measure activation ranges of a float graph on normalised input ``batches`` (equal sizes)
    and write them to ``ranges_out`` (replacing any file there)."""
    q = _ort_quantization()
    ranges_out = Path(ranges_out)
    ranges_out.unlink(missing_ok=True)

    class _Reader(q.CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter(batches)

        def get_next(self):
            batch = next(self._batches, None)
            return None if batch is None else {"input": np.ascontiguousarray(batch, dtype=np.float32)}

    with tempfile.TemporaryDirectory(prefix="facespace-int8-") as tmp:
        prepared = _prepared(Path(float_path), Path(tmp))
        _quantize(prepared, Path(tmp) / "int8.onnx", _Reader(), ranges_out)
    return ranges_out


def quantize_graph(float_path: str | Path, out_path: str | Path, ranges: str | Path) -> Path:
    """Write the int8 form of ``float_path`` to ``out_path`` (atomically) from stored ``ranges``."""
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp_out, tempfile.TemporaryDirectory(prefix="facespace-int8-") as tmp:
        _quantize(_prepared(Path(float_path), Path(tmp)), tmp_out, None, Path(ranges))
    return out_path




def load_int8_embedder(model: "PretrainedConfig | str | None" = None, threads: int | None = None,
                       opset: int = DEFAULT_OPSET) -> OnnxNetwork:
    """The int8 ONNX Runtime form of embedder ``model``, quantised into the weight cache on first use."""
    from ..pretrained.registry import resolve_config

    config = resolve_config(model, "embedder")
    ranges = calibration_file(config.name)
    float_path, float_sources = float_graph(config, opset)
    float_path = ensure_graph(float_path, lambda p: export_embedder(config, p, opset), float_sources)
    path = float_path.with_name(f"{float_path.stem}-int8-{int8_id(config.name)}.onnx")
    sources = {"float": float_sources, "int8": int8_id(config.name)}
    return cached_graph(path, lambda p: quantize_graph(float_path, p, ranges), sources, threads)
