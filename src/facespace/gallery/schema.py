"""Opening a gallery file: what counts as one, how it is opened, its schema and migrations.

A facespace gallery is an SQLite file with a ``meta`` table that holds a
``schema`` row. Any other file (empty, not SQLite, or an SQLite database of
something else) is refused with :class:`~.records.GalleryError` before a
connection that could write to it is opened, so it is left as it was, byte
for byte and journal mode included.

How a gallery is opened (:data:`GalleryMode`):

``create``  for writing; a ``path`` that does not exist becomes a new, empty
            gallery. The new file is built under a temporary name and linked
            into place only when complete, so another process never sees a
            half-made gallery and two creators never overwrite each other.
``write``   for writing; the gallery must exist.
``read``    read-only, with SQLite's ``mode=ro``: no tables are created, no
            journal mode is set and nothing is migrated.

Opening for writing brings an older gallery up to :data:`SCHEMA_VERSION`, in
one transaction. Version 2 keys each embedding by (identity, content hash):
the sha256 of the image file it came from, or of its own float32 bytes when it
had no file; a UNIQUE index makes storing the same embedding twice impossible.
Version 3 adds ``thumbnails``: one small JPEG face crop per identity, keyed by the
identity's id (so a rename keeps it and removing the identity removes it).
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Literal, Sequence, get_args

from ..errors import check_choice
from .records import GalleryError, vector_hash

__all__ = ["GalleryMode", "GALLERY_MODES", "SCHEMA_VERSION", "open_database", "write_transaction", "connect",
           "check_sqlite_file", "create_database"]

#: How :class:`~.store.Gallery` opens its file (see the module's notes).
GalleryMode = Literal["create", "write", "read"]
GALLERY_MODES: tuple[str, ...] = get_args(GalleryMode)

#: 1: identities, embeddings, meta. 2: embeddings.content_hash, UNIQUE (identity_id, content_hash).
#: 3: thumbnails (identity_id PRIMARY KEY -> identities.id ON DELETE CASCADE, jpeg BLOB, created).
SCHEMA_VERSION = 3

_SQLITE_MAGIC = b"SQLite format 3\x00"

_UNIQUE_INDEX = "CREATE UNIQUE INDEX IF NOT EXISTS embeddings_content ON embeddings(identity_id, content_hash)"

_THUMBNAILS = """CREATE TABLE IF NOT EXISTS thumbnails (
        identity_id INTEGER PRIMARY KEY REFERENCES identities(id) ON DELETE CASCADE,
        jpeg        BLOB NOT NULL,
        created     REAL NOT NULL
    )"""

_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE identities (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created REAL NOT NULL)",
    """CREATE TABLE embeddings (
        id           INTEGER PRIMARY KEY,
        identity_id  INTEGER NOT NULL REFERENCES identities(id) ON DELETE CASCADE,
        vector       BLOB NOT NULL,
        dim          INTEGER NOT NULL,
        source       TEXT,
        created      REAL NOT NULL,
        content_hash TEXT
    )""",
    "CREATE INDEX embeddings_identity ON embeddings(identity_id)",
    _UNIQUE_INDEX,
    _THUMBNAILS,
)


def open_database(path: Path, mode: GalleryMode, timeout: float) -> tuple[sqlite3.Connection, int]:
    """A connection to the gallery at ``path`` opened as ``mode`` says, and its schema version."""
    check_choice(mode, GalleryMode, "gallery mode")
    if not path.exists() and not path.is_symlink():
        if mode != "create":
            raise GalleryError(f"{path}: no such gallery")
        _create(path, timeout)
    version = _gallery_version(path, timeout)
    try:
        conn = connect(path, "ro" if mode == "read" else "rw", timeout)
    except sqlite3.Error as exc:
        raise GalleryError(f"{path}: cannot open the gallery ({exc})") from exc
    if mode == "read":
        return conn, version
    try:
        _prepare_for_writing(conn, path, version)
    except BaseException:
        conn.close()
        raise
    return conn, SCHEMA_VERSION


def _prepare_for_writing(conn: sqlite3.Connection, path: Path, version: int) -> None:
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
    except sqlite3.Error as exc:
        raise GalleryError(f"{path}: cannot open the gallery for writing ({exc})") from exc
    if version < SCHEMA_VERSION:
        _migrate(conn, path)


def connect(path: Path, how: Literal["ro", "rw", "rwc"], timeout: float) -> sqlite3.Connection:
    """An autocommit connection by URI, so ``mode=ro`` / ``mode=rw`` never create a file (galleries
    and facespace's other SQLite files, the attendance log)."""
    uri = f"{path.resolve().as_uri()}?mode={how}"
    return sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None, check_same_thread=False)


def _gallery_version(path: Path, timeout: float) -> int:
    """The schema version of the gallery at ``path``; GalleryError (the file untouched) if it is none."""
    check_sqlite_file(path, "gallery", "a facespace gallery", GalleryError)
    sides = [path.with_name(path.name + s) for s in ("-wal", "-shm")]
    existed = [side.exists() for side in sides]
    try:
        tables, row = _probe(path, timeout)
    except sqlite3.Error as exc:
        _remove_new_sides(sides, existed)
        raise GalleryError(f"{path} is not a facespace gallery ({exc})") from exc
    if row is None or not str(row[0]).isdigit() or not _GALLERY_TABLES <= tables:
        _remove_new_sides(sides, existed)  # a WAL database's read-only probe makes them: leave no trace
        raise GalleryError(f"{path} is not a facespace gallery (an SQLite database without facespace's "
                           "schema record and tables)")
    version = int(row[0])
    if version > SCHEMA_VERSION:
        raise GalleryError(f"{path}: gallery schema {version} is newer than this facespace understands "
                           f"({SCHEMA_VERSION}); upgrade facespace")
    return version


_GALLERY_TABLES = frozenset({"meta", "identities", "embeddings"})


def _probe(path: Path, timeout: float) -> tuple[set[str], tuple | None]:
    """(table names, the schema row or None) read through a read-only connection."""
    conn = connect(path, "ro", timeout)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        row = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone() if "meta" in tables else None
    finally:
        conn.close()
    return tables, row


def check_sqlite_file(path: Path, what: str, kind: str, error: type[Exception]) -> None:
    """``error`` unless ``path`` is a readable SQLite file (not a folder, not empty, the SQLite
    header); read with a plain ``open``, so a file refused is left untouched. ``what`` names the
    file in messages ("gallery"), ``kind`` what it is not, with its article ("a facespace gallery")."""
    if path.is_dir():
        raise error(f"{path}: is a folder, not {kind} file")
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(_SQLITE_MAGIC))
    except OSError as exc:
        raise error(f"{path}: cannot read the {what} ({exc.strerror or exc})") from exc
    if head != _SQLITE_MAGIC:
        raise error(f"{path} is not {kind} (" + ("an empty file)" if not head else "not an SQLite database)"))


def _remove_new_sides(sides: list[Path], existed: list[bool]) -> None:
    """Delete the -wal/-shm files our probe created beside a file we refuse (no one else uses them)."""
    for side, was_there in zip(sides, existed):
        if not was_there:
            side.unlink(missing_ok=True)


def _create(path: Path, timeout: float) -> None:
    """A new, empty gallery at ``path``, complete before it appears there (unless one appeared first)."""
    create_database(path, timeout, _SCHEMA, [("schema", str(SCHEMA_VERSION)), ("generation", "0")],
                    "gallery", GalleryError)


def create_database(path: Path, timeout: float, statements: Sequence[str], meta: Sequence[tuple[str, str]],
                    what: str, error: type[Exception]) -> None:
    """A new SQLite file at ``path`` in WAL mode made by ``statements`` with ``meta`` rows, built
    under a temporary name and linked into place complete: another process never sees it half
    made, and of two creators at once the first one's file is used. ``error`` names ``what`` failed."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.part")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = connect(tmp, "rwc", timeout)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            with write_transaction(conn, path, what, error) as cur:
                for statement in statements:
                    cur.execute(statement)
                cur.executemany("INSERT INTO meta VALUES (?, ?)", meta)
        finally:
            conn.close()
        _link_into_place(tmp, path)
    except sqlite3.Error as exc:
        raise error(f"{path}: cannot create the {what} ({exc})") from exc
    except OSError as exc:
        raise error(f"{path}: cannot create the {what} ({exc.strerror or exc})") from exc
    finally:
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm"), Path(f"{tmp}-journal")):
            leftover.unlink(missing_ok=True)


def _link_into_place(tmp: Path, path: Path) -> None:
    """``tmp`` under the name ``path``, never replacing a file another process put there meanwhile."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        return  # another process created it first: theirs is used
    except OSError:  # a file system without hard links
        if not path.exists():
            os.replace(tmp, path)


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring a gallery to :data:`SCHEMA_VERSION` in one transaction (a no-op if another process did)."""
    with write_transaction(conn, path) as cur:
        version = int(cur.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0])
        if version < 2:
            _migrate_1_to_2(conn, cur)
        if version < 3:
            cur.execute(_THUMBNAILS)  # 2 -> 3: a new table, nothing stored changes
        cur.execute("UPDATE meta SET value=? WHERE key='schema'", (str(SCHEMA_VERSION),))


def _migrate_1_to_2(conn: sqlite3.Connection, cur: sqlite3.Cursor) -> None:
    """Add ``content_hash`` (the sha256 of each stored vector: v1 kept no file hashes), drop the
    repeats that v1 allowed (the oldest of each stays) and add the UNIQUE index."""
    conn.create_function("facespace_vector_hash", 1, vector_hash, deterministic=True)
    cur.execute("ALTER TABLE embeddings ADD COLUMN content_hash TEXT")
    cur.execute("UPDATE embeddings SET content_hash = facespace_vector_hash(vector)")
    cur.execute("DELETE FROM embeddings WHERE id NOT IN "
                "(SELECT MIN(id) FROM embeddings GROUP BY identity_id, content_hash)")
    cur.execute(_UNIQUE_INDEX)
    cur.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key='generation'")


@contextmanager
def write_transaction(conn: sqlite3.Connection, path: Path, what: str = "gallery",
                      error: type[Exception] = GalleryError) -> Iterator[sqlite3.Cursor]:
    """One write transaction: everything inside commits together or not at all. An SQLite failure
    (a full disk, a lock held past the timeout) rolls it back and becomes one ``error`` (GalleryError;
    the attendance log, another database of facespace's, passes its own and its ``what``)."""
    cur = conn.cursor()
    try:
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            _rollback(conn)
            raise
        cur.execute("COMMIT")
    except sqlite3.Error as exc:
        _rollback(conn)
        raise error(f"{path}: cannot write to the {what} ({exc}{_disk_hint(exc)}); the change was "
                    "rolled back, what was committed before is intact") from exc
    finally:
        cur.close()


def _disk_hint(exc: sqlite3.Error) -> str:
    """``; is the disk full?`` for the errors a full disk (or a file size limit) gives."""
    name = getattr(exc, "sqlite_errorname", "")
    return "; is the disk full?" if name == "SQLITE_FULL" or name.startswith("SQLITE_IOERR_WRITE") else ""


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:  # SQLite may have rolled back already (a full disk, an I/O error)
            pass
