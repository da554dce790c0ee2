"""The attendance loop: frames -> faces -> tracks -> identified tracks -> events in the log.

Every ``every``-th frame is embedded as it is read (one frame at a time: the least latency)
and its faces join tracks through :class:`facespace.video.IoUTracker`, whose embedding veto is
the model's verification threshold (a face that the model says is someone else starts a new
track even where the boxes overlap, as at a cut). A sighting is *good* when its detection
score and its estimated yaw pass :class:`AttendSettings`' gate; when a track has
``min_good`` good sightings their mean embedding is identified with the gallery's
:class:`~facespace.gallery.search.Identifier` (open-set: its calibrated threshold), and again
each time that count doubles while it stays unknown. Then:

* a known track logs a sighting of its person (:meth:`AttendanceLog.record_sighting`: a new
  event, or the extension of the person's event within ``interval``), at once; while it stays
  in view its event's ``last_seen`` follows it (written about once a second and at the end);
* an unknown track is kept as an anonymous track: a few of its embeddings and a thumbnail.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np

from ..pose import estimate_pose
from ..thumbnails import thumbnail_jpeg
from ..video import IoUTracker, Sighting, Track, mean_embedding, sightings_of
from .log import AttendanceLog
from .sources import Frame, FrameSource, ReadOutcome, Reconnect, read_frames

if TYPE_CHECKING:
    from ..gallery.search import Identifier
    from ..pipeline import FacePipeline
    from ..types import EmbeddedFace

__all__ = ["AttendSettings", "EventNote", "RunSummary", "attend"]


@dataclass(frozen=True)
class AttendSettings:
    """How faces become events.

    ``min_score`` and ``max_yaw`` make a sighting good: MTCNN's score and the yaw
    :func:`facespace.pose.estimate_pose` reads from the landmarks; 50 degrees of estimated yaw is
    about 60 of true pan on Pointing'04 (benchmarks/results/pointing04.md), where verification is
    still within a point of frontal faces. ``interval``: seconds within which seeing a person again
    extends their event. ``keep_vectors``: embeddings kept for an anonymous track.
    """

    every: int = 5
    interval: float = 300.0
    min_good: int = 3
    min_score: float = 0.95
    max_yaw: float = 50.0
    iou: float = 0.3
    max_missed: int = 2
    keep_vectors: int = 5
    flush_seconds: float = 1.0


@dataclass
class EventNote:
    """One identification that logged a sighting: for the report and the latency benchmark."""

    event: int
    new: bool
    person: str
    track: int
    appeared: float  # the track's first frame (log time)
    identified: float  # the frame that completed the identification (log time)
    latency_s: float  # processing time from reading the first frame to the event's commit

    def to_dict(self) -> dict:
        return {"event": self.event, "new": self.new, "person": self.person, "track": self.track,
                "appeared": round(self.appeared, 3), "identified": round(self.identified, 3),
                "video_latency_s": round(self.identified - self.appeared, 3), "latency_s": round(self.latency_s, 3)}


@dataclass
class RunSummary:
    run: int
    source: str
    status: str
    message: str | None
    frames: int
    sampled: int
    seconds: float
    reconnects: int
    notes: list[EventNote] = field(default_factory=list)
    anonymous: int = 0

    @property
    def events(self) -> int:
        return sum(n.new for n in self.notes)

    def to_dict(self) -> dict:
        return {"run": self.run, "source": self.source, "status": self.status, "message": self.message,
                "frames": self.frames, "sampled": self.sampled, "seconds": round(self.seconds, 3),
                "sampled_fps": round(self.sampled / self.seconds, 2) if self.seconds else None,
                "reconnects": self.reconnects, "events": self.events, "anonymous_tracks": self.anonymous,
                "identifications": [n.to_dict() for n in self.notes]}


@dataclass
class _TrackState:
    """What the loop knows of one tracker track beyond its sightings."""

    first_seen: float
    first_read: float
    last_seen: float = 0.0
    good: list[Sighting] = field(default_factory=list)
    tested_at: int = 0
    person: str | None = None
    db_id: int | None = None
    event: int | None = None
    thumb: bytes | None = None
    thumb_size: float = 0.0


class _Attendance:
    """One run's state; :func:`attend` drives it."""

    def __init__(self, pipeline: "FacePipeline", identifier: "Identifier", log: AttendanceLog,
                 settings: AttendSettings, run: int, source: str) -> None:
        self.pipeline, self.identifier, self.log, self.settings = pipeline, identifier, log, settings
        self.run, self.source = run, source
        self.tracker = IoUTracker(settings.iou, settings.max_missed, max_distance=pipeline.threshold)
        self.states: dict[int, _TrackState] = {}
        self.notes: list[EventNote] = []
        self.anonymous = 0
        self._dirty_events: dict[int, float] = {}
        self._dirty_tracks: dict[int, tuple[float, int]] = {}
        self._flushed = time.monotonic()

    def good(self, face: "EmbeddedFace") -> bool:
        if face.face.score < self.settings.min_score or face.face.landmarks is None:
            return False
        return abs(estimate_pose(face.face.landmarks, face.face.box).yaw) <= self.settings.max_yaw

    def frame(self, frame: Frame) -> None:
        faces = self.pipeline.embed(frame.rgb)
        sightings = sightings_of(frame.index, faces)
        for face, sighting, tid in zip(faces, sightings, self.tracker.update(sightings)):
            state = self.states.setdefault(tid, _TrackState(frame.time, frame.read_at))
            state.last_seen = frame.time
            if self.good(face):
                state.good.append(sighting)
                self._keep_thumbnail(state, frame.rgb, sighting.box)
                self._maybe_identify(tid, state, frame)
            if state.db_id is not None:
                self._dirty_tracks[state.db_id] = (frame.time, len(state.good))
            if state.event is not None:
                self._dirty_events[state.event] = frame.time
        for track in self.tracker.pop_finished():
            self._finish(track)
        if time.monotonic() - self._flushed >= self.settings.flush_seconds:
            self.flush()

    def _keep_thumbnail(self, state: _TrackState, rgb: np.ndarray, box: np.ndarray) -> None:
        """The thumbnail of the track's largest good sighting so far (a few KB of JPEG)."""
        size = float(min(box[2] - box[0], box[3] - box[1]))
        if size > state.thumb_size:
            state.thumb, state.thumb_size = thumbnail_jpeg(rgb, box), size

    def _maybe_identify(self, tid: int, state: _TrackState, frame: Frame) -> None:
        count = len(state.good)
        if state.person is not None or count < self.settings.min_good or count < 2 * state.tested_at:
            return
        state.tested_at = count
        found = self.identifier.search(mean_embedding([s.embedding for s in state.good]), k=1)[0]
        person = found.identity if found.known else None
        if state.db_id is None:
            state.db_id = self.log.add_track(self.run, self.source, state.first_seen, frame.time, count, person,
                                             self._vectors(state), self.pipeline.model_name,
                                             self.pipeline.preprocessing_id, state.thumb)
            self.anonymous += person is None
        elif person is not None:
            self.log.update_track(state.db_id, frame.time, count, person=person)
            self.anonymous -= 1
        if person is None:
            return
        state.person = person
        event, new = self.log.record_sighting(person, state.first_seen, frame.time, self.settings.interval,
                                              state.db_id, self.source, self.run)
        state.event = event
        self.notes.append(EventNote(event, new, person, state.db_id, state.first_seen, frame.time,
                                    time.time() - state.first_read))

    def _vectors(self, state: _TrackState) -> np.ndarray:
        """Up to ``keep_vectors`` good embeddings, spread over the track."""
        picks = np.unique(np.linspace(0, len(state.good) - 1, self.settings.keep_vectors).round().astype(int))
        return np.stack([state.good[i].embedding for i in picks])

    def _finish(self, track: Track) -> None:
        state = self.states.pop(track.id, None)
        if state is None or state.db_id is None:
            return
        self._dirty_tracks.pop(state.db_id, None)
        update = {} if state.person is not None else {"vectors": self._vectors(state), "thumbnail": state.thumb}
        self.log.update_track(state.db_id, state.last_seen, len(state.good), **update)

    def close(self) -> None:
        self.tracker.close()
        for track in self.tracker.pop_finished():
            self._finish(track)
        self.flush()

    def flush(self) -> None:
        self.log.touch(self._dirty_events, self._dirty_tracks)
        self._dirty_events, self._dirty_tracks = {}, {}
        self._flushed = time.monotonic()


def attend(pipeline: "FacePipeline", identifier: "Identifier", source: FrameSource, log: AttendanceLog, *,
           start: float | None = None, settings: AttendSettings = AttendSettings(),
           max_frames: int | None = None, reconnect: Reconnect = Reconnect(),
           report: Callable[[str], None] = lambda _: None) -> RunSummary:
    """Watch ``source`` (opened here) and log who is seen (see the module notes).

    ``start``: the log time of a file's first frame (default now; a live source uses the wall
    clock). Everything logged before a failure, Ctrl-C included, stays logged; the run's row says
    how it ended."""
    began = time.time()
    source.open()
    run = log.start_run(source.source.name, began)
    state = _Attendance(pipeline, identifier, log, settings, run, source.source.name)
    outcome, sampled, status = ReadOutcome(), 0, None
    try:
        for frame in read_frames(source, settings.every, began if start is None else start, outcome,
                                 max_frames=max_frames, reconnect=reconnect, report=report):
            state.frame(frame)
            sampled += 1
        status = outcome.status
    except KeyboardInterrupt:
        status, outcome.message = "interrupted", "interrupted; the events so far are logged"
        raise
    except BaseException as exc:
        status, outcome.message = "failed", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        source.release()
        state.close()
        log.finish_run(run, status or "failed", time.time(), outcome.frames, outcome.message)
    return RunSummary(run, source.source.name, status, outcome.message, outcome.frames, sampled,
                      time.time() - began, outcome.reconnects, state.notes, state.anonymous)
