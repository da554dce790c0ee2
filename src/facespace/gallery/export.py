"""Gallery export files: every identity and embedding in ``.json`` or ``.npz``.

Both formats carry a header (``format``: ``facespace-gallery``, ``version``,
``model``, ``preprocessing_id``, ``dim``) and, per embedding, its identity's
name and creation time, the float32 vector, its source and its creation time.
This module reads and writes the files only; :class:`~facespace.gallery.store.Gallery`
(``export`` / ``import_``) moves their contents in and out of the database.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..files import atomic_path
from .records import GalleryError

__all__ = ["EXPORT_FORMAT", "ExportRow", "write_export", "read_export"]

EXPORT_FORMAT = "facespace-gallery"
_HEADER_KEYS = ("format", "version", "model", "preprocessing_id", "dim")

#: One embedding as the gallery stores it:
#: (identity name, identity created, little-endian float32 vector bytes, source, embedding created).
ExportRow = tuple[str, float, bytes, Optional[str], float]

#: ``{name: (vectors (N, D) float32, sources, created times)}``
People = dict[str, tuple[np.ndarray, list, list]]


def write_export(path: str | os.PathLike, rows: Sequence[ExportRow], *, version: int, model: str | None,
                 preprocessing_id: str | None, dim: int | None) -> int:
    """Write ``rows`` (grouped by identity) to ``path``, by its suffix; returns identities written.

    The file appears complete or not at all (:func:`facespace.files.atomic_path`).
    """
    path = Path(path)
    writers = {".json": _write_json, ".npz": _write_npz}
    writer = writers.get(path.suffix.lower())
    if writer is None:
        raise GalleryError(f"{path}: export to .json or .npz")
    header = {"format": EXPORT_FORMAT, "version": version, "model": model,
              "preprocessing_id": preprocessing_id, "dim": dim}
    with atomic_path(path) as tmp:
        return writer(tmp, header, rows)


def _write_json(tmp: Path, header: dict, rows: Sequence[ExportRow]) -> int:
    people: dict[str, dict] = {}
    for name, created, vector, source, stamp in rows:
        person = people.setdefault(name, {"name": name, "created": created, "embeddings": []})
        person["embeddings"].append({"vector": [round(float(x), 7) for x in np.frombuffer(vector, "<f4")],
                                     "source": source, "created": stamp})
    tmp.write_text(json.dumps({**header, "identities": list(people.values())}))
    return len(people)


def _write_npz(tmp: Path, header: dict, rows: Sequence[ExportRow]) -> int:
    names = [r[0] for r in rows]
    with open(tmp, "wb") as handle:
        np.savez_compressed(
            handle,
            header=np.array(json.dumps(header)),
            names=np.array(names, dtype=str),
            identity_created=np.array([r[1] for r in rows], dtype=np.float64),
            vectors=(np.frombuffer(b"".join(r[2] for r in rows), "<f4").reshape(len(rows), -1)
                     if rows else np.zeros((0, header["dim"] or 0), np.float32)),
            sources=np.array([r[3] or "" for r in rows], dtype=str),
            created=np.array([r[4] for r in rows], dtype=np.float64),
        )
    return len(set(names))


def read_export(path: str | os.PathLike) -> tuple[dict, People]:
    """The header and ``{name: (vectors, sources, created)}`` of an export file, checked."""
    path = Path(path)
    if not path.is_file():
        raise GalleryError(f"{path}: no such file")
    readers = {".json": _read_json, ".npz": _read_npz}
    reader = readers.get(path.suffix.lower())
    try:
        if reader is None:
            raise GalleryError(f"{path}: import a .json or .npz export")
        header, people = reader(path)
    except (KeyError, TypeError, ValueError, OSError) as exc:
        raise GalleryError(f"{path}: not a facespace gallery export ({exc})") from exc
    if header.get("format") != EXPORT_FORMAT:
        raise GalleryError(f"{path}: not a facespace gallery export (format {header.get('format')!r})")
    out = {}
    for name, (vectors, sources, stamps) in people.items():
        array = np.asarray(vectors, dtype=np.float32)
        if array.ndim != 2 or (header.get("dim") and array.shape[1] != int(header["dim"])):
            raise GalleryError(f"{path}: identity {name!r} has embeddings of the wrong shape {array.shape}")
        out[name] = (array, sources, stamps)
    return header, out


def _read_json(path: Path) -> tuple[dict, dict[str, tuple[list, list, list]]]:
    data = json.loads(path.read_text())
    header = {k: data.get(k) for k in _HEADER_KEYS}
    people: dict[str, tuple[list, list, list]] = {}
    for person in data["identities"]:
        entry = people.setdefault(person["name"], ([], [], []))
        for emb in person["embeddings"]:
            entry[0].append(emb["vector"])
            entry[1].append(emb.get("source"))
            entry[2].append(float(emb.get("created", time.time())))
    return header, people


def _read_npz(path: Path) -> tuple[dict, dict[str, tuple[list, list, list]]]:
    people: dict[str, tuple[list, list, list]] = {}
    with np.load(path, allow_pickle=False) as data:
        header = json.loads(str(data["header"]))
        for name, vector, source, stamp in zip(data["names"], data["vectors"], data["sources"], data["created"]):
            entry = people.setdefault(str(name), ([], [], []))
            entry[0].append(vector)
            entry[1].append(str(source) or None)
            entry[2].append(float(stamp))
    return header, people
