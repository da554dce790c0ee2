"""What a gallery holds and refuses: its errors, its records, and the checks on what goes in.

Shared by storage (:mod:`.store`), enrolment (:mod:`.enrol`) and the export
formats (:mod:`.export`); it imports none of them.
"""

from __future__ import annotations

import hashlib
import time
from urllib.parse import urlsplit, urlunsplit
from dataclasses import dataclass
from typing import Literal, Optional, Sequence, get_args

import numpy as np

from ..comparison import unit_rows
from ..errors import FacespaceError
from ..quantized import INT8_CODES, dequantize_int8, quantize_int8

__all__ = ["GalleryError", "GalleryUnavailableError", "UnknownIdentityError", "IdentityExistsError", "IdentityInfo", "EnrolResult",
           "Stored", "ImportResult", "GalleryMatrix", "EmbeddingBatch", "check_name", "as_unit_rows",
           "content_hash", "vector_hash", "printable_url", "VectorEncoding", "VECTOR_ENCODINGS", "ENCODING_IDS",
           "encoding_of", "encode_vectors", "decode_vectors", "bytes_per_value"]

#: How a gallery stores its vectors: ``float32`` (4 bytes a value) or ``int8`` codes
#: (:mod:`facespace.quantized`: one byte a value, 128 bytes a face for the 128-D model).
VectorEncoding = Literal["float32", "int8"]
VECTOR_ENCODINGS: tuple[str, ...] = get_args(VectorEncoding)
#: The ``encoding`` meta value recorded for each (what a stored row means; the int8 one names its scheme).
ENCODING_IDS: dict[str, str] = {"float32": "float32", "int8": INT8_CODES}
_BYTES_PER_VALUE = {"float32": 4, "int8": 1}


class GalleryError(FacespaceError):
    """A gallery operation cannot be done (bad file, bad name, bad import)."""


class GalleryUnavailableError(GalleryError):
    """The gallery's database cannot be reached now (a server down or restarting); trying again may work."""


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
    """What enrolling one identity did: embeddings added, inputs skipped (with why), and
    ``duplicates``: embeddings not stored again because the identity already had them."""

    name: str
    added: int
    skipped: list[tuple[str, str]]
    duplicates: int = 0

    @property
    def usable(self) -> int:
        """Inputs that gave an embedding, new or already enrolled."""
        return self.added + self.duplicates

    def to_dict(self) -> dict:
        return {"name": self.name, "added": self.added, "duplicates": self.duplicates,
                "skipped": [{"source": s, "reason": r} for s, r in self.skipped]}


@dataclass(frozen=True)
class Stored:
    """What one write of embeddings did: the identity's id, rows added, rows already there."""

    identity: int
    added: int
    duplicates: int


@dataclass(frozen=True)
class ImportResult:
    """What importing an export file did: identities taken in (not skipped by ``on_conflict``),
    embeddings added and embeddings already there."""

    identities: int
    added: int
    duplicates: int

    def to_dict(self) -> dict:
        return {"identities": self.identities, "added": self.added, "duplicates": self.duplicates}


@dataclass(frozen=True)
class GalleryMatrix:
    """All embeddings of a gallery in memory: ``vectors[i]`` belongs to ``names[labels[i]]``; ``ids[i]``
    is its row's id where a backend's own index answers by id (PostgreSQL), else None."""

    names: list[str]
    labels: np.ndarray
    vectors: np.ndarray
    generation: int
    ids: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return len(self.vectors)


@dataclass(frozen=True)
class EmbeddingBatch:
    """Embeddings ready to store: unit float32 rows, and per row its source, its content key
    (:func:`content_hash` of the image it came from, else :func:`vector_hash` of itself) and,
    for imports, its creation time (None: now)."""

    vectors: np.ndarray
    sources: list[Optional[str]]
    hashes: list[str]
    created: Optional[list[float]] = None

    @classmethod
    def of(cls, vectors: np.ndarray, sources: Sequence[Optional[str]] | None = None,
           hashes: Sequence[Optional[str]] | None = None,
           created: Sequence[float] | None = None) -> "EmbeddingBatch":
        """Checked and completed: rows made unit length, a missing content key made from the row."""
        vectors = as_unit_rows(vectors)
        n = len(vectors)
        sources = list(sources) if sources is not None else [None] * n
        hashes = list(hashes) if hashes is not None else [None] * n
        created = None if created is None else [float(t) for t in created]
        for what, values in (("sources", sources), ("content hashes", hashes), ("creation times", created)):
            if values is not None and len(values) != n:
                raise GalleryError(f"{n} embeddings but {len(values)} {what}")
        keys = [h if h else vector_hash(v) for h, v in zip(hashes, vectors)]
        return cls(vectors, sources, keys, created)

    def rows(self, identity: int, now: float, encoding: VectorEncoding = "float32") -> list[tuple]:
        """``(identity_id, vector, dim, source, created, content_hash)`` for the embeddings table, the
        vector bytes in ``encoding``."""
        stamps = self.created if self.created is not None else [now] * len(self.vectors)
        dim = self.vectors.shape[1]
        return [(identity, v, dim, s, t, h)
                for v, s, t, h in zip(encode_vectors(self.vectors, encoding), self.sources, stamps, self.hashes)]


def encoding_of(recorded: str | None) -> VectorEncoding:
    """The encoding a gallery's ``encoding`` meta value names (None: a gallery from before int8, float32)."""
    for name, value in ENCODING_IDS.items():
        if recorded in (None, value) and (recorded is not None or name == "float32"):
            return name  # type: ignore[return-value]
    raise GalleryError(f"the gallery stores vectors as {recorded!r}, which this facespace cannot read; upgrade it")


def bytes_per_value(encoding: VectorEncoding) -> int:
    return _BYTES_PER_VALUE[encoding]


def encode_vectors(vectors: np.ndarray, encoding: VectorEncoding) -> list[bytes]:
    """Each unit row as stored: little-endian float32, or int8 codes."""
    if encoding == "int8":
        return [row.tobytes() for row in quantize_int8(vectors)]
    return [row.astype("<f4").tobytes() for row in np.atleast_2d(vectors)]


def decode_vectors(blobs: Sequence[bytes], dim: int, encoding: VectorEncoding) -> np.ndarray:
    """(N, dim) float32 unit rows from stored vector bytes (int8 codes re-normalised)."""
    if not blobs:
        return np.zeros((0, dim), np.float32)
    if encoding == "int8":
        return dequantize_int8(np.frombuffer(b"".join(blobs), np.int8).reshape(len(blobs), dim))
    return np.frombuffer(b"".join(blobs), "<f4").reshape(len(blobs), dim).astype(np.float32)


def content_hash(data: bytes) -> str:
    """The key of an embedding made from these image bytes: their hex sha256."""
    return hashlib.sha256(data).hexdigest()


def vector_hash(vector: np.ndarray | bytes) -> str:
    """The key of an embedding with no source file: the hex sha256 of its little-endian float32 bytes
    (as stored, after scaling to unit length)."""
    data = vector if isinstance(vector, (bytes, bytearray, memoryview)) else \
        np.asarray(vector, dtype="<f4").tobytes()
    return hashlib.sha256(data).hexdigest()


def check_name(name: str) -> str:
    """``name`` if it can name an identity (non-empty, no outer spaces, no control characters)."""
    if not isinstance(name, str) or not name.strip():
        raise GalleryError("an identity needs a non-empty name")
    if name != name.strip():
        raise GalleryError(f"identity name {name!r} has leading or trailing spaces")
    if any(ord(c) < 32 for c in name):
        raise GalleryError(f"identity name {name!r} contains control characters")
    return name


#: A row whose length is this close to 1 is stored as given, not scaled again, so a stored
#: vector read back and stored again has the same bytes (and :func:`vector_hash`).
UNIT_TOLERANCE = 1e-6


def as_unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Embeddings to store: a finite (N, D) float32 array, each row of unit length (rows already
    unit within :data:`UNIT_TOLERANCE` kept as they are, the others scaled)."""
    vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    if vectors.ndim != 2 or vectors.shape[1] == 0:
        raise GalleryError(f"embeddings must be an (N, D) array, got shape {vectors.shape}")
    if not np.isfinite(vectors).all():
        raise GalleryError("embeddings contain NaN or infinite values")
    norms = np.linalg.norm(vectors.astype(np.float64), axis=1)
    if (norms < 1e-6).any():
        raise GalleryError("an embedding has zero length")
    out = np.array(vectors, dtype=np.float32, order="C")
    scale = np.abs(norms - 1) > UNIT_TOLERANCE
    out[scale] = unit_rows(vectors[scale])
    return out


def printable_url(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***`` (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))
