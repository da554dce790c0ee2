"""Embedding networks and the conversion of their pretrained weights.

Two small tables drive :func:`load_embedder`:

* ``ARCHITECTURES``: registry ``architecture`` -> ``builder(config, **kwargs)``
  returning an untrained ``nn.Module``;
* ``FORMATS``: registry ``format`` -> :class:`WeightFormat`, i.e. a
  ``convert(model, paths)`` returning a state_dict for ``model``, plus the
  keyword arguments the architecture needs to hold such weights (the frozen
  TF graph has batch norms folded into conv biases).

Converted state_dicts are cached as ``.pt`` files next to the weight file,
named by a key over the weight sha256, architecture, format and
``CONVERTER_VERSION``, so a changed file or converter never reuses a stale
cache. Add an architecture or format with :func:`register_architecture` /
:func:`register_format`.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..errors import WeightsError
from ..registry import PretrainedConfig, get_config
from ..weights import weight_paths

__all__ = ["load_embedder", "build_embedder", "onnx_cache_path", "convert_weights", "converted_cache_path",
           "register_architecture", "register_format", "ARCHITECTURES", "FORMATS",
           "CONVERTER_VERSION"]

# Bump when a converter or an architecture's parameter layout changes.
CONVERTER_VERSION = 1

Builder = Callable[..., nn.Module]
Converter = Callable[[nn.Module, dict[str, Path]], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class WeightFormat:
    convert: Converter
    model_kwargs: dict = field(default_factory=dict)


def _inception_resnet_v1(config: PretrainedConfig, **kwargs) -> nn.Module:
    from .inception_resnet_v1 import InceptionResnetV1

    return InceptionResnetV1(embedding_size=config.embedding_size, **kwargs)


def _keras_h5(model: nn.Module, paths: dict[str, Path]) -> dict[str, torch.Tensor]:
    from .convert_keras import convert_keras_h5

    return convert_keras_h5(paths["weights"], model)


def _tf_graphdef(model: nn.Module, paths: dict[str, Path]) -> dict[str, torch.Tensor]:
    from .convert_graphdef import convert_tf_graphdef

    return convert_tf_graphdef(paths["weights"], model)


ARCHITECTURES: dict[str, Builder] = {"inception_resnet_v1": _inception_resnet_v1}
FORMATS: dict[str, WeightFormat] = {
    "keras_h5": WeightFormat(_keras_h5),
    "tf_graphdef": WeightFormat(_tf_graphdef, {"folded_bn": True}),
}


def register_architecture(name: str, builder: Builder) -> None:
    ARCHITECTURES[name] = builder


def register_format(name: str, convert: Converter, **model_kwargs) -> None:
    FORMATS[name] = WeightFormat(convert, model_kwargs)


def _lookup(config: PretrainedConfig) -> tuple[Builder, WeightFormat]:
    builder = ARCHITECTURES.get(config.architecture)
    fmt = FORMATS.get(config.format)
    if builder is None:
        raise WeightsError(f"model {config.name!r}: unknown architecture {config.architecture!r}")
    if fmt is None:
        raise WeightsError(f"model {config.name!r}: unknown weight format {config.format!r}")
    return builder, fmt


def build_embedder(config: PretrainedConfig) -> nn.Module:
    """The untrained network for a registry entry, shaped to hold its converted weights."""
    builder, fmt = _lookup(config)
    return builder(config, **fmt.model_kwargs)


def converted_cache_path(config: PretrainedConfig, paths: dict[str, Path]) -> Path:
    """Where the converted state_dict of ``config`` is cached (beside its first weight file)."""
    _, fmt = _lookup(config)
    key = json.dumps({
        "architecture": config.architecture, "format": config.format,
        "embedding_size": config.embedding_size, "model_kwargs": fmt.model_kwargs,
        "files": {k: v.sha256 for k, v in sorted(config.files.items())},
        "converter": CONVERTER_VERSION,
    }, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    first = paths[sorted(paths)[0]]
    return first.with_name(f"{first.name}.torch-{digest}.pt")


def onnx_cache_path(config: PretrainedConfig, paths: dict[str, Path], opset: int = 17) -> Path:
    """Where the exported ONNX graph of ``config`` is cached (beside the converted state;
    same key, plus the opset)."""
    torch_cache = converted_cache_path(config, paths)
    stem = torch_cache.name[: -len(".pt")].replace(".torch-", ".onnx-")
    return torch_cache.with_name(f"{stem}-opset{opset}.onnx")


def convert_weights(config: PretrainedConfig, paths: dict[str, Path],
                    model: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """Convert the weight files of ``config`` into a state_dict (no caching)."""
    _, fmt = _lookup(config)
    return fmt.convert(model if model is not None else build_embedder(config), paths)


def _save_atomic(state: dict[str, torch.Tensor], path: Path) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.part")
    try:
        with open(tmp, "xb") as handle:  # honours the umask, unlike mkstemp's 0600
            torch.save(state, handle)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _load_cached(path: Path) -> dict[str, torch.Tensor] | None:
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # unreadable or truncated: convert again and overwrite
        return None


def load_embedder(name: str | None = None, device: str | torch.device = "cpu",
                  fuse: bool = False) -> nn.Module:
    """The pretrained embedding network ``name`` (default: the registry's default
    embedder), weights fetched, converted (cached) and loaded, in eval mode.

    The returned module maps normalised ``N x 3 x S x S`` float tensors (see
    :func:`facespace.models.preprocess.normalise`) to L2-normalised embeddings.
    ``fuse=True`` folds its batch norms into the preceding layers
    (:func:`facespace.models.fuse.fuse_for_inference`): same outputs to ~1e-6,
    faster, but no longer trainable.
    """
    config = get_config(name, "embedder")
    model = build_embedder(config)
    paths = weight_paths(config.name, "embedder")
    cache = converted_cache_path(config, paths)
    state = _load_cached(cache)
    if state is None:
        state = convert_weights(config, paths, model)
        try:
            _save_atomic(state, cache)
        except OSError as exc:  # a read-only cache still works, just slower
            warnings.warn(f"could not cache converted weights at {cache}: {exc}", stacklevel=2)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"converted weights do not fit model {config.name!r}: {exc}") from exc
    if fuse:
        from .fuse import fuse_for_inference

        fuse_for_inference(model)
    return model.to(device).eval()
