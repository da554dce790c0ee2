"""The architecture registry: a name -> a randomly initialised network.

Every architecture registers its builder beside its definition with
:func:`register_model` (timm's ``@register_model``); :func:`create_model`
builds one by name, randomly initialised. Pretrained weights are the business
of :mod:`facespace.pretrained`, which creates its networks through this
registry too, so a name means the same network everywhere (the loader, the
trainer, ``facespace models info``).

Names are lower case with underscores (``inception_resnet_v1``, ``nn2``).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Callable

from torch import nn

__all__ = ["ArchitectureSpec", "register_model", "create_model", "list_architectures", "get_architecture"]

Builder = Callable[..., nn.Module]

#: The modules whose import registers architectures (imported on the first look-up).
_DEFINING_MODULES = ("inception_resnet_v1", "facenet_paper", "blazeface", "facemesh")


@dataclass(frozen=True)
class ArchitectureSpec:
    """One registered architecture: its builder, the input (height, width) it was defined for,
    and its family ("facenet-paper", "inception_resnet_v1")."""

    name: str
    builder: Builder
    input_size: tuple[int, int]
    family: str

    def create(self, embedding_size: int = 128, input_size: int | tuple[int, int] | None = None,
               **kwargs) -> nn.Module:
        size = self.input_size if input_size is None else input_size
        return self.builder(embedding_size=embedding_size, input_size=size, **kwargs)


_REGISTRY: dict[str, ArchitectureSpec] = {}


def register_model(name: str, input_size: int | tuple[int, int], family: str) -> Callable[[Builder], Builder]:
    """Decorator: register ``builder(embedding_size=..., input_size=..., **kwargs)`` as ``name``."""

    def wrap(builder: Builder) -> Builder:
        size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        _REGISTRY[name] = ArchitectureSpec(name, builder, (int(size[0]), int(size[1])), family)
        return builder

    return wrap


def _ensure_registered() -> None:
    for module in _DEFINING_MODULES:
        import_module(f"{__package__}.{module}")


def list_architectures() -> list[str]:
    """Names of every registered architecture."""
    _ensure_registered()
    return sorted(_REGISTRY)


def get_architecture(name: str) -> ArchitectureSpec:
    """The registered architecture ``name`` (case-insensitive); ValueError names the known ones."""
    _ensure_registered()
    spec = _REGISTRY.get(name.lower())
    if spec is None:
        raise ValueError(f"unknown architecture {name!r}; choose one of {', '.join(sorted(_REGISTRY))}")
    return spec


def create_model(name: str, embedding_size: int = 128, input_size: int | tuple[int, int] | None = None,
                 **kwargs) -> nn.Module:
    """A randomly initialised network of architecture ``name`` (see :func:`list_architectures`)."""
    return get_architecture(name).create(embedding_size, input_size, **kwargs)
