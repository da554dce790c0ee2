"""A gallery of enrolled identities, kept in one SQLite file.

Tables (schema version 3, see :mod:`.schema`):

``identities``  (id, name UNIQUE, created)
``embeddings``  (id, identity_id -> identities.id ON DELETE CASCADE, vector BLOB of
                float32, dim, source, created, content_hash; UNIQUE (identity_id, content_hash))
``thumbnails``  (identity_id PRIMARY KEY -> identities.id ON DELETE CASCADE, jpeg, created):
                one small face crop per identity for people to look at; a rename keeps it,
                a removal takes it along
``meta``        (key, value): the ``model`` and ``preprocessing_id`` every
                embedding was made with (set by the first enrolment), their
                ``dim``, the schema version and a ``generation`` counter that
                changes with every write (so a search index knows it is stale).

An embedding is keyed by its identity and a content hash: the sha256 of the
image file's bytes it was made from, or of its own float32 bytes when it had no
file (raw vectors, imports of old exports). Storing an embedding the identity
already has is skipped and counted, not repeated, so re-running an interrupted
enrolment, two enrollers at once or importing an export twice store each
embedding once.

The database runs in WAL mode and every change is one transaction. In
particular an identity's enrolment (its row, all its embeddings and, for the
first enrolment, the model metadata) commits at once or not at all: Ctrl-C or
``kill -9`` in the middle of enrolling a folder tree loses only the identity
being written, never anything committed, and leaves no half-written identity;
a full disk rolls the identity back and says so. Embeddings are computed
*before* the transaction opens, so the write lock is held for milliseconds.

A gallery opened with ``mode="read"`` changes nothing in its file; one that
is not a facespace gallery is refused whatever the mode, unchanged (:mod:`.schema`).

A gallery refuses embeddings (to enrol or to search with) from a different
model or preprocessing with :class:`~facespace.errors.ModelMismatchError`.

This module is the storage. Enrolling images with a pipeline lives in
:mod:`.enrol` and the export file formats in :mod:`.export` (the
:class:`Gallery` methods of those names call them); the errors and records
are defined in :mod:`.records` and importable from here as well.
"""

from __future__ import annotations

import os
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Literal, NamedTuple, Sequence

import numpy as np

from ..errors import ModelMismatchError, check_choice
from .enrol import enroll_images as _enroll_images
from .enrol import enroll_tree as _enroll_tree
from .enrol import folder_tree
from .export import EXPORT_FORMAT, read_export, write_export
from .records import (
    EmbeddingBatch,
    EnrolResult,
    GalleryError,
    GalleryMatrix,
    IdentityExistsError,
    IdentityInfo,
    ImportResult,
    Stored,
    UnknownIdentityError,
    check_name,
)
from .schema import GALLERY_MODES, SCHEMA_VERSION, GalleryMode, open_database, write_transaction

if TYPE_CHECKING:
    from ..imageio import ImageInput
    from ..pipeline import FacePipeline

__all__ = ["Gallery", "GalleryError", "UnknownIdentityError", "IdentityExistsError", "IdentityInfo",
           "EnrolResult", "ImportResult", "ImportFile", "read_import", "Stored", "GalleryMatrix", "OnConflict",
           "GalleryMode", "GALLERY_MODES", "folder_tree", "SCHEMA_VERSION", "EXPORT_FORMAT"]

#: What :meth:`Gallery.import_` does with a name already enrolled.
OnConflict = Literal["merge", "replace", "skip", "error"]


class Gallery:
    """Identities and their embeddings in a SQLite file.

    ``mode`` (:data:`~.schema.GalleryMode`): ``"create"`` (the default) opens for writing
    and creates the gallery when ``path`` does not exist; ``"write"`` opens an existing
    gallery for writing; ``"read"`` opens one read-only and changes nothing in the file.
    An existing file that is not a facespace gallery (empty, not SQLite, another
    program's database) is refused with :class:`GalleryError` and left as it was.
    ``create=False`` is the older spelling of ``mode="write"``.
    """

    def __init__(self, path: str | os.PathLike, mode: GalleryMode = "create", timeout: float = 30.0, *,
                 create: bool | None = None) -> None:
        if isinstance(mode, bool):  # Gallery(path, False): the older positional ``create``
            mode, create = "create", mode
        if create is not None:
            mode = "create" if create else "write"
        self.path = Path(path)
        self.mode: GalleryMode = check_choice(mode, GalleryMode, "gallery mode")
        self._conn, self._schema = open_database(self.path, self.mode, timeout)

    # -- plumbing ------------------------------------------------------------
    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "Gallery":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def read_only(self) -> bool:
        return self.mode == "read"

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction: everything inside commits together or not at all
        (:func:`.schema.write_transaction`); refused on a gallery opened read-only."""
        if self.read_only:
            raise GalleryError(f"{self.path}: opened read-only; open it with mode 'write' to change it")
        with write_transaction(self._conn, self.path) as cur:
            yield cur

    def _bump(self, cur: sqlite3.Cursor) -> None:
        cur.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key='generation'")

    def _meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else row[0]

    # -- model metadata --------------------------------------------------------
    @property
    def model(self) -> str | None:
        """Name of the model every embedding was made with (None while empty)."""
        return self._meta("model")

    @property
    def preprocessing_id(self) -> str | None:
        return self._meta("preprocessing_id")

    @property
    def dim(self) -> int | None:
        value = self._meta("dim")
        return None if value is None else int(value)

    @property
    def generation(self) -> int:
        return int(self._meta("generation") or 0)

    def check_compatible(self, model: str, preprocessing_id: str, dim: int | None = None) -> None:
        """Raise :class:`ModelMismatchError` unless embeddings of this model/preprocessing fit."""
        _check_compatible(self._conn.cursor(), self.path, model, preprocessing_id, dim)

    def check_pipeline(self, pipeline: "FacePipeline") -> None:
        self.check_compatible(pipeline.model_name, pipeline.preprocessing_id, pipeline.dim)

    # -- enrolment ---------------------------------------------------------------
    def add_embeddings(
        self,
        name: str,
        vectors: np.ndarray,
        sources: Sequence[str | None] | None = None,
        *,
        model: str,
        preprocessing_id: str,
        replace: bool = False,
        hashes: Sequence[str | None] | None = None,
    ) -> int:
        """Enrol ``vectors`` (N, D) under ``name`` in one transaction; returns the identity id.

        See :meth:`store_embeddings`, which also says how many were added and how many
        the identity already had.
        """
        return self.store_embeddings(name, vectors, sources, model=model, preprocessing_id=preprocessing_id,
                                     replace=replace, hashes=hashes).identity

    def store_embeddings(self, name: str, vectors: np.ndarray, sources: Sequence[str | None] | None = None, *,
                         model: str, preprocessing_id: str, replace: bool = False,
                         hashes: Sequence[str | None] | None = None) -> Stored:
        """Enrol ``vectors`` (N, D) under ``name`` in one transaction.

        An existing identity gains the new embeddings (``replace=True`` drops its old ones
        first); one it already has (the same content hash: ``hashes[i]``, the sha256 of the
        image file, or else of the vector) is skipped and counted in ``duplicates``. The
        first enrolment fixes the gallery's model.
        """
        check_name(name)
        batch = EmbeddingBatch.of(vectors, sources, hashes)
        with self.transaction() as cur:
            stored = self._add(cur, name, batch, model, preprocessing_id, replace)
            if stored.added or replace:
                self._bump(cur)
        return stored

    def _add(self, cur: sqlite3.Cursor, name: str, batch: EmbeddingBatch, model: str, preprocessing_id: str,
             replace: bool) -> Stored:
        dim = batch.vectors.shape[1]
        _check_compatible(cur, self.path, model, preprocessing_id, dim)
        if cur.execute("SELECT 1 FROM meta WHERE key='model'").fetchone() is None:
            cur.executemany("INSERT INTO meta VALUES (?, ?)",
                            [("model", model), ("preprocessing_id", preprocessing_id), ("dim", str(dim))])
        now = time.time()
        row = cur.execute("SELECT id FROM identities WHERE name=?", (name,)).fetchone()
        if row is None:
            cur.execute("INSERT INTO identities (name, created) VALUES (?, ?)", (name, now))
            identity = cur.lastrowid
        else:
            identity = row[0]
            if replace:
                cur.execute("DELETE FROM embeddings WHERE identity_id=?", (identity,))
        # A row whose exact vector the identity already holds is a duplicate too: rows migrated from
        # schema 1 are keyed by their vectors, a re-enrolment of the same photo by the file's hash.
        rows = [r for r in batch.rows(identity, now)
                if cur.execute("SELECT 1 FROM embeddings WHERE identity_id=? AND vector=?", r[:2]).fetchone() is None]
        cur.executemany("INSERT OR IGNORE INTO embeddings (identity_id, vector, dim, source, created, content_hash) "
                        "VALUES (?, ?, ?, ?, ?, ?)", rows)
        added = max(cur.rowcount, 0) if rows else 0
        return Stored(identity=identity, added=added, duplicates=len(batch.vectors) - added)

    def enroll_images(
        self,
        pipeline: "FacePipeline",
        name: str,
        images: Iterable["ImageInput"],
        replace: bool = False,
        sources: Sequence[str] | None = None,
    ) -> EnrolResult:
        """Embed the largest face of each image and enrol them all as ``name`` (one transaction);
        see :func:`facespace.gallery.enrol.enroll_images`."""
        return _enroll_images(self, pipeline, name, images, replace=replace, sources=sources)

    def enroll_tree(
        self,
        pipeline: "FacePipeline",
        root: str | os.PathLike,
        replace: bool = False,
        progress: bool = False,
    ) -> list[EnrolResult]:
        """Enrol every ``root/<person>/`` folder's images as identity ``<person>``, one transaction
        each; see :func:`facespace.gallery.enrol.enroll_tree`."""
        return _enroll_tree(self, pipeline, root, replace=replace, progress=progress)

    # -- management ----------------------------------------------------------------
    def identities(self) -> list[IdentityInfo]:
        rows = self._conn.execute(
            "SELECT i.id, i.name, COUNT(e.id), i.created FROM identities i "
            "LEFT JOIN embeddings e ON e.identity_id = i.id GROUP BY i.id ORDER BY i.name"
        ).fetchall()
        return [IdentityInfo(*row) for row in rows]

    def __len__(self) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM identities").fetchone()[0]

    def __contains__(self, name: object) -> bool:
        return self._conn.execute("SELECT 1 FROM identities WHERE name=?", (name,)).fetchone() is not None

    def get(self, name: str) -> IdentityInfo:
        row = self._conn.execute(
            "SELECT i.id, i.name, COUNT(e.id), i.created FROM identities i "
            "LEFT JOIN embeddings e ON e.identity_id = i.id WHERE i.name=? GROUP BY i.id", (name,)
        ).fetchone()
        if row is None:
            raise UnknownIdentityError(f"no identity named {name!r} in {self.path}")
        return IdentityInfo(*row)

    def embeddings_of(self, name: str) -> tuple[np.ndarray, list[str | None]]:
        info = self.get(name)
        rows = self._conn.execute("SELECT vector, source FROM embeddings WHERE identity_id=? ORDER BY id",
                                  (info.id,)).fetchall()
        return (np.stack([np.frombuffer(v, dtype="<f4") for v, _ in rows]).astype(np.float32)
                if rows else np.zeros((0, self.dim or 0), np.float32)), [s for _, s in rows]

    def embedding_rows(self, name: str) -> EmbeddingBatch:
        """An identity's embeddings with their sources and content hashes (what a copy needs)."""
        info = self.get(name)
        column = "content_hash" if self._schema >= 2 else "NULL"
        rows = self._conn.execute(f"SELECT vector, source, {column} FROM embeddings WHERE identity_id=? "
                                  "ORDER BY id", (info.id,)).fetchall()
        vectors = np.stack([np.frombuffer(v, dtype="<f4") for v, _, _ in rows]).astype(np.float32)
        return EmbeddingBatch.of(vectors, [s for _, s, _ in rows], [h for _, _, h in rows])

    def rename(self, old: str, new: str) -> None:
        check_name(new)
        with self.transaction() as cur:
            if cur.execute("SELECT 1 FROM identities WHERE name=?", (old,)).fetchone() is None:
                raise UnknownIdentityError(f"no identity named {old!r} in {self.path}")
            if old != new and cur.execute("SELECT 1 FROM identities WHERE name=?", (new,)).fetchone():
                raise IdentityExistsError(f"an identity named {new!r} already exists in {self.path}")
            cur.execute("UPDATE identities SET name=? WHERE name=?", (new, old))
            self._bump(cur)

    def remove(self, name: str) -> int:
        """Delete an identity and its embeddings; returns how many embeddings went."""
        with self.transaction() as cur:
            row = cur.execute("SELECT id FROM identities WHERE name=?", (name,)).fetchone()
            if row is None:
                raise UnknownIdentityError(f"no identity named {name!r} in {self.path}")
            count = cur.execute("SELECT COUNT(*) FROM embeddings WHERE identity_id=?", row).fetchone()[0]
            cur.execute("DELETE FROM embeddings WHERE identity_id=?", row)
            cur.execute("DELETE FROM thumbnails WHERE identity_id=?", row)
            cur.execute("DELETE FROM identities WHERE id=?", row)
            self._bump(cur)
        return count

    def put_thumbnail(self, name: str, jpeg: bytes) -> None:
        """Keep ``jpeg`` (a small face crop, see :mod:`facespace.thumbnails`) as ``name``'s picture,
        replacing any earlier one. Pictures are not embeddings: the generation does not change."""
        if not isinstance(jpeg, (bytes, bytearray)) or not jpeg:
            raise GalleryError("a thumbnail is a non-empty JPEG byte string")
        with self.transaction() as cur:
            row = cur.execute("SELECT id FROM identities WHERE name=?", (name,)).fetchone()
            if row is None:
                raise UnknownIdentityError(f"no identity named {name!r} in {self.path}")
            cur.execute("INSERT OR REPLACE INTO thumbnails (identity_id, jpeg, created) VALUES (?, ?, ?)",
                        (row[0], bytes(jpeg), time.time()))

    def thumbnail(self, name: str) -> bytes | None:
        """``name``'s picture as JPEG bytes; None if it has none (or the gallery predates them)."""
        if self._schema < 3:  # an older gallery opened read-only: no table to read
            return None
        row = self._conn.execute("SELECT t.jpeg FROM thumbnails t JOIN identities i ON i.id = t.identity_id "
                                 "WHERE i.name=?", (name,)).fetchone()
        return None if row is None else bytes(row[0])

    def matrix(self) -> GalleryMatrix:
        """Every embedding with its identity, read in one consistent snapshot."""
        cur = self._conn.cursor()
        cur.execute("BEGIN")
        try:
            generation = int(cur.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])
            rows = cur.execute(
                "SELECT i.name, e.vector FROM embeddings e JOIN identities i ON i.id = e.identity_id "
                "ORDER BY i.name, e.id"
            ).fetchall()
        finally:
            cur.execute("COMMIT")
            cur.close()
        names: list[str] = []
        labels = np.empty(len(rows), dtype=np.int64)
        for i, (name, _) in enumerate(rows):
            if not names or names[-1] != name:
                names.append(name)
            labels[i] = len(names) - 1
        dim = self.dim or 0
        vectors = (np.frombuffer(b"".join(v for _, v in rows), dtype="<f4").reshape(len(rows), -1)
                   .astype(np.float32) if rows else np.zeros((0, dim), np.float32))
        return GalleryMatrix(names=names, labels=labels, vectors=vectors, generation=generation)

    def integrity_check(self) -> list[str]:
        """Problems found by SQLite and by our own invariants (empty list: all is well)."""
        problems = [r[0] for r in self._conn.execute("PRAGMA integrity_check").fetchall() if r[0] != "ok"]
        problems += [f"foreign key violation in {r[0]}" for r in self._conn.execute("PRAGMA foreign_key_check")]
        empty = self._conn.execute("SELECT name FROM identities WHERE id NOT IN "
                                   "(SELECT identity_id FROM embeddings)").fetchall()
        problems += [f"identity {r[0]!r} has no embeddings" for r in empty]
        dim = self.dim
        if dim is not None:
            bad = self._conn.execute("SELECT COUNT(*) FROM embeddings WHERE dim != ? OR length(vector) != ?",
                                     (dim, 4 * dim)).fetchone()[0]
            if bad:
                problems.append(f"{bad} embeddings do not have {dim} float32 values")
        if self._schema >= 2:
            unkeyed = self._conn.execute("SELECT COUNT(*) FROM embeddings WHERE content_hash IS NULL").fetchone()[0]
            if unkeyed:
                problems.append(f"{unkeyed} embeddings have no content hash")
        return problems

    # -- export / import (file formats: .export) -------------------------------------
    def export(self, path: str | os.PathLike) -> int:
        """Write every identity and embedding to ``.json`` or ``.npz`` (:mod:`.export`), each with its
        content hash; returns identities written. An earlier file at ``path`` stays as it was unless
        the new one is complete."""
        content_hash = "e.content_hash" if self._schema >= 2 else "NULL"  # v1 read-only: hashed on export
        rows = self._conn.execute(
            f"SELECT i.name, i.created, e.vector, e.source, e.created, {content_hash} FROM embeddings e "
            "JOIN identities i ON i.id = e.identity_id ORDER BY i.name, e.id"
        ).fetchall()
        return write_export(path, rows, version=SCHEMA_VERSION, model=self.model,
                            preprocessing_id=self.preprocessing_id, dim=self.dim)

    def import_(self, path: str | os.PathLike, on_conflict: OnConflict = "merge") -> int:
        """Add the identities of an export file in one transaction; returns identities imported
        (:meth:`import_file` also counts the embeddings added and those already there)."""
        return self.import_file(path, on_conflict).identities

    def import_file(self, source: "str | os.PathLike | ImportFile",
                    on_conflict: OnConflict = "merge") -> ImportResult:
        """Add the identities of an export file (a path, or what :func:`read_import` read) in one
        transaction; returns identities taken in, embeddings added and duplicates skipped.

        ``on_conflict`` says what happens to a name already enrolled: "merge"
        (add the embeddings it does not have yet), "replace", "skip" or "error".
        An embedding the identity already has (the same content hash) is skipped
        and counted, so importing a file twice changes nothing the second time.
        """
        check_choice(on_conflict, OnConflict, "on_conflict")
        loaded = source if isinstance(source, ImportFile) else read_import(source)
        if loaded.header.get("model") is None:
            return ImportResult(0, 0, 0)
        identities = added = duplicates = 0
        with self.transaction() as cur:
            for name, batch in loaded.people.items():
                exists = cur.execute("SELECT 1 FROM identities WHERE name=?", (name,)).fetchone() is not None
                if exists and on_conflict == "skip":
                    continue
                if exists and on_conflict == "error":
                    raise IdentityExistsError(f"{loaded.path}: identity {name!r} is already in {self.path}")
                stored = self._add(cur, name, batch, loaded.header["model"], loaded.header["preprocessing_id"],
                                   on_conflict == "replace")
                identities, added, duplicates = identities + 1, added + stored.added, duplicates + stored.duplicates
            if added or (identities and on_conflict == "replace"):
                self._bump(cur)
        return ImportResult(identities=identities, added=added, duplicates=duplicates)


class ImportFile(NamedTuple):
    """An export file read and checked (:func:`read_import`), its people ready to store."""

    path: Path
    header: dict
    people: dict[str, EmbeddingBatch]


def read_import(path: str | os.PathLike) -> ImportFile:
    """An export file read and checked before any gallery is opened or transaction begun."""
    header, people = read_export(path)
    batches = {}
    for name, person in people.items():
        try:
            check_name(name)
            batches[name] = EmbeddingBatch.of(person.vectors, person.sources, person.hashes, person.created)
        except GalleryError as exc:
            raise GalleryError(f"{path}: identity {name!r}: {exc}") from exc
    return ImportFile(Path(path), header, batches)


def _check_compatible(cur, path: Path, model: str, preprocessing_id: str, dim: int | None) -> None:
    stored = dict(cur.execute("SELECT key, value FROM meta WHERE key IN ('model', 'preprocessing_id', 'dim')"))
    if "model" not in stored:
        return
    if stored["model"] != model or stored["preprocessing_id"] != preprocessing_id:
        raise ModelMismatchError(
            f"gallery {path} holds embeddings of model {stored['model']!r} with preprocessing "
            f"[{stored['preprocessing_id']}], but these come from model {model!r} with preprocessing "
            f"[{preprocessing_id}]; embeddings of different models or preprocessing cannot be compared. "
            f"Use the same model and options (e.g. --model {stored['model']}), or enrol into a new gallery."
        )
    if dim is not None and int(stored["dim"]) != int(dim):
        raise ModelMismatchError(f"gallery {path} holds {stored['dim']}-dimensional embeddings, not {dim}")
