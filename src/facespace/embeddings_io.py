"""Embedding datasets: a folder of Parquet parts written by ``facespace embed --engine local|ray``.

One row per face: ``path`` (the image), ``face_index`` (0 = the detector's best), ``box``
(x1, y1, x2, y2), ``landmarks`` (5 x/y pairs, null for an assumed face), ``score``,
``detected``, ``sha256`` (of the image's bytes: the key that makes a gallery import of the same
photo idempotent), ``embedding`` (float32, unit length), ``model`` and ``preprocessing_id``.
Each part's footer also records, under :data:`META_KEY`, every input it covers (images
without faces and unreadable ones included) and the errors met, so a rerun skips finished
inputs (:func:`done_inputs`) and ``errors.jsonl`` can be rebuilt from the parts alone.

Parts appear whole or not at all (:func:`facespace.files.atomic_path`). This module is the
one reader: the gallery's import (:mod:`facespace.gallery.export`), ``cluster`` and
``identify`` take an :class:`EmbeddingTable` from :func:`read_embeddings`.
Needs ``pyarrow`` (the ``scale`` extra); imported only when a dataset is read or written.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import FacespaceError
from .files import atomic_path
from .imageio import printable_path

__all__ = ["DATASET_FORMAT", "META_KEY", "PART_GLOB", "ERRORS_FILE", "EmbeddingTable", "FaceRows",
           "is_embedding_dataset", "write_part", "read_embeddings", "done_inputs", "dataset_header",
           "write_errors_file", "path_text"]

DATASET_FORMAT = "facespace-embeddings"
DATASET_VERSION = 1
META_KEY = b"facespace"
PART_GLOB = "part-*.parquet"
ERRORS_FILE = "errors.jsonl"


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - depends on the environment
        raise FacespaceError("embedding datasets need pyarrow: pip install 'facespace[scale]'") from None
    return pa, pq


def path_text(path: str | os.PathLike) -> str:
    """An input's absolute path as text Parquet can hold (undecodable bytes become ``\\xNN``)."""
    return printable_path(os.path.abspath(os.fsdecode(path)))


@dataclass
class FaceRows:
    """Faces of some images, column by column, as one part stores them."""

    paths: list[str]
    face_index: list[int]
    boxes: list[np.ndarray]
    landmarks: list[np.ndarray | None]
    scores: list[float]
    detected: list[bool]
    sha256: list[str]
    embeddings: list[np.ndarray]

    @classmethod
    def empty(cls) -> "FaceRows":
        return cls([], [], [], [], [], [], [], [])

    def extend(self, other: "FaceRows") -> None:
        for name in self.__dataclass_fields__:
            getattr(self, name).extend(getattr(other, name))

    def __len__(self) -> int:
        return len(self.paths)


@dataclass
class EmbeddingTable:
    """Every face of a dataset: (N, D) unit ``embeddings`` and per face its image and detection."""

    paths: list[str]
    face_index: np.ndarray
    boxes: np.ndarray
    landmarks: list[np.ndarray | None]
    scores: np.ndarray
    detected: np.ndarray
    sha256: list[str]
    embeddings: np.ndarray
    model: str | None
    preprocessing_id: str | None

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def by_image(self) -> dict[str, list[int]]:
        """``{image path: [row numbers of its faces, face_index order]}``, in first-seen order."""
        out: dict[str, list[int]] = {}
        for row, path in enumerate(self.paths):
            out.setdefault(path, []).append(row)
        return {p: sorted(rows, key=lambda r: int(self.face_index[r])) for p, rows in out.items()}


def _schema(dim: int, meta: dict):
    pa, _ = _pyarrow()
    return pa.schema([
        ("path", pa.string()), ("face_index", pa.int32()), ("box", pa.list_(pa.float32(), 4)),
        ("landmarks", pa.list_(pa.float32(), 10)), ("score", pa.float32()), ("detected", pa.bool_()),
        ("sha256", pa.string()), ("embedding", pa.list_(pa.float32(), dim)),
        ("model", pa.string()), ("preprocessing_id", pa.string()),
    ], metadata={META_KEY: json.dumps(meta).encode()})


def write_part(folder: Path, number: int, rows: FaceRows, *, model: str, preprocessing_id: str, dim: int,
               inputs: Sequence[str], errors: Sequence[dict]) -> Path:
    """Write one part (its faces; ``inputs`` and ``errors`` in its footer) atomically; returns its path."""
    pa, pq = _pyarrow()
    meta = {"format": DATASET_FORMAT, "version": DATASET_VERSION, "model": model,
            "preprocessing_id": preprocessing_id, "dim": dim, "inputs": list(inputs), "errors": list(errors)}
    n = len(rows)
    flat = (lambda arrays, width: pa.FixedSizeListArray.from_arrays(
        pa.array(np.concatenate(arrays).astype(np.float32) if arrays else np.zeros(0, np.float32)), width))
    marks = [np.zeros(10, np.float32) if m is None else np.asarray(m, np.float32).ravel() for m in rows.landmarks]
    landmarks = flat(marks, 10)
    if any(m is None for m in rows.landmarks):
        landmarks = pa.FixedSizeListArray.from_arrays(landmarks.values, 10,
                                                      mask=pa.array([m is None for m in rows.landmarks]))
    table = pa.Table.from_arrays([
        pa.array(rows.paths, pa.string()), pa.array(rows.face_index, pa.int32()),
        flat([np.asarray(b, np.float32) for b in rows.boxes], 4), landmarks,
        pa.array(rows.scores, pa.float32()), pa.array(rows.detected, pa.bool_()), pa.array(rows.sha256, pa.string()),
        flat(rows.embeddings, dim), pa.array([model] * n, pa.string()), pa.array([preprocessing_id] * n, pa.string()),
    ], schema=_schema(dim, meta))
    path = folder / f"part-{number:06d}-{uuid.uuid4().hex[:8]}.parquet"
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def is_embedding_dataset(path: str | os.PathLike) -> bool:
    """A folder holding Parquet parts, or one ``.parquet`` file."""
    path = Path(path)
    return (path.is_file() and path.suffix.lower() == ".parquet") or (path.is_dir() and any(path.glob(PART_GLOB)))


def _parts(path: Path) -> list[Path]:
    return [path] if path.is_file() else sorted(path.glob(PART_GLOB))


def _footer(part: Path) -> dict:
    _, pq = _pyarrow()
    try:
        meta = json.loads(pq.read_schema(part).metadata[META_KEY])
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise FacespaceError(f"{printable_path(part)}: not a facespace embeddings part ({exc})") from None
    if meta.get("format") != DATASET_FORMAT:
        raise FacespaceError(f"{printable_path(part)}: not a facespace embeddings part")
    return meta


def dataset_header(path: str | os.PathLike) -> dict | None:
    """The model, preprocessing and dimension the dataset's parts agree on (None: no parts yet);
    parts that disagree are refused (their embeddings cannot be compared)."""
    header = None
    for part in _parts(Path(path)):
        meta = _footer(part)
        this = {k: meta.get(k) for k in ("model", "preprocessing_id", "dim")}
        if header is not None and this != header:
            raise FacespaceError(f"{printable_path(part)}: made by model {this['model']} [{this['preprocessing_id']}], "
                                 f"but other parts by {header['model']} [{header['preprocessing_id']}]")
        header = this
    return header


def done_inputs(path: str | os.PathLike) -> tuple[set[str], list[dict]]:
    """(inputs already covered by the dataset's parts, the errors those parts recorded)."""
    done: set[str] = set()
    errors: list[dict] = []
    for part in _parts(Path(path)):
        meta = _footer(part)
        done.update(meta.get("inputs", []))
        errors.extend(meta.get("errors", []))
    return done, errors


def write_errors_file(folder: Path, errors: Sequence[dict]) -> Path:
    """``folder/errors.jsonl``: one ``{"path", "error"}`` line per unreadable input (rebuilt whole)."""
    path = folder / ERRORS_FILE
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(e) + "\n" for e in errors), encoding="utf-8")
    return path


def read_embeddings(path: str | os.PathLike) -> EmbeddingTable:
    """Every face of a dataset folder (or one part), checked to come from one model and preprocessing."""
    _, pq = _pyarrow()
    path = Path(path)
    if not is_embedding_dataset(path):
        raise FacespaceError(f"{printable_path(path)}: not a Parquet embeddings folder (no {PART_GLOB}) or file")
    header = dataset_header(path)
    tables = []
    for part in _parts(path):
        try:
            tables.append(pq.read_table(part))
        except OSError as exc:
            raise FacespaceError(f"{printable_path(part)}: unreadable Parquet ({exc})") from None
    dim = int(header["dim"])
    columns = {name: [] for name in ("path", "face_index", "box", "landmarks", "score", "detected", "sha256",
                                     "embedding")}
    for table in tables:
        for name in columns:
            columns[name].append(table.column(name).combine_chunks())
    flat = (lambda name, width: np.concatenate([np.asarray(c.flatten(), np.float32) for c in columns[name]])
            .reshape(-1, width) if columns[name] else np.zeros((0, width), np.float32))
    landmarks = [None if m is None else np.asarray(m, np.float32).reshape(5, 2)
                 for c in columns["landmarks"] for m in c.to_pylist()]
    listed = (lambda name: [v for c in columns[name] for v in c.to_pylist()])
    return EmbeddingTable(
        paths=listed("path"), face_index=np.asarray(listed("face_index"), np.int64), boxes=flat("box", 4),
        landmarks=landmarks, scores=np.asarray(listed("score"), np.float32),
        detected=np.asarray(listed("detected"), bool), sha256=listed("sha256"), embeddings=flat("embedding", dim),
        model=header["model"], preprocessing_id=header["preprocessing_id"])
