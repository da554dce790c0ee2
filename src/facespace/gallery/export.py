"""Gallery export files: every identity and embedding in ``.json`` or ``.npz``.

A Parquet embeddings dataset (:mod:`facespace.embeddings_io`, written by ``facespace embed
--out FOLDER``) reads as an export too: each image's largest face becomes an embedding of the
identity named by the image's folder (``root/<person>/<image>``, as ``gallery enroll --tree``),
keyed by the sha256 of the image's bytes, as enrolment keys it.

Both formats carry a header (``format``: ``facespace-gallery``, ``version``,
``model``, ``preprocessing_id``, ``dim``) and, per embedding, its identity's
name and creation time, the float32 vector, its source, its creation time and
its content hash (the key that makes importing a file twice add nothing; files
from before version 2 have none, and their embeddings are keyed by their vectors).
This module reads and writes the files only; :class:`~facespace.gallery.store.Gallery`
(``export`` / ``import_``) moves their contents in and out of the database.
A file that is not a complete, well-formed export is refused with one
:class:`~.records.GalleryError`; writing goes through :func:`facespace.files.atomic_path`,
so a failed export leaves neither a partial file nor a damaged earlier one.
"""

from __future__ import annotations

import json
import os
import re
import time
import zipfile
import zlib
from pathlib import Path
from typing import NamedTuple, Optional, Sequence

import numpy as np

from ..embeddings_io import is_embedding_dataset, read_embeddings
from ..errors import FacespaceError
from ..face_choice import choose_index
from ..files import atomic_path
from .records import ENCODING_IDS, GalleryError, encoding_of, vector_hash

__all__ = ["EXPORT_FORMAT", "ExportRow", "ExportedPerson", "write_export", "read_export"]

EXPORT_FORMAT = "facespace-gallery"
_HEADER_KEYS = ("format", "version", "model", "preprocessing_id", "dim", "encoding")

#: One embedding as the gallery stores it: (identity name, identity created, little-endian float32
#: vector bytes, source, embedding created, content hash or None: that of the vector).
ExportRow = tuple[str, float, bytes, Optional[str], float, Optional[str]]

#: What a file that is not a well-formed export raises while it is read.
_MALFORMED = (KeyError, IndexError, TypeError, ValueError, AttributeError, OSError, EOFError,
              zipfile.BadZipFile, zlib.error)
_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")


class ExportedPerson(NamedTuple):
    """One identity of an export file: (N, D) float32 vectors, and per vector its source,
    creation time and content hash (None: key it by the vector)."""

    vectors: np.ndarray
    sources: list[Optional[str]]
    created: list[float]
    hashes: list[Optional[str]]


def write_export(path: str | os.PathLike, rows: Sequence[ExportRow], *, version: int, model: str | None,
                 preprocessing_id: str | None, dim: int | None, encoding: str = "float32") -> int:
    """Write ``rows`` (grouped by identity) to ``path``, by its suffix; returns identities written.

    ``encoding`` records how the gallery stored the vectors (``int8``: the float32 rows written are its
    codes re-normalised), so an import never mixes them with float rows silently.
    The file appears complete or not at all (:func:`facespace.files.atomic_path`; missing
    folders are made). A write that fails (no permission, a full disk, a file where a folder
    should be) raises :class:`GalleryError` and leaves an earlier file at ``path`` as it was.
    """
    path = Path(path)
    writers = {".json": _write_json, ".npz": _write_npz}
    writer = writers.get(path.suffix.lower())
    if writer is None:
        raise GalleryError(f"{path}: export to .json or .npz")
    if path.is_dir():
        raise GalleryError(f"{path}: is a folder; give the export file's name")
    header = {"format": EXPORT_FORMAT, "version": version, "model": model,
              "preprocessing_id": preprocessing_id, "dim": dim, "encoding": ENCODING_IDS[encoding]}
    keyed = [(*row[:5], row[5] or vector_hash(row[2])) for row in rows]
    try:
        with atomic_path(path) as tmp:
            return writer(tmp, header, keyed)
    except OSError as exc:
        kept = "the earlier file is unchanged" if path.exists() else "nothing was written"
        raise GalleryError(f"{path}: cannot write the export ({exc.strerror or exc}); {kept}") from exc


def _write_json(tmp: Path, header: dict, rows: Sequence[ExportRow]) -> int:
    people: dict[str, dict] = {}
    for name, created, vector, source, stamp, key in rows:
        person = people.setdefault(name, {"name": name, "created": created, "embeddings": []})
        person["embeddings"].append({"vector": [round(float(x), 7) for x in np.frombuffer(vector, "<f4")],
                                     "source": source, "created": stamp, "hash": key})
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
            hashes=np.array([r[5] for r in rows], dtype=str),
        )
    return len(set(names))


def read_export(path: str | os.PathLike) -> tuple[dict, dict[str, ExportedPerson]]:
    """The header and ``{name: ExportedPerson}`` of an export file, checked: anything malformed
    (junk, a truncated file, wrong arrays or fields) is one :class:`GalleryError`."""
    path = Path(path)
    if is_embedding_dataset(path):
        return _read_dataset(path)
    if not path.is_file():
        raise GalleryError(f"{path}: no such file")
    readers = {".json": _read_json, ".npz": _read_npz}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise GalleryError(f"{path}: import a .json or .npz export, or a Parquet embeddings folder")
    try:
        header, people = reader(path)
        return header, {name: _checked_person(header, name, *entry) for name, entry in people.items()}
    except _MALFORMED as exc:
        raise GalleryError(f"{path}: not a facespace gallery export ({_why(exc)})") from exc


def _why(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"missing field {exc.args[0]!r}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _checked_header(header: object) -> dict:
    if not isinstance(header, dict):
        raise ValueError("no header")
    header = {k: header.get(k) for k in _HEADER_KEYS}
    if header["format"] != EXPORT_FORMAT:
        raise ValueError(f"format {header['format']!r}")
    if header["model"] is not None and not (isinstance(header["model"], str)
                                            and isinstance(header["preprocessing_id"], str)):
        raise ValueError("the header's model and preprocessing_id must be text")
    if header["dim"] is not None and not (isinstance(header["dim"], int) and header["dim"] > 0):
        raise ValueError(f"the header's dim {header['dim']!r} is not a positive whole number")
    header["encoding"] = encoding_of(header["encoding"])  # absent: float32; unknown: refused
    return header


def _checked_person(header: dict, name: object, vectors, sources: list, stamps: list,
                    hashes: list) -> ExportedPerson:
    if not isinstance(name, str):
        raise ValueError(f"identity name {name!r} is not text")
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim != 2 or (header["dim"] and array.shape[1] != header["dim"]):
        raise ValueError(f"identity {name!r} has embeddings of the wrong shape {array.shape}")
    if not all(s is None or isinstance(s, str) for s in sources):
        raise ValueError(f"identity {name!r} has a source that is not text")
    keys = [h or None for h in hashes]
    if not all(h is None or (isinstance(h, str) and _HEX_SHA256.fullmatch(h)) for h in keys):
        raise ValueError(f"identity {name!r} has a content hash that is not a hex sha256")
    return ExportedPerson(array, list(sources), [float(t) for t in stamps], keys)


def _read_json(path: Path) -> tuple[dict, dict[str, tuple[list, list, list, list]]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    header = _checked_header(data)
    people: dict[str, tuple[list, list, list, list]] = {}
    for person in data["identities"]:
        entry = people.setdefault(person["name"], ([], [], [], []))
        for emb in person["embeddings"]:
            entry[0].append(emb["vector"])
            entry[1].append(emb.get("source"))
            entry[2].append(float(emb.get("created", time.time())))
            entry[3].append(emb.get("hash"))
    return header, people


def _read_npz(path: Path) -> tuple[dict, dict[str, tuple[list, list, list, list]]]:
    people: dict[str, tuple[list, list, list, list]] = {}
    data = np.load(path, allow_pickle=False)
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError("an .npy array, not an .npz archive")
    with data:
        missing = sorted({"header", "names", "vectors", "sources", "created"} - set(data.files))
        if missing:
            raise ValueError(f"no {', '.join(missing)} array in the archive")
        header = _checked_header(json.loads(str(data["header"])))
        columns = [data["names"], data["vectors"], data["sources"], data["created"]]
        columns.append(data["hashes"] if "hashes" in data.files else np.full(len(columns[0]), ""))
        if len({len(c) for c in columns}) != 1 or columns[1].ndim != 2:
            raise ValueError("its arrays do not line up (names, vectors, sources, created, hashes)")
        for name, vector, source, stamp, key in zip(*columns):
            entry = people.setdefault(str(name), ([], [], [], []))
            entry[0].append(vector)
            entry[1].append(str(source) or None)
            entry[2].append(float(stamp))
            entry[3].append(str(key) or None)
    return header, people


def _read_dataset(path: Path) -> tuple[dict, dict[str, ExportedPerson]]:
    """A Parquet embeddings dataset as an export: per image its largest face, named by its folder."""
    try:
        table = read_embeddings(path)
    except FacespaceError as exc:
        raise GalleryError(str(exc)) from None
    header = {"format": EXPORT_FORMAT, "version": 2, "model": table.model,
              "preprocessing_id": table.preprocessing_id, "dim": table.dim,
              "encoding": encoding_of(None)}  # a dataset holds float32 embeddings
    now = time.time()
    people: dict[str, tuple[list, list, list, list]] = {}
    for image, rows in table.by_image().items():
        row = rows[choose_index(table.boxes[rows], rule="largest")]
        entry = people.setdefault(Path(image).parent.name, ([], [], [], []))
        entry[0].append(table.embeddings[row])
        entry[1].append(image)
        entry[2].append(now)
        entry[3].append(table.sha256[row] or None)
    return header, {name: _checked_person(header, name, *entry) for name, entry in people.items()}
