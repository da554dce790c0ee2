"""What a gallery holds and refuses: its errors, its records, and the checks on what goes in.

Shared by storage (:mod:`.store`), enrolment (:mod:`.enrol`) and the export
formats (:mod:`.export`); it imports none of them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..comparison import unit_rows
from ..errors import FacespaceError

__all__ = ["GalleryError", "UnknownIdentityError", "IdentityExistsError", "IdentityInfo", "EnrolResult",
           "GalleryMatrix", "check_name", "as_unit_rows"]


class GalleryError(FacespaceError):
    """A gallery operation cannot be done (bad file, bad name, bad import)."""


class UnknownIdentityError(GalleryError, KeyError):
    """No identity of that name is enrolled."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class IdentityExistsError(GalleryError):
    """An identity of that name is already enrolled."""


@dataclass(frozen=True)
class IdentityInfo:
    id: int
    name: str
    embeddings: int
    created: float

    def to_dict(self) -> dict:
        return {"id": self.id, "name": self.name, "embeddings": self.embeddings,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.created))}


@dataclass
class EnrolResult:
    """What enrolling one identity did: embeddings added and inputs skipped (with why)."""

    name: str
    added: int
    skipped: list[tuple[str, str]]

    def to_dict(self) -> dict:
        return {"name": self.name, "added": self.added,
                "skipped": [{"source": s, "reason": r} for s, r in self.skipped]}


@dataclass(frozen=True)
class GalleryMatrix:
    """All embeddings of a gallery in memory: ``vectors[i]`` belongs to ``names[labels[i]]``."""

    names: list[str]
    labels: np.ndarray
    vectors: np.ndarray
    generation: int

    def __len__(self) -> int:
        return len(self.vectors)


def check_name(name: str) -> str:
    """``name`` if it can name an identity (non-empty, no outer spaces, no control characters)."""
    if not isinstance(name, str) or not name.strip():
        raise GalleryError("an identity needs a non-empty name")
    if name != name.strip():
        raise GalleryError(f"identity name {name!r} has leading or trailing spaces")
    if any(ord(c) < 32 for c in name):
        raise GalleryError(f"identity name {name!r} contains control characters")
    return name


def as_unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Embeddings to store: a finite (N, D) float32 array, each row scaled to unit length."""
    vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    if vectors.ndim != 2 or vectors.shape[1] == 0:
        raise GalleryError(f"embeddings must be an (N, D) array, got shape {vectors.shape}")
    if not np.isfinite(vectors).all():
        raise GalleryError("embeddings contain NaN or infinite values")
    if (np.linalg.norm(vectors, axis=1) < 1e-6).any():
        raise GalleryError("an embedding has zero length")
    return np.ascontiguousarray(unit_rows(vectors), dtype=np.float32)
