"""A gallery of enrolled identities, kept in one SQLite file.

Tables (schema version 3, see :mod:`.schema`):

``identities``  (id, name UNIQUE, created)
``embeddings``  (id, identity_id -> identities.id ON DELETE CASCADE, vector BLOB of
                float32 or int8 codes (the gallery's ``encoding``), dim, source, created, content_hash;
                UNIQUE (identity_id, content_hash))
``thumbnails``  (identity_id PRIMARY KEY -> identities.id ON DELETE CASCADE, jpeg, created):
                one small face crop per identity for people to look at; a rename keeps it,
                a removal takes it along
``meta``        (key, value): the ``model`` and ``preprocessing_id`` every
                embedding was made with (set by the first enrolment), their
                ``dim``, their ``encoding`` (``float32``, or int8 codes for a gallery created
                with ``encoding="int8"``: 1 byte a value; absent in older galleries: float32), the schema version and a ``generation`` counter that
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

This module is the SQLite storage: the primitives of :class:`~.backend.GalleryBase`, which holds
what every backend shares (writes of one identity, imports, exports, enrolment; the PostgreSQL
backend is :mod:`.pg_store`). Enrolling images with a pipeline lives in :mod:`.enrol` and the
export file formats in :mod:`.export`; the errors and records are defined in :mod:`.records`
and importable from here as well.
"""

from __future__ import annotations

import os
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import check_choice
from .backend import GalleryBase, ImportFile, OnConflict, check_stored_model, read_import
from .enrol import folder_tree
from .export import EXPORT_FORMAT
from .records import (
    ENCODING_IDS,
    EmbeddingBatch,
    EnrolResult,
    GalleryError,
    GalleryMatrix,
    IdentityExistsError,
    IdentityInfo,
    ImportResult,
    Stored,
    UnknownIdentityError,
    VectorEncoding,
    bytes_per_value,
    check_name,
    decode_vectors,
)
from .schema import GALLERY_MODES, SCHEMA_VERSION, GalleryMode, open_database, write_transaction

__all__ = ["Gallery", "GalleryError", "UnknownIdentityError", "IdentityExistsError", "IdentityInfo",
           "EnrolResult", "ImportResult", "ImportFile", "read_import", "Stored", "GalleryMatrix", "OnConflict",
           "GalleryMode", "GALLERY_MODES", "folder_tree", "SCHEMA_VERSION", "EXPORT_FORMAT"]

class Gallery(GalleryBase):
    """Identities and their embeddings in a SQLite file.

    ``mode`` (:data:`~.schema.GalleryMode`): ``"create"`` (the default) opens for writing
    and creates the gallery when ``path`` does not exist; ``"write"`` opens an existing
    gallery for writing; ``"read"`` opens one read-only and changes nothing in the file.
    An existing file that is not a facespace gallery (empty, not SQLite, another
    program's database) is refused with :class:`GalleryError` and left as it was.
    ``create=False`` is the older spelling of ``mode="write"``. ``encoding`` (``"float32"`` or
    ``"int8"``, :data:`~.records.VectorEncoding`): how a new gallery stores its vectors (fixed by the
    first enrolment; an existing gallery of another encoding is refused).
    """

    def __init__(self, path: str | os.PathLike, mode: GalleryMode = "create", timeout: float = 30.0, *,
                 create: bool | None = None, encoding: VectorEncoding | None = None) -> None:
        if isinstance(mode, bool):  # Gallery(path, False): the older positional ``create``
            mode, create = "create", mode
        if create is not None:
            mode = "create" if create else "write"
        self.path = Path(path)
        self.mode: GalleryMode = check_choice(mode, GalleryMode, "gallery mode")
        self._requested_encoding = None if encoding is None else check_choice(encoding, VectorEncoding,
                                                                              "vector encoding")
        self._conn, self._schema = open_database(self.path, self.mode, timeout)
        try:
            self._check_encoding_request()
        except GalleryError:
            self._conn.close()
            raise

    # -- plumbing ------------------------------------------------------------
    def close(self) -> None:
        self._conn.close()

    @property
    def location(self) -> str:
        return str(self.path)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction: everything inside commits together or not at all
        (:func:`.schema.write_transaction`); refused on a gallery opened read-only."""
        self._refuse_read_only()
        with write_transaction(self._conn, self.path) as cur:
            yield cur

    def _has(self, cur: sqlite3.Cursor, name: str) -> bool:
        return cur.execute("SELECT 1 FROM identities WHERE name=?", (name,)).fetchone() is not None

    def _bump(self, cur: sqlite3.Cursor) -> None:
        cur.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key='generation'")

    def _meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else row[0]

    # -- model metadata (model, preprocessing_id, dim, generation: backend.GalleryBase) --------
    def check_compatible(self, model: str, preprocessing_id: str, dim: int | None = None) -> None:
        """Raise :class:`ModelMismatchError` unless embeddings of this model/preprocessing fit."""
        _check_compatible(self._conn.cursor(), self.path, model, preprocessing_id, dim)

    # -- enrolment (store_embeddings, enroll_images: backend.GalleryBase) --------------
    def _add(self, cur: sqlite3.Cursor, name: str, batch: EmbeddingBatch, model: str, preprocessing_id: str,
             replace: bool) -> Stored:
        dim = batch.vectors.shape[1]
        _check_compatible(cur, self.path, model, preprocessing_id, dim)
        encoding = self.encoding
        if cur.execute("SELECT 1 FROM meta WHERE key='model'").fetchone() is None:
            cur.executemany("INSERT INTO meta VALUES (?, ?)",
                            [("model", model), ("preprocessing_id", preprocessing_id), ("dim", str(dim)),
                             ("encoding", ENCODING_IDS[encoding])])
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
        rows = [r for r in batch.rows(identity, now, encoding)
                if cur.execute("SELECT 1 FROM embeddings WHERE identity_id=? AND vector=?", r[:2]).fetchone() is None]
        cur.executemany("INSERT OR IGNORE INTO embeddings (identity_id, vector, dim, source, created, content_hash) "
                        "VALUES (?, ?, ?, ?, ?, ?)", rows)
        added = max(cur.rowcount, 0) if rows else 0
        return Stored(identity=identity, added=added, duplicates=len(batch.vectors) - added)

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
        return self._decode([v for v, _ in rows]), [s for _, s in rows]

    def embedding_rows(self, name: str) -> EmbeddingBatch:
        """An identity's embeddings with their sources and content hashes (what a copy needs)."""
        info = self.get(name)
        column = "content_hash" if self._schema >= 2 else "NULL"
        rows = self._conn.execute(f"SELECT vector, source, {column} FROM embeddings WHERE identity_id=? "
                                  "ORDER BY id", (info.id,)).fetchall()
        vectors = self._decode([v for v, _, _ in rows])
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
        if not isinstance(jpeg, (bytes, bytearray)) or not bytes(jpeg[:2]) == b"\xff\xd8":
            raise GalleryError(f"a thumbnail must be JPEG bytes (identity {name!r})")
        with self.transaction() as cur:
            row = cur.execute("SELECT id FROM identities WHERE name=?", (name,)).fetchone()
            if row is None:
                raise UnknownIdentityError(f"no identity named {name!r} in {self.path}")
            cur.execute("INSERT OR REPLACE INTO thumbnails (identity_id, jpeg, created) VALUES (?, ?, ?)",
                        (row[0], bytes(jpeg), time.time()))

    def thumbnail(self, name: str) -> bytes | None:
        """``name``'s picture as JPEG bytes; None if it has none (or the gallery predates them);
        :class:`UnknownIdentityError` if there is no such identity (as the PostgreSQL backend)."""
        self.get(name)
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
        vectors = self._decode([v for _, v in rows])
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
            encoding = self.encoding
            bad = self._conn.execute("SELECT COUNT(*) FROM embeddings WHERE dim != ? OR length(vector) != ?",
                                     (dim, bytes_per_value(encoding) * dim)).fetchone()[0]
            if bad:
                problems.append(f"{bad} embeddings do not have {dim} {encoding} values")
        if self._schema >= 2:
            unkeyed = self._conn.execute("SELECT COUNT(*) FROM embeddings WHERE content_hash IS NULL").fetchone()[0]
            if unkeyed:
                problems.append(f"{unkeyed} embeddings have no content hash")
        return problems

    # -- export / import (file formats: .export; export, import_file: backend.GalleryBase) ----------
    def _export_rows(self) -> list:
        content_hash = "e.content_hash" if self._schema >= 2 else "NULL"  # v1 read-only: hashed on export
        rows = self._conn.execute(
            f"SELECT i.name, i.created, e.vector, e.source, e.created, {content_hash} FROM embeddings e "
            "JOIN identities i ON i.id = e.identity_id ORDER BY i.name, e.id"
        ).fetchall()
        if self.encoding == "float32":
            return rows
        floats = self._decode([r[2] for r in rows]).astype("<f4")  # exports hold float32 rows (and say so)
        return [(*r[:2], v.tobytes(), *r[3:]) for r, v in zip(rows, floats)]

    def _decode(self, blobs: list[bytes]) -> np.ndarray:
        return decode_vectors(blobs, self.dim or 0, self.encoding)


def _check_compatible(cur, path: Path, model: str, preprocessing_id: str, dim: int | None) -> None:
    stored = dict(cur.execute("SELECT key, value FROM meta WHERE key IN ('model', 'preprocessing_id', 'dim')"))
    check_stored_model(stored, str(path), model, preprocessing_id, dim)
