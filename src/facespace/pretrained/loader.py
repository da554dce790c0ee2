"""The loader: the one place a registered model becomes a network holding its pretrained weights.

The network comes from the architecture registry
(:func:`facespace.networks.create_model`, by the entry's ``architecture``);
one table says how weights are converted:

* ``FORMATS``: registry ``format`` -> :class:`WeightFormat`, i.e. a
  ``convert(model, paths)`` returning a state_dict for ``model``, plus the
  keyword arguments the architecture needs to hold such weights (the frozen
  TF graph has batch norms folded into conv biases).

Converted state_dicts are cached as ``.pt`` files next to the weight file,
named by a key over the weight sha256, architecture, format and
``CONVERTER_VERSION``, so a changed file or converter never reuses a stale
cache. Each cache has a manifest (:func:`facespace.files.write_manifest`: its
own sha256 and what it was made from), checked on every load: a truncated,
overwritten or tampered cache is converted again from the weight files, which
are themselves checked against the registry's sha256 (and fetched again if
they differ). Add an architecture with ``@register_model`` beside its definition in
:mod:`facespace.networks`, a weight format with :func:`register_format`.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..errors import WeightsError
from ..files import atomic_path, has_valid_manifest, write_manifest
from .registry import PretrainedConfig, resolve_config
from .weights import local_paths, weight_paths

__all__ = ["load_embedder", "load_network", "load_mtcnn_net", "build_embedder", "onnx_cache_path", "convert_weights", "converted_cache_path",
           "register_format", "FORMATS", "CONVERTER_VERSION"]

# Bump when a converter or an architecture's parameter layout changes.
CONVERTER_VERSION = 1
# Bump when batch-norm folding (facespace.runtime.fuse) changes what it computes.
FUSE_VERSION = 1

if TYPE_CHECKING:  # torch is imported by the functions that build or load a network, not here: the
    import torch    # cache paths below are what the torch-free ONNX path needs of this module
    from torch import nn

Converter = Callable[["nn.Module", dict[str, Path]], dict[str, "torch.Tensor"]]


@dataclass(frozen=True)
class WeightFormat:
    convert: Converter
    model_kwargs: dict = field(default_factory=dict)


def _keras_h5(model: nn.Module, paths: dict[str, Path]) -> dict[str, torch.Tensor]:
    from .convert_keras import convert_keras_h5

    return convert_keras_h5(paths["weights"], model)


def _tf_graphdef(model: nn.Module, paths: dict[str, Path]) -> dict[str, torch.Tensor]:
    from .convert_graphdef import convert_tf_graphdef

    return convert_tf_graphdef(paths["weights"], model)


def _tflite(model: nn.Module, paths: dict[str, Path]) -> dict[str, torch.Tensor]:
    from .convert_tflite import convert_tflite

    return convert_tflite(paths["weights"], model)


FORMATS: dict[str, WeightFormat] = {
    "keras_h5": WeightFormat(_keras_h5),
    "tf_graphdef": WeightFormat(_tf_graphdef, {"folded_bn": True}),
    "tflite": WeightFormat(_tflite),
}


def register_format(name: str, convert: Converter, **model_kwargs) -> None:
    FORMATS[name] = WeightFormat(convert, model_kwargs)


def _format(config: PretrainedConfig) -> WeightFormat:
    fmt = FORMATS.get(config.format)
    if fmt is None:
        raise WeightsError(f"model {config.name!r}: unknown weight format {config.format!r}")
    return fmt


def build_embedder(config: PretrainedConfig) -> nn.Module:
    """The untrained network for a registry entry, shaped to hold its converted weights."""
    from ..networks import create_model

    fmt = _format(config)
    try:
        return create_model(config.architecture, embedding_size=config.embedding_size,
                            input_size=config.input_size or None, **fmt.model_kwargs)
    except ValueError as exc:
        raise WeightsError(f"model {config.name!r}: {exc}") from None


def converted_cache_path(config: PretrainedConfig, paths: dict[str, Path]) -> Path:
    """Where the converted state_dict of ``config`` is cached (beside its first weight file)."""
    fmt = _format(config)
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
    fmt = _format(config)
    return fmt.convert(model if model is not None else build_embedder(config), paths)


def cache_sources(config: PretrainedConfig) -> dict:
    """What a converted cache of ``config`` is made from (recorded in its manifest)."""
    return {"files": {k: v.sha256 for k, v in sorted(config.files.items())}, "format": config.format,
            "architecture": config.architecture, "converter": CONVERTER_VERSION}


def _load_cached(path: Path, sources: dict) -> dict[str, torch.Tensor] | None:
    """The cached state, only if its manifest vouches for its bytes (else convert again)."""
    if not has_valid_manifest(path, sources):
        return None
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # unreadable despite its checksum: convert again and overwrite
        return None


def _cache_state(state: dict[str, torch.Tensor], cache: Path, sources: dict) -> None:
    """Write a state and its manifest; a read-only cache still works, just slower."""
    import torch

    try:
        with atomic_path(cache) as tmp:
            torch.save(state, tmp)
        write_manifest(cache, sources)
    except OSError as exc:
        warnings.warn(f"could not cache weights at {cache}: {exc}", stacklevel=3)


def _convert_and_cache(config: PretrainedConfig, network: nn.Module, cache: Path,
                       sources: dict) -> dict[str, torch.Tensor]:
    """Convert the (verified, fetched if need be) weight files and cache the state with its manifest."""
    state = convert_weights(config, weight_paths(config), network)
    _cache_state(state, cache, sources)
    return state


def load_embedder(model: PretrainedConfig | str | None = None, device: str | torch.device = "cpu",
                  fuse: bool = False) -> nn.Module:
    """The pretrained embedding network ``model`` (a registry config, or its name; default:
    the registry's default embedder), weights fetched, converted (cached) and loaded, in eval mode.

    The returned module maps normalised ``N x 3 x S x S`` float tensors (see
    :func:`facespace.runtime.preprocess.normalise`) to L2-normalised embeddings.
    ``fuse=True`` folds its batch norms into the preceding layers
    (:func:`facespace.runtime.fuse.fuse_for_inference`): same outputs to ~1e-6,
    faster, but no longer trainable.
    """
    config = resolve_config(model, "embedder")
    network = _load_fused(config) if fuse else None
    if network is None:
        network = _load_unfused(config)
        if fuse:
            from ..runtime.fuse import fuse_for_inference

            _cache_state(fuse_for_inference(network).state_dict(), _fused_cache(config), _fused_sources(config))
    return network.to(device).eval()


def load_network(model: PretrainedConfig | str, kind: str, device: str | torch.device = "cpu") -> nn.Module:
    """A registered detector or landmarker network (``kind``) with its converted weights, in eval
    mode: the same conversion, cache and manifest checks as :func:`load_embedder`."""
    return _load_unfused(resolve_config(model, kind)).to(device).eval()


def _load_unfused(config: PretrainedConfig) -> nn.Module:
    """The network with its converted weights (converted and cached first if need be)."""
    cache = converted_cache_path(config, local_paths(config))
    sources = cache_sources(config)
    import torch

    state = _load_cached(cache, sources)
    if state is None:  # converting needs a real network to read the layout from
        network = build_embedder(config)
        _fit(network, _convert_and_cache(config, network, cache, sources), config, assign=False)
        return network
    with torch.device("meta"):  # the cached state is complete: no random initialisation, no copy
        network = build_embedder(config)
    _fit(network, state, config, assign=True)
    return network


def _fused_cache(config: PretrainedConfig) -> Path:
    plain = converted_cache_path(config, local_paths(config))
    return plain.with_name(plain.name.replace(".torch-", ".fused-"))


def _fused_sources(config: PretrainedConfig) -> dict:
    return {**cache_sources(config), "fused": FUSE_VERSION}


def _load_fused(config: PretrainedConfig) -> nn.Module | None:
    """The batch-norm-folded network straight from its cached state (the layout made on the meta
    device, no arithmetic): a cold start's largest saving. None when there is no valid cache."""
    import torch

    from ..runtime.fuse import fuse_for_inference

    state = _load_cached(_fused_cache(config), _fused_sources(config))
    if state is None:
        return None
    with torch.device("meta"):
        network = fuse_for_inference(build_embedder(config))
    _fit(network, state, config, assign=True)
    return network.requires_grad_(False)  # as a freshly folded network: for inference only


def _fit(network: nn.Module, state: dict[str, torch.Tensor], config: PretrainedConfig, assign: bool) -> None:
    """Load ``state`` strictly; ``assign`` adopts its tensors (for a network built on the meta device)."""
    try:
        network.load_state_dict(state, strict=True, assign=assign)
    except RuntimeError as exc:
        raise WeightsError(f"converted weights do not fit model {config.name!r}: {exc}") from exc
    if any(t.is_meta for t in [*network.parameters(), *network.buffers()]):
        raise WeightsError(f"converted weights of {config.name!r} leave parts of the network empty")


def load_mtcnn_net(kind: str, path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """MTCNN network ``kind`` ("pnet", "rnet" or "onet") with its weight file loaded strictly, in eval mode."""
    import torch

    from ..networks.mtcnn_nets import NETWORKS

    try:
        net = NETWORKS[kind]()
    except KeyError:
        raise ValueError(f"unknown MTCNN network {kind!r}; expected one of {sorted(NETWORKS)}") from None
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    return net.to(device).eval()
