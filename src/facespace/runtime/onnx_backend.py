"""ONNX export of the networks and an ONNX Runtime backend for the embedding network.

* :func:`export_embedder` writes a registered embedding network (batch norms
  folded, see :mod:`facespace.runtime.fuse`) as an ONNX graph with a dynamic
  batch axis: input ``input`` ``N x 3 x S x S`` float32, already normalised
  (:func:`facespace.runtime.preprocess.normalise`), output ``embedding``
  ``N x D``, L2-normalised.
* :func:`export_mtcnn` writes P-, R- and O-Net (P-Net with dynamic height and
  width, R-/O-Net with dynamic batch); inputs are normalised as
  :func:`facespace.runtime.preprocess.fixed_scale` does.
* :class:`OnnxNetwork` runs an exported graph with ONNX Runtime behind the
  same call signature as the torch module (tensor in; a tensor out, or a
  tuple for several outputs), so :class:`facespace.embedding.Embedder` and
  :class:`facespace.detection.MTCNN` can use either.
  :func:`load_onnx_embedder` and :func:`load_onnx_mtcnn` export the graphs on
  first use into the weight cache (atomic writes) and reuse them afterwards.

Needs the ``onnx`` extra (``onnx`` for export checks, ``onnxruntime`` to run).
torch is imported only to export: running a cached graph needs ONNX Runtime and
NumPy alone, so a process whose graphs are cached never loads torch.
Files are written to a temporary name and renamed, so a reader never sees a
half-written graph.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from ..errors import FacespaceError
from ..files import atomic_path, has_valid_manifest, write_manifest
from .onnx_passes import mtcnn_form, widened
from .threads import ort_threads

if TYPE_CHECKING:
    import onnx
    import torch
    from torch import nn

    from ..pretrained.registry import PretrainedConfig

__all__ = ["export_embedder", "export_mtcnn", "export_module", "OnnxNetwork",
           "load_onnx_embedder", "load_onnx_mtcnn", "DEFAULT_OPSET"]

DEFAULT_OPSET = 17
#: The graph rewrite MTCNN's exported networks get (recorded in their manifests, so a graph
#: exported before it, or with another, is exported again).
MTCNN_REWRITE = "wide-relu-sigmoid"


def _embed_module(net: "nn.Module") -> "nn.Module":
    """``net`` with ``normalize=True`` fixed, so the traced graph has one input."""
    from torch import nn

    class _Embed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x)

    return _Embed()


def export_module(module: "nn.Module", example: "tuple[torch.Tensor, ...]", path: str | Path,
                  input_names: list[str], output_names: list[str],
                  dynamic_axes: dict[str, dict[int, str]], opset: int = DEFAULT_OPSET,
                  rewrite: "Callable[[onnx.ModelProto], onnx.ModelProto] | None" = None) -> Path:
    """Trace ``module`` (eval mode, on CPU) to ONNX at ``path``, atomically; checks the file.
    ``rewrite`` (one of :mod:`facespace.runtime.onnx_passes`) is applied to the traced graph."""
    import torch

    module = module.to("cpu").eval()
    with atomic_path(path) as tmp:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer and deprecation chatter
            torch.onnx.export(module, example, str(tmp), input_names=input_names,
                              output_names=output_names, dynamic_axes=dynamic_axes,
                              opset_version=opset, do_constant_folding=True, dynamo=False)
        try:
            import onnx
        except ImportError:
            if rewrite is not None:
                raise
        else:
            if rewrite is not None:
                onnx.save(rewrite(onnx.load(str(tmp))), str(tmp))
            onnx.checker.check_model(str(tmp))
    return Path(path)


def export_embedder(model: "PretrainedConfig | str | None", path: str | Path,
                    opset: int = DEFAULT_OPSET) -> Path:
    """Export the registered embedding network ``model`` (config or name; BN folded) to ``path``."""
    import torch

    from ..pretrained.loader import load_embedder
    from ..pretrained.registry import resolve_config

    config = resolve_config(model, "embedder")
    net = load_embedder(config, device="cpu", fuse=True)
    size = config.input_size
    example = (torch.zeros(2, 3, size, size),)
    return export_module(_embed_module(net), example, path, ["input"], ["embedding"],
                         {"input": {0: "batch"}, "embedding": {0: "batch"}}, opset)


def export_mtcnn(directory: str | Path, name: str | None = None,
                 opset: int = DEFAULT_OPSET) -> dict[str, Path]:
    """Export P-, R- and O-Net of detector ``name`` as ``pnet.onnx`` etc. into ``directory``."""
    import torch

    from ..pretrained.loader import load_mtcnn_net
    from ..pretrained.weights import weight_paths

    paths = weight_paths(name, kind="detector")
    directory = Path(directory)
    specs = {
        "pnet": ((1, 3, 48, 64), ["regression", "probability"],
                 {"input": {0: "batch", 2: "height", 3: "width"}, "regression": {0: "batch", 2: "rows", 3: "cols"},
                  "probability": {0: "batch", 2: "rows", 3: "cols"}}),
        "rnet": ((2, 3, 24, 24), ["regression", "probability"],
                 {"input": {0: "batch"}, "regression": {0: "batch"}, "probability": {0: "batch"}}),
        "onet": ((2, 3, 48, 48), ["regression", "landmarks", "probability"],
                 {"input": {0: "batch"}, "regression": {0: "batch"}, "landmarks": {0: "batch"},
                  "probability": {0: "batch"}}),
    }
    out = {}
    for key, (shape, outputs, axes) in specs.items():
        net = load_mtcnn_net(key, paths[key], "cpu")
        out[key] = export_module(widened(net), (torch.zeros(shape),), directory / f"{key}.onnx", ["input"],
                                 outputs, axes, opset, rewrite=mtcnn_form)
    return out


class OnnxNetwork:
    """An exported graph run by ONNX Runtime, called like the torch module it came from.

    Called with a NumPy array it returns NumPy arrays (no torch involved); called with a
    tensor, tensors. ``threads``: ONNX Runtime intra-op threads (default:
    :func:`facespace.runtime.threads.ort_threads`, so one knob governs both backends).
    """

    def __init__(self, path: str | Path, threads: int | None = None,
                 providers: list[str] | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise FacespaceError("the ONNX backend needs onnxruntime: pip install 'facespace[onnx]'") from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads if threads is not None else ort_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.path = Path(path)
        self.session = ort.InferenceSession(str(self.path), options,
                                            providers=providers or ["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.training = False

    def run(self, array: np.ndarray) -> list[np.ndarray]:
        """The graph's outputs for a float32 NumPy input."""
        return self.session.run(None, {self.input_name: np.ascontiguousarray(array, dtype=np.float32)})

    def __call__(self, x):
        if isinstance(x, np.ndarray):
            outs = tuple(self.run(x))
        else:
            import torch

            outs = tuple(torch.from_numpy(o) for o in self.run(x.detach().to("cpu", torch.float32).numpy()))
        return outs[0] if len(outs) == 1 else outs

    def eval(self) -> "OnnxNetwork":
        return self

    def to(self, device=None, *args, **kwargs) -> "OnnxNetwork":
        if device is not None and str(device).split(":")[0] != "cpu":
            raise ValueError("ONNX Runtime networks run on the CPU")
        return self

    def __repr__(self) -> str:
        return f"OnnxNetwork({str(self.path)!r})"


def ensure_graph(path: Path, make: Callable[[Path], Path], sources: dict) -> Path:
    """``path`` if its manifest vouches for it, else made again by ``make(path)`` with a new
    manifest (a read-only cache: made in a private temporary folder instead)."""
    if has_valid_manifest(path, sources):
        return path
    try:
        make(path)
        write_manifest(path, sources)
        return path
    except OSError as exc:
        warnings.warn(f"could not cache the ONNX graph at {path}: {exc}", stacklevel=3)
        return make(Path(tempfile.mkdtemp()) / path.name)


def cached_graph(path: Path, make: Callable[[Path], Path], sources: dict,
                 threads: int | None = None) -> OnnxNetwork:
    """Run the graph cached at ``path`` (see :func:`ensure_graph`); one that checks out but will
    not load is made again once."""
    path = ensure_graph(path, make, sources)
    try:
        return OnnxNetwork(path, threads=threads)
    except FacespaceError:
        raise
    except Exception:  # a cached file ONNX Runtime rejects: make it again once
        make(path)
        write_manifest(path, sources)
        return OnnxNetwork(path, threads=threads)


def float_graph(config: "PretrainedConfig", opset: int = DEFAULT_OPSET) -> tuple[Path, dict]:
    """Where the float ONNX graph of an embedder is cached, and what it is made from."""
    from ..pretrained.loader import cache_sources, onnx_cache_path
    from ..pretrained.weights import local_paths

    return onnx_cache_path(config, local_paths(config), opset), {"torch": cache_sources(config), "opset": opset}


def load_onnx_embedder(model: "PretrainedConfig | str | None" = None, threads: int | None = None,
                       opset: int = DEFAULT_OPSET) -> OnnxNetwork:
    """The ONNX Runtime form of embedder ``model``, exported into the weight cache on first use."""
    from ..pretrained.registry import resolve_config

    config = resolve_config(model, "embedder")
    path, sources = float_graph(config, opset)
    return cached_graph(path, lambda p: export_embedder(config, p, opset), sources, threads)


def export_detector(config: "PretrainedConfig", path: str | Path, size: int, opset: int = DEFAULT_OPSET) -> Path:
    """Export a single-network detector (BlazeFace: ``size`` x ``size`` input, two outputs) to ``path``."""
    import torch

    from ..pretrained.loader import load_network

    axes = {"input": {0: "batch"}, "regressors": {0: "batch"}, "scores": {0: "batch"}}
    return export_module(load_network(config, "detector"), (torch.zeros(1, 3, size, size),), path, ["input"],
                         ["regressors", "scores"], axes, opset)


def load_onnx_detector(name: str, size: int, threads: int | None = None,
                       opset: int = DEFAULT_OPSET) -> OnnxNetwork:
    """The ONNX Runtime form of single-network detector ``name`` (BlazeFace), exported into the
    weight cache on first use."""
    from ..pretrained.registry import get_config
    from ..pretrained.weights import weight_paths

    config = get_config(name, "detector")
    weight_paths(config)  # fetched and verified, as the torch path does
    path, sources = float_graph(config, opset)
    return cached_graph(path, lambda p: export_detector(config, p, size, opset), sources, threads)


def load_onnx_mtcnn(name: str | None = None, threads: int | None = None,
                    opset: int = DEFAULT_OPSET) -> list[OnnxNetwork]:
    """P-, R- and O-Net of detector ``name`` run by ONNX Runtime, exported into the weight cache
    (beside the torch weights) on first use."""
    from ..pretrained.registry import get_config
    from ..pretrained.weights import weight_paths

    config = get_config(name, "detector")
    paths = weight_paths(config)
    folder = paths["pnet"].parent / f"onnx-opset{opset}-{MTCNN_REWRITE}"
    keys = ("pnet", "rnet", "onet")
    sources = {key: {"weights": config.files[key].sha256, "opset": opset, "rewrite": MTCNN_REWRITE}
               for key in keys}
    if not all(has_valid_manifest(folder / f"{key}.onnx", sources[key]) for key in keys):
        export_mtcnn(folder, config.name, opset)
        for key in keys:
            write_manifest(folder / f"{key}.onnx", sources[key])
    return [OnnxNetwork(folder / f"{key}.onnx", threads=threads) for key in keys]
