"""Where attendance frames come from: a video file, a stream URL or a camera, and reconnection.

:func:`parse_source` reads ``SOURCE``: digits are a camera index, ``scheme://...`` a stream
(RTSP, HTTP(S), RTMP, UDP: anything OpenCV's FFmpeg opens), anything else a video file.
:class:`FrameSource` opens it with OpenCV and says whether it is live: a file's frames carry
video-clock times (``start`` plus frame number over frames per second) and its end is a normal
end; a live source's frames carry the wall clock, and a read that fails (the stream stalled past
``stall_timeout`` or dropped) is answered by :func:`read_frames` with reconnection under
:class:`Reconnect`'s bounded back-off.
"""

from __future__ import annotations

import os
import re
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Literal, get_args

import cv2
import numpy as np

from ..errors import FacespaceError, OptionError
from ..imageio import describe
from ..video import video_capture

__all__ = ["SourceKind", "SOURCE_KINDS", "Source", "parse_source", "Reconnect", "FrameSource", "Frame",
           "ReadOutcome", "read_frames"]

#: What a SOURCE names.
SourceKind = Literal["file", "stream", "camera"]
SOURCE_KINDS: tuple[str, ...] = get_args(SourceKind)
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://\S+$")
_STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp")


@dataclass(frozen=True)
class Source:
    kind: SourceKind
    target: str | int

    @property
    def live(self) -> bool:
        return self.kind != "file"

    @property
    def name(self) -> str:
        """How the source is named in the log (a URL without its password)."""
        if self.kind == "camera":
            return f"camera:{self.target}"
        if self.kind == "stream":
            return re.sub(r"//[^/@]*:[^/@]*@", "//***@", str(self.target))
        return describe(os.path.abspath(self.target))


def parse_source(text: str) -> Source:
    """A camera index, a stream URL or a video file (which must exist); OptionError otherwise."""
    text = text.strip() if isinstance(text, str) else text
    if not text:
        raise OptionError("SOURCE is empty: give a video file, a stream URL or a camera index")
    if text.isdigit():
        return Source("camera", int(text))
    if _URL.match(text):
        scheme = text.split("://", 1)[0].lower()
        if scheme == "file":
            return parse_source(text.split("://", 1)[1])
        if scheme not in _STREAM_SCHEMES:
            raise OptionError(f"SOURCE {text!r}: unsupported scheme {scheme!r} (use one of "
                              f"{', '.join(_STREAM_SCHEMES)}, a file or a camera index)")
        return Source("stream", text)
    path = Path(text)
    if not path.is_file():
        raise OptionError(f"SOURCE {describe(path)}: no such video file (nor a stream URL or a camera index)")
    return Source("file", text)


@dataclass(frozen=True)
class Reconnect:
    """How a live source that fails is reopened: up to ``attempts`` times in a row, waiting
    ``backoff`` seconds before the first and doubling up to ``max_backoff``; a frame read
    successfully resets the count."""

    attempts: int = 5
    backoff: float = 1.0
    max_backoff: float = 30.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before reconnection ``attempt`` (1, 2, ...)."""
        return min(self.backoff * 2 ** (attempt - 1), self.max_backoff)


class FrameSource:
    """An opened OpenCV capture of a :class:`Source`; ``open`` again after a failure to reconnect."""

    def __init__(self, source: Source, stall_timeout: float = 10.0) -> None:
        self.source = source
        self.stall_timeout = stall_timeout
        self._stack = ExitStack()
        self.capture: cv2.VideoCapture | None = None
        self.fps = 0.0
        self.frame_count = 0

    @property
    def live(self) -> bool:
        return self.source.live

    def open(self) -> None:
        """Open (or reopen) the capture; FacespaceError when it cannot be."""
        self.release()
        if self.source.kind == "file":
            self.capture = self._stack.enter_context(video_capture(self.source.target))
        else:
            self.capture = self._open_live()
        self.fps = float(self.capture.get(cv2.CAP_PROP_FPS) or 0.0)
        self.frame_count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if not self.live else 0

    def _open_live(self) -> cv2.VideoCapture:
        if self.source.kind == "camera":
            capture = cv2.VideoCapture(int(self.source.target))
        else:
            ms = int(self.stall_timeout * 1000)
            capture = cv2.VideoCapture(str(self.source.target), cv2.CAP_FFMPEG,
                                       [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])
        if not capture.isOpened():
            capture.release()
            raise FacespaceError(f"{self.source.name}: cannot be opened as a video "
                                 f"{'camera' if self.source.kind == 'camera' else 'stream'}")
        self._stack.callback(capture.release)
        return capture

    def read(self, decode: bool = True) -> np.ndarray | None:
        """The next frame (BGR), or None when there is none (the end, or a failure); with
        ``decode=False`` the frame is only grabbed (skipped cheaply) and an empty array returned."""
        if self.capture is None:
            return None
        if not decode:
            return np.empty(0, np.uint8) if self.capture.grab() else None
        ok, frame = self.capture.read()
        return frame if ok and frame is not None else None

    def release(self) -> None:
        self._stack.close()
        self.capture = None

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


@dataclass
class Frame:
    index: int
    time: float  # epoch seconds: video clock for a file, wall clock for a live source
    rgb: np.ndarray
    read_at: float  # wall clock when it was read


@dataclass
class ReadOutcome:
    """How reading ended (filled in by :func:`read_frames` as it goes)."""

    status: str = "ended"
    message: str | None = None
    frames: int = 0
    reconnects: int = 0


def read_frames(source: FrameSource, every: int, start: float, outcome: ReadOutcome, *,
                max_frames: int | None = None, reconnect: Reconnect = Reconnect(),
                report: Callable[[str], None] = lambda _: None,
                sleep: Callable[[float], None] = time.sleep) -> Iterator[Frame]:
    """Every ``every``-th frame of an opened ``source`` with its time (see the module notes).

    A file ends normally at its end (``outcome.status`` ``truncated`` with a message when that
    comes before the frame count in its header); a live source that fails is reopened as
    ``reconnect`` says, and ``lost`` when it stays down."""
    index = tries = 0  # tries: reconnection attempts since the last frame read
    while max_frames is None or index < max_frames:
        frame = source.read(decode=index % every == 0)
        if frame is None:
            if not source.live:
                _file_ended(source, index, outcome)
                return
            tries = _reconnect(source, reconnect, tries, outcome, report, sleep)
            if tries is None:
                return
            continue
        outcome.frames, tries = index + 1, 0
        if index % every == 0:
            now = time.time()
            stamp = start + index / source.fps if not source.live and source.fps > 0 else now
            yield Frame(index, stamp, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), now)
        index += 1


def _file_ended(source: FrameSource, index: int, outcome: ReadOutcome) -> None:
    if source.frame_count and index < source.frame_count - 1:  # headers may count one frame too many
        outcome.status = "truncated"
        outcome.message = (f"{source.source.name}: the video ended at frame {index} of the {source.frame_count} "
                           "its header announces (truncated or damaged); the events so far are logged")


def _reconnect(source: FrameSource, policy: Reconnect, tries: int, outcome: ReadOutcome,
               report: Callable[[str], None], sleep: Callable[[float], None]) -> int | None:
    """Reopen a failed live source under ``policy``, ``tries`` attempts having been spent since the
    last frame; the attempts spent now, or None (``outcome`` says ``lost``) when it stays down."""
    report(f"{source.source.name}: no frame after frame {outcome.frames}; reconnecting")
    last = "it opened but gave no frame" if tries else "no attempt allowed (--reconnect 0)"
    while tries < policy.attempts:
        tries += 1
        sleep(policy.delay(tries))
        try:
            source.open()
        except FacespaceError as exc:
            last = str(exc)
            report(f"reconnection {tries}/{policy.attempts} failed: {exc}")
            continue
        outcome.reconnects += 1
        report(f"reconnected (attempt {tries}/{policy.attempts})")
        return tries
    source.release()
    outcome.status = "lost"
    outcome.message = (f"{source.source.name}: the stream stopped after frame {outcome.frames} and could not be "
                       f"reopened in {policy.attempts} attempt(s) ({last}); the events so far are logged")
    return None
