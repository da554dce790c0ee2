"""Faces in a video: detect on every n-th frame, link detections into tracks, name each track.

:func:`process_video` reads frames with ``cv2.VideoCapture``, embeds the
faces of every ``every``-th frame (in batches), and links them across
sampled frames with :class:`IoUTracker` (greedy matching by box overlap,
optionally vetoed when the embeddings disagree). Each track's embeddings are
averaged (and renormalised) and the track is identified against a gallery.
:func:`annotate_video` writes a copy of the video with boxes and names.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import cv2
import numpy as np

from .errors import FacespaceError
from .files import atomic_path
from .imageio import describe

if TYPE_CHECKING:
    from .gallery.search import Identification, Identifier
    from .pipeline import FacePipeline
    from .types import EmbeddedFace


@dataclass
class Sighting:
    """One detected face on one sampled frame."""

    frame: int
    box: np.ndarray
    score: float
    embedding: np.ndarray


@dataclass
class Track:
    id: int
    sightings: list[Sighting] = field(default_factory=list)
    missed: int = 0
    identification: "Identification | None" = None

    @property
    def first_frame(self) -> int:
        return self.sightings[0].frame

    @property
    def last_frame(self) -> int:
        return self.sightings[-1].frame

    @property
    def embedding(self) -> np.ndarray:
        """Mean of the sightings' embeddings, renormalised to unit length."""
        return mean_embedding([s.embedding for s in self.sightings])

    @property
    def name(self) -> str:
        return self.identification.identity if self.identification is not None else f"track {self.id}"

    def box_at(self, frame: int) -> np.ndarray | None:
        """The box of the latest sighting at or before ``frame`` (None before the track starts)."""
        chosen = None
        for s in self.sightings:
            if s.frame > frame:
                break
            chosen = s
        return None if chosen is None else chosen.box

    def to_dict(self, fps: float) -> dict:
        out = {
            "track": self.id,
            "first_frame": self.first_frame, "last_frame": self.last_frame,
            "start_s": round(self.first_frame / fps, 3) if fps else None,
            "end_s": round(self.last_frame / fps, 3) if fps else None,
            "sightings": len(self.sightings),
            "mean_score": round(float(np.mean([s.score for s in self.sightings])), 4),
            "boxes": [{"frame": s.frame, "box": [round(float(v), 1) for v in s.box], "score": round(s.score, 4)}
                      for s in self.sightings],
        }
        if self.identification is not None:
            out.update(self.identification.to_dict())
        return out


def mean_embedding(embeddings: Sequence[np.ndarray]) -> np.ndarray:
    """The mean of unit embeddings, renormalised to unit length (a track's, or some of its sightings')."""
    mean = np.mean(np.asarray(embeddings, np.float32), axis=0)
    return (mean / max(np.linalg.norm(mean), 1e-12)).astype(np.float32)


def sightings_of(frame: int, faces: "Sequence[EmbeddedFace]") -> list[Sighting]:
    """One sampled frame's embedded faces as sightings for :class:`IoUTracker`."""
    return [Sighting(frame, f.face.box.copy(), float(f.face.score), f.embedding) for f in faces]


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every (x1, y1, x2, y2) box in ``a`` with every box in ``b``."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


class IoUTracker:
    """Links detections on successive sampled frames into tracks.

    A detection joins the active track whose last box overlaps it most (IoU
    at least ``iou_threshold``, greedy, best pairs first), unless
    ``max_distance`` is set and its embedding lies further than that (squared
    distance) from the track's mean. Unmatched detections start tracks; a track
    not seen for more than ``max_missed`` sampled frames is closed.
    """

    def __init__(self, iou_threshold: float = 0.3, max_missed: int = 2, max_distance: float | None = 1.6) -> None:
        self.iou_threshold = iou_threshold
        self.max_missed = max_missed
        self.max_distance = max_distance
        self.active: list[Track] = []
        self.finished: list[Track] = []
        self._next = 0

    def update(self, sightings: list[Sighting]) -> list[int]:
        """Add one sampled frame's sightings; returns the track id given to each."""
        ids = [-1] * len(sightings)
        taken: set[int] = set()
        if self.active and sightings:
            iou = iou_matrix([t.sightings[-1].box for t in self.active], [s.box for s in sightings])
            pairs = sorted(((iou[i, j], i, j) for i in range(iou.shape[0]) for j in range(iou.shape[1])
                            if iou[i, j] >= self.iou_threshold), reverse=True)
            used_tracks: set[int] = set()
            for _, i, j in pairs:
                if i in used_tracks or j in taken:
                    continue
                track = self.active[i]
                if self.max_distance is not None:
                    d = float(np.sum((track.embedding - sightings[j].embedding) ** 2))
                    if d > self.max_distance:
                        continue
                track.sightings.append(sightings[j])
                track.missed = 0
                used_tracks.add(i)
                taken.add(j)
                ids[j] = track.id
            for i, track in enumerate(self.active):
                if i not in used_tracks:
                    track.missed += 1
        else:
            for track in self.active:
                track.missed += 1
        still = []
        for track in self.active:
            (self.finished if track.missed > self.max_missed else still).append(track)
        self.active = still
        for j, s in enumerate(sightings):
            if j not in taken:
                track = Track(id=self._next, sightings=[s])
                self._next += 1
                self.active.append(track)
                ids[j] = track.id
        return ids

    def pop_finished(self) -> list[Track]:
        """The tracks closed since the last call, handed over (a long-running caller keeps no history)."""
        done, self.finished = self.finished, []
        return done

    def close(self) -> list[Track]:
        """Finish every track; all tracks, in order of first appearance."""
        self.finished.extend(self.active)
        self.active = []
        return sorted(self.finished, key=lambda t: (t.first_frame, t.id))


@dataclass
class VideoResult:
    source: str
    fps: float
    frames: int
    width: int
    height: int
    every: int
    tracks: list[Track]

    def to_dict(self) -> dict:
        return {"video": describe(self.source), "fps": self.fps, "frames": self.frames, "width": self.width,
                "height": self.height, "every": self.every, "tracks": [t.to_dict(self.fps) for t in self.tracks]}


def _opencv_safe(name: str) -> bool:
    """Whether OpenCV can be handed ``name``: plain printable ASCII (other names, above all
    bytes that are not UTF-8, crash its Python binding)."""
    return name.isascii() and name.isprintable()


def _safe_suffix(path: Path, default: str = "") -> str:
    """``path``'s suffix where OpenCV may see it (it picks the container by it), else ``default``."""
    return path.suffix if _opencv_safe(path.suffix) else default


@contextmanager
def _opencv_name(path: Path) -> Iterator[str]:
    """A name OpenCV can open ``path`` by: the path itself when it is plain ASCII, else a link
    (or, where links fail, a copy) with a safe name in a temporary folder, gone afterwards."""
    if _opencv_safe(os.fspath(path)):
        yield os.fspath(path)
        return
    with tempfile.TemporaryDirectory(prefix="facespace-video-") as tmp:
        link = os.path.join(tmp, "video" + _safe_suffix(path))
        try:
            os.symlink(os.path.abspath(path), link)
        except OSError:
            shutil.copyfile(path, link)
        yield link


@contextmanager
def video_capture(path: str | os.PathLike) -> Iterator[cv2.VideoCapture]:
    """An opened ``cv2.VideoCapture`` of ``path``, released afterwards; :class:`FacespaceError`
    when it is missing or unreadable (a name too long, no permission: any ``OSError``)."""
    path = Path(path)
    with ExitStack() as stack:
        try:
            if not path.is_file():
                raise FacespaceError(f"{describe(path)}: no such video file")
            name = stack.enter_context(_opencv_name(path))
        except OSError as exc:
            raise FacespaceError(f"{describe(path)}: cannot be read ({exc.strerror or exc})") from None
        capture = cv2.VideoCapture(name)
        try:
            if not capture.isOpened():
                raise FacespaceError(f"{describe(path)}: cannot be read as a video")
            yield capture
        finally:
            capture.release()


def video_properties(path: str | os.PathLike) -> tuple[float, int, int, int]:
    """(frames per second, frame count, width, height) from the video's header."""
    with video_capture(path) as capture:
        return (float(capture.get(cv2.CAP_PROP_FPS) or 0.0), int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0),
                int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))


def sampled_frames(path: str | os.PathLike, every: int = 5, max_frames: int | None = None
                   ) -> Iterator[tuple[int, np.ndarray]]:
    """(frame index, RGB frame) for every ``every``-th frame; decodes only the frames it returns."""
    if every < 1:
        raise ValueError("every must be at least 1")
    with video_capture(path) as capture:
        index = 0
        while max_frames is None or index < max_frames:
            if index % every == 0:
                ok, frame = capture.read()
                if not ok:
                    break
                yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            elif not capture.grab():
                break
            index += 1


def process_video(pipeline: "FacePipeline", path: str | os.PathLike, every: int = 5,
                  identifier: "Identifier | None" = None, tracker: IoUTracker | None = None,
                  max_frames: int | None = None, min_sightings: int = 1, batch: int = 8,
                  progress: bool = False) -> VideoResult:
    """Track and (with ``identifier``) name the faces of a video; see the module docstring."""
    fps, total, width, height = video_properties(path)
    tracker = tracker or IoUTracker()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=(min(total, max_frames or total) + every - 1) // every, unit="frame")
    frames_seen = 0
    pending: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        results = pipeline.embed_images([f for _, f in pending], on_error="raise")
        for (index, _), result in zip(pending, results):
            tracker.update(sightings_of(index, result.faces))
        if bar is not None:
            bar.update(len(pending))
        pending.clear()

    for index, frame in sampled_frames(path, every, max_frames):
        frames_seen = index + 1
        pending.append((index, frame))
        if len(pending) >= batch:
            flush()
    if pending:
        flush()
    if bar is not None:
        bar.close()
    tracks = [t for t in tracker.close() if len(t.sightings) >= min_sightings]
    for number, track in enumerate(tracks):
        track.id = number
    if identifier is not None and tracks:
        for track, ident in zip(tracks, identifier.search(np.stack([t.embedding for t in tracks]))):
            track.identification = ident
    frames = max(total, frames_seen) if max_frames is None else min(max(total, frames_seen), max_frames)
    return VideoResult(source=str(path), fps=fps, frames=frames, width=width, height=height, every=every,
                       tracks=tracks)


def annotate_video(result: VideoResult, out: str | os.PathLike, max_frames: int | None = None) -> Path:
    """Write ``out`` (mp4) with every track's box and name drawn, each box held between samples.

    Written to a temporary file (with a name OpenCV can take) and renamed onto ``out`` once it is
    complete and readable, so a failure (a full disk) never leaves a broken video under ``out``."""
    out = Path(out)
    with atomic_path(out) as part, _writable_name(part) as name:
        written = _write_annotated(result, name, out, max_frames)
        if _frames_in(name) < written:
            raise FacespaceError(f"{describe(out)}: the video could not be written completely (is the disk full?)")
    return out


def _frames_in(name: str) -> int:
    """Frames that the video file ``name`` (a name OpenCV can take) says it holds; 0 if unreadable."""
    capture = cv2.VideoCapture(name)
    try:
        return int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if capture.isOpened() else 0
    finally:
        capture.release()


@contextmanager
def _writable_name(path: Path) -> Iterator[str]:
    """A name OpenCV can write ``path``'s video to: ``path`` itself when plain ASCII, else a safe
    name in a temporary folder, moved onto ``path`` when the block succeeds."""
    if _opencv_safe(os.fspath(path)):
        yield os.fspath(path)
        return
    with tempfile.TemporaryDirectory(prefix="facespace-video-") as tmp:
        name = os.path.join(tmp, "annotated" + _safe_suffix(path, ".mp4"))
        yield name
        shutil.move(name, path)


def _write_annotated(result: VideoResult, name: str, out: Path, max_frames: int | None) -> int:
    """Write the annotated frames to the file ``name``; the number of frames written."""
    palette = [(0, 200, 0), (255, 128, 0), (0, 128, 255), (200, 0, 200), (0, 200, 200), (255, 255, 0)]
    with video_capture(result.source) as capture:
        writer = cv2.VideoWriter(name, cv2.VideoWriter_fourcc(*"mp4v"), result.fps or 25.0,
                                 (result.width, result.height))
        if not writer.isOpened():
            raise FacespaceError(f"{describe(out)}: cannot write a video there")
        index = 0
        try:
            while max_frames is None or index < max_frames:
                ok, frame = capture.read()
                if not ok:
                    break
                for track in result.tracks:
                    if not track.first_frame <= index <= track.last_frame + result.every - 1:
                        continue
                    box = track.box_at(index)
                    if box is None:
                        continue
                    colour = palette[track.id % len(palette)]
                    x1, y1, x2, y2 = (int(round(v)) for v in box)
                    cv2.rectangle(frame, (x1, y1), (x2, y2), colour, 2)
                    cv2.putText(frame, track.name, (x1, max(y1 - 6, 12)), cv2.FONT_HERSHEY_SIMPLEX, 0.6, colour, 2)
                writer.write(frame)
                index += 1
        finally:
            writer.release()
    return index
