"""A gallery in PostgreSQL with pgvector: one database that many server workers and machines share.

It behaves as the SQLite :class:`~.store.Gallery` does (the :class:`~.backend.GalleryBackend`
interface): the modes ``create`` / ``write`` / ``read``, one transaction per identity, the model
and preprocessing recorded by the first enrolment and other models refused, content-keyed
idempotent writes, rename / remove / export / import and a ``generation`` counter that every
committed change moves on. Tables (schema version :data:`~.schema.SCHEMA_VERSION`):

``facespace_meta``        (key PRIMARY KEY, value): schema, generation, model, preprocessing_id, dim
``facespace_identities``  (id, name UNIQUE, created)
``facespace_embeddings``  (id, identity_id -> identities ON DELETE CASCADE, vector ``vector``,
                          dim, source, created, content_hash; UNIQUE (identity_id, content_hash))
``facespace_thumbnails``  (identity_id PRIMARY KEY -> identities ON DELETE CASCADE, jpeg)

The tables carry a ``facespace_`` prefix, so a gallery can live in a database beside other tables;
several galleries share one database in schemas of their own, named in the URL:
``postgresql://host/db?options=-csearch_path%3Dgallery2``.

Concurrency: every write is one READ COMMITTED transaction; the identity row is taken with
``INSERT ... ON CONFLICT DO NOTHING`` and the embeddings with ``ON CONFLICT (identity_id,
content_hash) DO NOTHING``, so two writers of the same person store each photo once. The generation
row is updated last in each write, so writers queue only for the moment between that update and
their commit, and a reader sees a new generation exactly when it sees the change.

Search: below ``index_min`` embeddings, :class:`~.search.Identifier` searches the matrix in memory,
exactly; from ``index_min`` on, the gallery builds a pgvector HNSW index (``CREATE INDEX
CONCURRENTLY``, after the write that crossed it: writers are not blocked) and ``index="auto"``
searches through it (:class:`PgVectorIndex`), in the database.

Needs ``psycopg`` (3) and ``pgvector`` (``pip install 'facespace[postgres]'``) and a server with the
``vector`` extension installed (``create`` runs ``CREATE EXTENSION IF NOT EXISTS vector``).
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

import numpy as np

from ..errors import FacespaceError, check_choice
from .backend import GalleryBase, check_stored_model
from .export import ExportRow
from .records import (
    EmbeddingBatch,
    GalleryError,
    GalleryMatrix,
    GalleryUnavailableError,
    IdentityExistsError,
    IdentityInfo,
    Stored,
    UnknownIdentityError,
    VectorEncoding,
    check_name,
    printable_url,
)
from .schema import SCHEMA_VERSION, GalleryMode

if TYPE_CHECKING:
    import psycopg

__all__ = ["PgGallery", "PgVectorIndex", "PG_INDEX_MIN"]

#: Embeddings from which a PostgreSQL gallery builds its HNSW index and ``auto`` search uses it
#: (the same size from which ``auto`` picks FAISS for an in-memory matrix: exact search is fast below).
PG_INDEX_MIN = 50_000
_INDEX_NAME = "facespace_embeddings_hnsw"
_TABLES = ("facespace_meta", "facespace_identities", "facespace_embeddings", "facespace_thumbnails")
_SCHEMA = (
    "CREATE EXTENSION IF NOT EXISTS vector",
    "CREATE TABLE facespace_meta (key text PRIMARY KEY, value text NOT NULL)",
    "CREATE TABLE facespace_identities (id bigserial PRIMARY KEY, name text NOT NULL UNIQUE, "
    "created double precision NOT NULL)",
    """CREATE TABLE facespace_embeddings (
        id           bigserial PRIMARY KEY,
        identity_id  bigint NOT NULL REFERENCES facespace_identities(id) ON DELETE CASCADE,
        vector       vector NOT NULL,
        dim          integer NOT NULL,
        source       text,
        created      double precision NOT NULL,
        content_hash text NOT NULL,
        UNIQUE (identity_id, content_hash)
    )""",
    "CREATE INDEX facespace_embeddings_identity ON facespace_embeddings(identity_id)",
    "CREATE TABLE facespace_thumbnails (identity_id bigint PRIMARY KEY REFERENCES facespace_identities(id) "
    "ON DELETE CASCADE, jpeg bytea NOT NULL)",
)
_IDENTITY_ROWS = ("SELECT i.id, i.name, COUNT(e.id), i.created FROM facespace_identities i "
                  "LEFT JOIN facespace_embeddings e ON e.identity_id = i.id")


def _driver():
    try:
        import psycopg
        from pgvector.psycopg import register_vector
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise FacespaceError("PostgreSQL galleries need psycopg and pgvector: pip install 'facespace[postgres]'") \
            from exc
    return psycopg, register_vector


class PgGallery(GalleryBase):
    """Identities and their embeddings in a PostgreSQL database (see the module's notes).

    ``url``: a ``postgresql://`` URL; ``mode`` as for :class:`~.store.Gallery` (``create`` makes the
    tables where there are none, ``write`` needs them, ``read`` opens a read-only session);
    ``index_min``: embeddings from which the HNSW index is built and used (:data:`PG_INDEX_MIN`);
    ``encoding``: only ``"float32"`` (pgvector's ``vector``); int8 galleries are SQLite files.
    """

    def __init__(self, url: str, mode: GalleryMode = "create", *, index_min: int = PG_INDEX_MIN,
                 connect_timeout: float = 10.0, encoding: VectorEncoding | None = None) -> None:
        if encoding not in (None, "float32"):
            raise GalleryError(f"a PostgreSQL gallery stores float32 vectors (pgvector), not {encoding!r}; "
                               "int8 galleries are SQLite files")
        psycopg, self._register_vector = _driver()
        self.url, self.index_min, self._timeout = url, int(index_min), max(1, int(connect_timeout))
        self.mode: GalleryMode = check_choice(mode, GalleryMode, "gallery mode")
        self._lock = threading.RLock()  # one connection, shared by a server's threads
        self._errors, self._lost = psycopg.Error, psycopg.OperationalError
        self._conn = self._connect()
        try:
            self._open()
        except BaseException:
            self._conn.close()
            raise
        self._indexed = self._index_ready()

    def _connect(self) -> "psycopg.Connection":
        import psycopg

        try:
            return psycopg.connect(self.url, autocommit=True, connect_timeout=self._timeout)
        except psycopg.Error as exc:
            raise GalleryUnavailableError(f"{self.location}: cannot connect to the gallery's database "
                                          f"({_first_line(exc)})") from exc

    def _prepare(self, conn: "psycopg.Connection") -> None:
        """What every session of an existing gallery needs: the vector type's adapters, read-only if asked."""
        self._register_vector(conn)
        if self.mode == "read":
            conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")

    def _connection(self) -> "psycopg.Connection":
        """The open connection, made again when the last one was lost (a server restart, a network cut)."""
        if self._conn.closed:
            self._conn = self._connect()
            self._prepare(self._conn)
        return self._conn

    def _open(self) -> None:
        version = self._schema_version()
        if version is None:
            if self.mode != "create":
                raise GalleryError(f"{self.location}: no such gallery (no facespace tables in this database)")
            self._create()
            version = self._schema_version()
        if version > SCHEMA_VERSION:
            raise GalleryError(f"{self.location}: gallery schema {version} is newer than this facespace understands "
                               f"({SCHEMA_VERSION}); upgrade facespace")
        self._prepare(self._conn)

    def _schema_version(self) -> int | None:
        """The gallery's schema version; None where the database has none of its tables."""
        with self._cursor() as cur:
            present = [t for t in _TABLES if _table_exists(cur, t)]
            if not present:
                return None
            row = (cur.execute("SELECT value FROM facespace_meta WHERE key='schema'").fetchone()
                   if "facespace_meta" in present else None)
        if row is None or not str(row[0]).isdigit() or len(present) != len(_TABLES):
            raise GalleryError(f"{self.location} is not a facespace gallery (facespace_ tables without facespace's "
                               "schema record, or some of them missing)")
        return int(row[0])

    def _create(self) -> None:
        """The tables, in one transaction; two creators at once queue on an advisory lock, the second finds
        them made."""
        with self.transaction() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('facespace_gallery_create'))")
            if _table_exists(cur, "facespace_meta"):  # made by the creator we waited for
                return
            for statement in _SCHEMA:
                cur.execute(statement)
            cur.executemany("INSERT INTO facespace_meta VALUES (%s, %s)",
                            [("schema", str(SCHEMA_VERSION)), ("generation", "0")])

    # -- plumbing ------------------------------------------------------------
    @property
    def location(self) -> str:
        return printable_url(self.url)

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def _cursor(self, binary: bool = False) -> Iterator["psycopg.Cursor"]:
        """A cursor on the shared connection, under its lock; a database failure is one GalleryError."""
        with self._lock:
            try:
                with self._connection().cursor(binary=binary) as cur:
                    yield cur
            except self._errors as exc:
                raise self._failure(exc, "the gallery's database failed") from exc

    @contextmanager
    def transaction(self) -> Iterator["psycopg.Cursor"]:
        """One write transaction: everything inside commits together or not at all; refused read-only."""
        self._refuse_read_only()
        with self._lock:
            try:
                conn = self._connection()
                with conn.transaction(), conn.cursor() as cur:
                    yield cur
            except self._errors as exc:
                raise self._failure(exc, "cannot write to the gallery", "; the change was rolled back, what was "
                                    "committed before is intact") from exc

    @contextmanager
    def _snapshot(self, binary: bool = False) -> Iterator["psycopg.Cursor"]:
        """A read-only REPEATABLE READ transaction: several statements see one committed state."""
        with self._lock:
            try:
                conn = self._connection()
                with conn.transaction(), conn.cursor(binary=binary) as cur:
                    cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    yield cur
            except self._errors as exc:
                raise self._failure(exc, "the gallery's database failed") from exc

    def _failure(self, exc: Exception, what: str, after: str = "") -> GalleryError:
        """One GalleryError for a database error; GalleryUnavailableError when the connection was lost (the
        next call connects again)."""
        kind = GalleryUnavailableError if isinstance(exc, self._lost) or self._conn.closed else GalleryError
        return kind(f"{self.location}: {what} ({_first_line(exc)}){after}")

    def _meta(self, key: str) -> str | None:
        with self._cursor() as cur:
            row = cur.execute("SELECT value FROM facespace_meta WHERE key=%s", (key,)).fetchone()
        return None if row is None else row[0]

    def _stored_model(self, cur) -> dict[str, str]:
        return dict(cur.execute("SELECT key, value FROM facespace_meta "
                                "WHERE key IN ('model', 'preprocessing_id', 'dim')").fetchall())

    def _has(self, cur, name: str) -> bool:
        return cur.execute("SELECT 1 FROM facespace_identities WHERE name=%s", (name,)).fetchone() is not None

    def _bump(self, cur) -> None:
        cur.execute("UPDATE facespace_meta SET value = (value::bigint + 1)::text WHERE key='generation'")

    # -- model metadata (model, preprocessing_id, dim, generation: backend.GalleryBase) --------
    def check_compatible(self, model: str, preprocessing_id: str, dim: int | None = None) -> None:
        with self._cursor() as cur:
            stored = self._stored_model(cur)
        check_stored_model(stored, self.location, model, preprocessing_id, dim)

    # -- writes ------------------------------------------------------------------
    def _add(self, cur, name: str, batch: EmbeddingBatch, model: str, preprocessing_id: str,
             replace: bool) -> Stored:
        dim = batch.vectors.shape[1]
        check_stored_model(self._stored_model(cur), self.location, model, preprocessing_id, dim)
        cur.executemany("INSERT INTO facespace_meta VALUES (%s, %s) ON CONFLICT (key) DO NOTHING",
                        [("model", model), ("preprocessing_id", preprocessing_id), ("dim", str(dim))])
        # a first enrolment of another model may have committed meanwhile: it wins, this one is refused
        check_stored_model(self._stored_model(cur), self.location, model, preprocessing_id, dim)
        now = time.time()
        row = cur.execute("INSERT INTO facespace_identities (name, created) VALUES (%s, %s) "
                          "ON CONFLICT (name) DO NOTHING RETURNING id", (name, now)).fetchone()
        if row is None:
            row = cur.execute("SELECT id FROM facespace_identities WHERE name=%s", (name,)).fetchone()
            if replace:
                cur.execute("DELETE FROM facespace_embeddings WHERE identity_id=%s", row)
        identity = row[0]
        stamps = batch.created if batch.created is not None else [now] * len(batch.vectors)
        # A row whose exact vector the identity already holds is a duplicate too (as in the SQLite gallery).
        # executemany sends the rows in one pipeline; its rowcount is the rows inserted, all statements summed.
        cur.executemany("INSERT INTO facespace_embeddings (identity_id, vector, dim, source, created, content_hash) "
                        "SELECT %(i)s, %(v)s, %(d)s, %(s)s, %(t)s, %(h)s WHERE NOT EXISTS (SELECT 1 FROM "
                        "facespace_embeddings WHERE identity_id = %(i)s AND vector = %(v)s) "
                        "ON CONFLICT (identity_id, content_hash) DO NOTHING",
                        [{"i": identity, "v": vector, "d": dim, "s": source, "t": stamp, "h": key}
                         for vector, source, stamp, key in zip(batch.vectors, batch.sources, stamps, batch.hashes)])
        added = max(cur.rowcount, 0)
        return Stored(identity=identity, added=added, duplicates=len(batch.vectors) - added)

    def rename(self, old: str, new: str) -> None:
        check_name(new)
        with self.transaction() as cur:
            if not self._has(cur, old):
                raise UnknownIdentityError(f"no identity named {old!r} in {self.location}")
            if old != new and self._has(cur, new):
                raise IdentityExistsError(f"an identity named {new!r} already exists in {self.location}")
            cur.execute("UPDATE facespace_identities SET name=%s WHERE name=%s", (new, old))
            self._bump(cur)

    def remove(self, name: str) -> int:
        """Delete an identity, its embeddings and its thumbnail; returns how many embeddings went."""
        with self.transaction() as cur:
            row = cur.execute("SELECT id FROM facespace_identities WHERE name=%s FOR UPDATE", (name,)).fetchone()
            if row is None:
                raise UnknownIdentityError(f"no identity named {name!r} in {self.location}")
            cur.execute("DELETE FROM facespace_embeddings WHERE identity_id=%s", row)
            count = cur.rowcount
            cur.execute("DELETE FROM facespace_identities WHERE id=%s", row)
            self._bump(cur)
        return count

    def put_thumbnail(self, name: str, jpeg: bytes) -> None:
        """Store ``jpeg`` (JPEG bytes) as the identity's thumbnail, replacing one it had."""
        if not isinstance(jpeg, (bytes, bytearray)) or not bytes(jpeg[:2]) == b"\xff\xd8":
            raise GalleryError(f"a thumbnail must be JPEG bytes (identity {name!r})")
        with self.transaction() as cur:
            row = cur.execute("SELECT id FROM facespace_identities WHERE name=%s", (name,)).fetchone()
            if row is None:
                raise UnknownIdentityError(f"no identity named {name!r} in {self.location}")
            cur.execute("INSERT INTO facespace_thumbnails VALUES (%s, %s) ON CONFLICT (identity_id) "
                        "DO UPDATE SET jpeg = EXCLUDED.jpeg", (row[0], bytes(jpeg)))

    def thumbnail(self, name: str) -> bytes | None:
        """The identity's thumbnail (None: it has none); :class:`UnknownIdentityError` if no such identity."""
        info = self.get(name)
        with self._cursor() as cur:
            row = cur.execute("SELECT jpeg FROM facespace_thumbnails WHERE identity_id=%s", (info.id,)).fetchone()
        return None if row is None else bytes(row[0])

    # -- reads ---------------------------------------------------------------------
    def identities(self) -> list[IdentityInfo]:
        with self._cursor() as cur:
            rows = cur.execute(_IDENTITY_ROWS + ' GROUP BY i.id ORDER BY i.name COLLATE "C"').fetchall()
        return [IdentityInfo(*row) for row in rows]

    def __len__(self) -> int:
        with self._cursor() as cur:
            return cur.execute("SELECT COUNT(*) FROM facespace_identities").fetchone()[0]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        with self._cursor() as cur:
            return self._has(cur, name)

    def get(self, name: str) -> IdentityInfo:
        with self._cursor() as cur:
            row = cur.execute(_IDENTITY_ROWS + " WHERE i.name=%s GROUP BY i.id", (name,)).fetchone()
        if row is None:
            raise UnknownIdentityError(f"no identity named {name!r} in {self.location}")
        return IdentityInfo(*row)

    def embedding_rows(self, name: str) -> EmbeddingBatch:
        """An identity's embeddings with their sources and content hashes (what a copy needs)."""
        info = self.get(name)
        with self._cursor(binary=True) as cur:
            rows = cur.execute("SELECT vector, source, content_hash FROM facespace_embeddings WHERE identity_id=%s "
                               "ORDER BY id", (info.id,)).fetchall()
        return EmbeddingBatch.of(_stack([v for v, _, _ in rows], self.dim), [s for _, s, _ in rows],
                                 [h for _, _, h in rows])

    def embeddings_of(self, name: str) -> tuple[np.ndarray, list[str | None]]:
        rows = self.embedding_rows(name)
        return rows.vectors, rows.sources

    def matrix(self) -> GalleryMatrix:
        """Every embedding with its identity and row id, read in one consistent snapshot."""
        with self._snapshot(binary=True) as cur:
            _raw_vectors(cur)
            generation = int(cur.execute("SELECT value FROM facespace_meta WHERE key='generation'").fetchone()[0])
            dim_row = cur.execute("SELECT value FROM facespace_meta WHERE key='dim'").fetchone()
            rows = cur.execute('SELECT i.name, e.id, e.vector FROM facespace_embeddings e JOIN facespace_identities i '
                               'ON i.id = e.identity_id ORDER BY i.name COLLATE "C", e.id').fetchall()
        names: list[str] = []
        labels = np.empty(len(rows), dtype=np.int64)
        for i, (name, _, _) in enumerate(rows):
            if not names or names[-1] != name:
                names.append(name)
            labels[i] = len(names) - 1
        dim = None if dim_row is None else int(dim_row[0])
        vectors = _from_raw([v for _, _, v in rows], dim)
        ids = np.array([r[1] for r in rows], dtype=np.int64)
        return GalleryMatrix(names=names, labels=labels, vectors=vectors, generation=generation, ids=ids)

    def integrity_check(self) -> list[str]:
        """Problems found by our own invariants (empty list: all is well)."""
        with self._snapshot() as cur:
            empty = cur.execute("SELECT name FROM facespace_identities WHERE id NOT IN "
                                "(SELECT identity_id FROM facespace_embeddings)").fetchall()
            dim = cur.execute("SELECT value FROM facespace_meta WHERE key='dim'").fetchone()
            bad = 0 if dim is None else cur.execute(
                "SELECT COUNT(*) FROM facespace_embeddings WHERE dim != %s OR vector_dims(vector) != %s",
                (int(dim[0]), int(dim[0]))).fetchone()[0]
        problems = [f"identity {r[0]!r} has no embeddings" for r in empty]
        if bad:
            problems.append(f"{bad} embeddings do not have {dim[0]} float32 values")
        return problems

    def _export_rows(self) -> list[ExportRow]:
        with self._cursor(binary=True) as cur:
            rows = cur.execute('SELECT i.name, i.created, e.vector, e.source, e.created, e.content_hash '
                               'FROM facespace_embeddings e JOIN facespace_identities i ON i.id = e.identity_id '
                               'ORDER BY i.name COLLATE "C", e.id').fetchall()
        return [(n, c, v.to_numpy().astype("<f4").tobytes(), s, t, h) for n, c, v, s, t, h in rows]

    # -- the vector index --------------------------------------------------------------
    def _index_ready(self) -> bool:
        with self._cursor() as cur:
            row = cur.execute("SELECT x.indisvalid FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid "
                              "WHERE c.relname = %s AND pg_table_is_visible(c.oid)", (_INDEX_NAME,)).fetchone()
        return bool(row and row[0])

    def _after_write(self) -> None:
        """Build the HNSW index once the gallery holds ``index_min`` embeddings (once: it is kept up to date)."""
        if self._indexed or self.dim is None:
            return
        with self._cursor() as cur:
            count = cur.execute("SELECT COUNT(*) FROM (SELECT 1 FROM facespace_embeddings LIMIT %s) t",
                                (self.index_min,)).fetchone()[0]
        if count >= self.index_min:
            self.build_index()

    def build_index(self) -> None:
        """Create the HNSW index (L2 over the gallery's ``dim``) if it is not there; writers go on meanwhile."""
        dim = self.dim
        if dim is None:
            raise GalleryError(f"{self.location}: the gallery is empty; there is nothing to index")
        self._refuse_read_only()
        with self._cursor() as cur:
            cur.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {_INDEX_NAME} ON facespace_embeddings "
                        f"USING hnsw ((vector::vector({dim})) vector_l2_ops)")
        self._indexed = self._index_ready()

    def native_index(self, matrix: GalleryMatrix, kind: str) -> "PgVectorIndex | None":
        """The database's own index for ``kind="pgvector"``, and for ``"auto"`` from ``index_min`` rows
        on once the HNSW index exists; None otherwise (search in memory)."""
        if matrix.ids is None or not len(matrix):
            return None
        if kind == "pgvector" or (kind == "auto" and len(matrix) >= self.index_min and self._index_ready()):
            return PgVectorIndex(self, matrix.ids, matrix.vectors.shape[1])
        return None


class PgVectorIndex:
    """The :class:`~.search.Index` of a PostgreSQL gallery: nearest rows by pgvector's ``<->`` (the HNSW
    index where it exists, else an exact scan), answered as row numbers of the matrix it was made for.
    Rows committed after that matrix are not among the answers (the identifier is rebuilt on the next
    generation)."""

    kind = "pgvector"

    def __init__(self, gallery: PgGallery, ids: np.ndarray, dim: int, ef_search: int = 100) -> None:
        self._gallery, self.dim, self.ef_search = gallery, int(dim), int(ef_search)
        self._order = np.argsort(ids, kind="stable")
        self._sorted = np.asarray(ids, dtype=np.int64)[self._order]

    def __len__(self) -> int:
        return len(self._sorted)

    @property
    def code_bytes(self) -> int:
        return 4 * self.dim

    @property
    def bytes_per_vector(self) -> float:
        """Client memory per row: the id map (the vectors and the graph are the server's)."""
        return 16.0

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        k = max(1, min(int(k), len(self)))
        out_d = np.full((len(queries), k), np.inf, np.float32)
        out_i = np.full((len(queries), k), -1, np.int64)
        expression = f"vector::vector({self.dim}) <-> %s::vector({self.dim})"
        with self._gallery._snapshot() as cur:
            cur.execute(f"SET LOCAL hnsw.ef_search = {min(max(self.ef_search, k), 1000)}")
            for q, query in enumerate(queries):
                rows = cur.execute(f"SELECT id, {expression} FROM facespace_embeddings ORDER BY {expression} LIMIT %s",
                                   (query, query, k)).fetchall()
                self._place(rows, out_d[q], out_i[q])
        return out_d, out_i

    def _place(self, rows: list[tuple[int, float]], distances: np.ndarray, numbers: np.ndarray) -> None:
        """Rows (id, L2 distance) as squared distances and matrix row numbers; unknown ids left out."""
        j = 0
        for row_id, distance in rows:
            at = int(np.searchsorted(self._sorted, row_id))
            if at < len(self._sorted) and self._sorted[at] == row_id:
                distances[j], numbers[j] = min(max(float(distance) ** 2, 0.0), 4.0), self._order[at]
                j += 1


def _stack(vectors: list, dim: int | None) -> np.ndarray:
    """pgvector values as one (N, D) float32 array."""
    if not vectors:
        return np.zeros((0, dim or 0), np.float32)
    return np.stack([v.to_numpy() for v in vectors]).astype(np.float32)


def _raw_vectors(cur) -> None:
    """Make ``cur`` return pgvector's binary values as bytes (for :func:`_from_raw`): a whole gallery
    is read without one Python object per vector."""
    from psycopg.adapt import Loader
    from psycopg.pq import Format

    class RawLoader(Loader):
        format = Format.BINARY

        def load(self, data) -> bytes:
            return bytes(data)

    oid = cur.adapters.types.get("vector").oid
    cur.adapters.register_loader(oid, RawLoader)


def _from_raw(values: list[bytes], dim: int | None) -> np.ndarray:
    """(N, D) float32 from pgvector's binary form: a 2-byte dimension, 2 unused bytes, D big-endian float4."""
    if not values:
        return np.zeros((0, dim or 0), np.float32)
    width = len(values[0]) // 4
    return np.frombuffer(b"".join(values), dtype=">f4").reshape(len(values), width)[:, 1:].astype(np.float32)


def _table_exists(cur, name: str) -> bool:
    """Whether ``name`` is a table on the search path, read from pg_class with this statement's snapshot
    (``to_regclass`` may answer from a catalog cache older than a commit we just waited for)."""
    return cur.execute("SELECT 1 FROM pg_class WHERE relname = %s AND relkind IN ('r', 'p') "
                       "AND pg_table_is_visible(oid)", (name,)).fetchone() is not None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
