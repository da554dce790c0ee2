"""The attendance log: who was seen when, in one SQLite file (the engine galleries use).

Tables:

``meta``    (key, value): ``kind`` = ``facespace-attendance`` and the ``schema`` version.
``runs``    (id, source, started, ended, status, message, frames): one row per ``facespace attend``
            run; ``status`` is ``running`` until it ends as ``ended`` (the video ended, or
            ``--max-frames``), ``truncated`` (a file ended before its header's frame count), ``lost``
            (a stream that stayed down through every reconnection), ``interrupted`` or ``failed``.
``tracks``  (id, run_id, source, first_seen, last_seen, frames, person, enrolled, model,
            preprocessing_id, dim, vectors, thumbnail): every track that had enough good frames to
            be identified (``frames``: its good sightings). ``person`` is NULL for an anonymous (unknown) track, which keeps a few
            of its embeddings (float32 rows) and a JPEG thumbnail so it can be enrolled later;
            ``enrolled`` is the name it was enrolled under.
``events``  (id, person, first_seen, last_seen, track_id -> tracks.id, source, run_id): one per
            person per stay: a sighting within the interval of the person's latest event extends
            it (``last_seen``), a later one starts a new event.

Times are seconds since the epoch (UTC); :func:`iso_time` writes them as local ISO 8601.
The file is in WAL mode with ``synchronous=FULL`` and every change is one transaction, so a
reader (``facespace serve --attendance``, an export) works while ``attend`` writes, and Ctrl-C,
``kill -9`` or a full disk never loses or half-writes an event that was committed.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import sqlite3
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from ..errors import FacespaceError, check_choice
from ..gallery.schema import check_sqlite_file, connect, create_database, write_transaction

__all__ = ["AttendanceError", "AttendanceLog", "Event", "AnonymousTrack", "LogMode", "LOG_MODES", "iso_time",
           "RunStatus", "CSV_FIELDS", "UnknownTrackError", "TrackVectors", "parse_day"]

KIND = "facespace-attendance"
SCHEMA_VERSION = 1
#: How :class:`AttendanceLog` opens its file: ``create`` (for writing, made when missing),
#: ``write`` (must exist) or ``read`` (read-only; nothing in the file changes).
LogMode = Literal["create", "write", "read"]
LOG_MODES: tuple[str, ...] = get_args(LogMode)
#: How a run ended (see the module notes).
RunStatus = Literal["running", "ended", "truncated", "lost", "interrupted", "failed"]
#: The columns of :meth:`AttendanceLog.to_csv`, in order.
CSV_FIELDS = ("id", "person", "first_seen", "last_seen", "track_id", "source")

_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE runs (id INTEGER PRIMARY KEY, source TEXT NOT NULL, started REAL NOT NULL, ended REAL,
        status TEXT NOT NULL, message TEXT, frames INTEGER NOT NULL DEFAULT 0)""",
    """CREATE TABLE tracks (id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL REFERENCES runs(id),
        source TEXT NOT NULL, first_seen REAL NOT NULL, last_seen REAL NOT NULL, frames INTEGER NOT NULL,
        person TEXT, enrolled TEXT, model TEXT NOT NULL, preprocessing_id TEXT NOT NULL, dim INTEGER NOT NULL,
        vectors BLOB NOT NULL, thumbnail BLOB)""",
    """CREATE TABLE events (id INTEGER PRIMARY KEY, person TEXT NOT NULL, first_seen REAL NOT NULL,
        last_seen REAL NOT NULL, track_id INTEGER REFERENCES tracks(id), source TEXT NOT NULL,
        run_id INTEGER NOT NULL REFERENCES runs(id))""",
    "CREATE INDEX events_person ON events(person, last_seen)",
    "CREATE INDEX events_first ON events(first_seen)",
)


class AttendanceError(FacespaceError):
    """An attendance log that cannot be opened, read or written as asked."""


def iso_time(seconds: float) -> str:
    """``seconds`` since the epoch as local ISO 8601 with its UTC offset, to the millisecond."""
    return dt.datetime.fromtimestamp(seconds).astimezone().isoformat(timespec="milliseconds")


def parse_day(day: str) -> tuple[float, float]:
    """The local day ``YYYY-MM-DD`` as [start, end) epoch seconds; AttendanceError if it is not one."""
    try:
        start = dt.datetime.strptime(day, "%Y-%m-%d").astimezone()
    except (TypeError, ValueError):
        raise AttendanceError(f"day {day!r} is not a date YYYY-MM-DD") from None
    end = (start + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return start.timestamp(), end.astimezone().timestamp()


@dataclass(frozen=True)
class Event:
    id: int
    person: str
    first_seen: float
    last_seen: float
    track_id: int | None
    source: str

    def to_dict(self) -> dict:
        """The API's and the CSV's form: ISO times."""
        return {**asdict(self), "first_seen": iso_time(self.first_seen), "last_seen": iso_time(self.last_seen)}


@dataclass(frozen=True)
class AnonymousTrack:
    id: int
    first_seen: float
    last_seen: float
    frames: int
    source: str
    enrolled: str | None

    def to_dict(self) -> dict:
        return {**asdict(self), "first_seen": iso_time(self.first_seen), "last_seen": iso_time(self.last_seen)}


@dataclass(frozen=True)
class TrackVectors:
    """What enrolling an anonymous track needs: its embeddings and the model that made them."""

    id: int
    vectors: np.ndarray
    model: str
    preprocessing_id: str


class AttendanceLog:
    """Attendance events, runs and tracks in an SQLite file (see the module notes).

    One connection, usable from several threads (each call takes the log's lock).
    """

    def __init__(self, path: str | os.PathLike, mode: LogMode = "create", timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.mode: LogMode = check_choice(mode, LogMode, "attendance log mode")
        self._lock = threading.RLock()
        if not self.path.exists() and mode == "create":
            _create(self.path, timeout)
        _check_log(self.path, timeout)
        try:
            self._conn = connect(self.path, "ro" if mode == "read" else "rw", timeout)
            if mode != "read":
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error as exc:
            raise AttendanceError(f"{self.path}: cannot open the attendance log ({exc})") from exc

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "AttendanceLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _write(self):
        if self.mode == "read":
            raise AttendanceError(f"{self.path}: opened read-only")
        return write_transaction(self._conn, self.path, "attendance log", AttendanceError)

    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise AttendanceError(f"{self.path}: cannot read the attendance log ({exc})") from exc

    # -- runs -------------------------------------------------------------------
    def start_run(self, source: str, started: float) -> int:
        with self._lock, self._write() as cur:
            cur.execute("INSERT INTO runs (source, started, status) VALUES (?, ?, 'running')", (source, started))
            return int(cur.lastrowid)

    def finish_run(self, run_id: int, status: RunStatus, ended: float, frames: int, message: str | None = None) -> None:
        check_choice(status, RunStatus, "run status")
        with self._lock, self._write() as cur:
            cur.execute("UPDATE runs SET status=?, ended=?, frames=?, message=? WHERE id=?",
                        (status, ended, frames, message, run_id))

    def runs(self) -> list[dict]:
        rows = self._read("SELECT id, source, started, ended, status, message, frames FROM runs ORDER BY id")
        return [dict(zip(("id", "source", "started", "ended", "status", "message", "frames"), r)) for r in rows]

    # -- tracks and events (written by the runner) ------------------------------
    def add_track(self, run_id: int, source: str, first_seen: float, last_seen: float, frames: int,
                  person: str | None, vectors: np.ndarray, model: str, preprocessing_id: str,
                  thumbnail: bytes | None) -> int:
        vectors = np.ascontiguousarray(np.atleast_2d(vectors), dtype="<f4")
        with self._lock, self._write() as cur:
            cur.execute("INSERT INTO tracks (run_id, source, first_seen, last_seen, frames, person, model, "
                        "preprocessing_id, dim, vectors, thumbnail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (run_id, source, first_seen, last_seen, frames, person, model, preprocessing_id,
                         vectors.shape[1], vectors.tobytes(), thumbnail))
            return int(cur.lastrowid)

    def update_track(self, track_id: int, last_seen: float, frames: int, person: str | None = None,
                     vectors: np.ndarray | None = None, thumbnail: bytes | None = None) -> None:
        """A track's latest state; ``person`` names it once identified (None keeps the stored one)."""
        blob = None if vectors is None else np.ascontiguousarray(np.atleast_2d(vectors), dtype="<f4").tobytes()
        with self._lock, self._write() as cur:
            cur.execute("UPDATE tracks SET last_seen=MAX(last_seen, ?), frames=?, person=COALESCE(?, person), "
                        "vectors=COALESCE(?, vectors), thumbnail=COALESCE(?, thumbnail) WHERE id=?",
                        (last_seen, frames, person, blob, thumbnail, track_id))

    def record_sighting(self, person: str, first_seen: float, seen: float, interval: float, track_id: int,
                        source: str, run_id: int) -> tuple[int, bool]:
        """Extend ``person``'s latest event when ``first_seen`` lies within ``interval`` seconds of its
        last sighting, else start a new one; (event id, whether it is new). One transaction."""
        with self._lock, self._write() as cur:
            row = cur.execute("SELECT id, first_seen, last_seen FROM events WHERE person=? "
                              "ORDER BY last_seen DESC LIMIT 1", (person,)).fetchone()
            if row is not None and row[1] - interval <= first_seen <= row[2] + interval:
                cur.execute("UPDATE events SET last_seen=MAX(last_seen, ?) WHERE id=?", (seen, row[0]))
                return int(row[0]), False
            cur.execute("INSERT INTO events (person, first_seen, last_seen, track_id, source, run_id) "
                        "VALUES (?, ?, ?, ?, ?, ?)", (person, first_seen, seen, track_id, source, run_id))
            return int(cur.lastrowid), True

    def touch(self, last_seen: dict[int, float], tracks: dict[int, tuple[float, int]]) -> None:
        """Many events' ``last_seen`` and tracks' (last_seen, frames) at once, in one transaction."""
        if not last_seen and not tracks:
            return
        with self._lock, self._write() as cur:
            cur.executemany("UPDATE events SET last_seen=MAX(last_seen, ?) WHERE id=?",
                            [(t, i) for i, t in last_seen.items()])
            cur.executemany("UPDATE tracks SET last_seen=MAX(last_seen, ?), frames=? WHERE id=?",
                            [(t, n, i) for i, (t, n) in tracks.items()])

    # -- reading ------------------------------------------------------------------
    def events(self, person: str | None = None, day: str | None = None, since_id: int | None = None) -> list[Event]:
        """Events in order, filtered by person, by local day of arrival (``YYYY-MM-DD``) and by id
        (only those after ``since_id``: what a live view has not seen yet)."""
        where, params = [], []
        if person is not None:
            where.append("person = ?")
            params.append(person)
        if day is not None:
            start, end = parse_day(day)
            where += ["first_seen >= ?", "first_seen < ?"]
            params += [start, end]
        if since_id is not None:
            where.append("id > ?")
            params.append(int(since_id))
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = self._read(f"SELECT id, person, first_seen, last_seen, track_id, source FROM events{clause} "
                          "ORDER BY id", tuple(params))
        return [Event(*r) for r in rows]

    def tracks(self, include_enrolled: bool = False) -> list[AnonymousTrack]:
        """The anonymous (unknown) tracks, oldest first; enrolled ones only with ``include_enrolled``."""
        extra = "" if include_enrolled else " AND enrolled IS NULL"
        rows = self._read("SELECT id, first_seen, last_seen, frames, source, enrolled FROM tracks "
                          f"WHERE person IS NULL{extra} ORDER BY id")
        return [AnonymousTrack(*r) for r in rows]

    def thumbnail(self, track_id: int) -> bytes:
        rows = self._read("SELECT thumbnail FROM tracks WHERE id=?", (int(track_id),))
        if not rows or rows[0][0] is None:
            raise UnknownTrackError(f"no thumbnail for track {track_id} in {self.path}")
        return bytes(rows[0][0])

    def track_vectors(self, track_id: int) -> TrackVectors:
        """An anonymous track's stored embeddings (UnknownTrackError if there is no such track)."""
        rows = self._read("SELECT vectors, dim, model, preprocessing_id, person FROM tracks WHERE id=?",
                          (int(track_id),))
        if not rows or rows[0][4] is not None:
            raise UnknownTrackError(f"no anonymous track {track_id} in {self.path}")
        blob, dim, model, preprocessing = rows[0][:4]
        return TrackVectors(int(track_id), np.frombuffer(blob, "<f4").reshape(-1, dim).astype(np.float32),
                            model, preprocessing)

    def mark_enrolled(self, track_id: int, name: str) -> None:
        with self._lock, self._write() as cur:
            cur.execute("UPDATE tracks SET enrolled=? WHERE id=?", (name, int(track_id)))

    def to_csv(self, events: list[Event] | None = None) -> str:
        """The events (default: all) as CSV text with a header row of :data:`CSV_FIELDS`."""
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        for event in self.events() if events is None else events:
            writer.writerow(event.to_dict())
        return out.getvalue()


class UnknownTrackError(AttendanceError):
    """No such (anonymous) track in the log."""


def _create(path: Path, timeout: float) -> None:
    create_database(path, timeout, _SCHEMA, [("kind", KIND), ("schema", str(SCHEMA_VERSION))], "attendance log",
                    AttendanceError)


def _check_log(path: Path, timeout: float) -> None:
    """AttendanceError, the file untouched, unless ``path`` is an attendance log this version reads."""
    if not path.exists():
        raise AttendanceError(f"{path}: no such attendance log")
    check_sqlite_file(path, "attendance log", "an attendance log", AttendanceError)
    try:
        conn = connect(path, "ro", timeout)
        try:
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        finally:
            conn.close()
    except sqlite3.Error:
        meta = {}
    if meta.get("kind") != KIND:
        raise AttendanceError(f"{path} is not an attendance log (an SQLite database of something else, "
                              "a gallery perhaps)")
    if int(meta.get("schema", 0)) > SCHEMA_VERSION:
        raise AttendanceError(f"{path}: attendance log schema {meta['schema']} is newer than this facespace reads")
