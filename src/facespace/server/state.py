"""What one app shares between its requests: its settings and the lazily built pipeline, gallery and identifier.

``create_app`` puts one :class:`ServerState` at ``app.state.facespace``; routes reach it
through the :func:`facespace.server.deps.get_state` dependency.
"""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence, TypeVar

from .albums import AlbumStore
from .errors import ApiError
from .pool import InferencePool

if TYPE_CHECKING:
    from ..attendance import AttendanceLog
    from ..gallery import GalleryBackend, Identifier
    from ..pipeline import FacePipeline

T = TypeVar("T")


@dataclass(frozen=True)
class Limits:
    """Request limits: bytes per uploaded file and per request, pixels per image, files per request,
    decoded pixels per request (the images' headers summed), and the admission queue: requests
    admitted at once (None: :func:`~facespace.server.pool.default_queue` of the workers) and the
    seconds an admitted request waits for an inference worker (see :mod:`facespace.server.pool`)."""

    max_upload_bytes: int = 10 * 1024 * 1024
    max_request_bytes: int = 64 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_files: int = 100
    max_top: int = 100
    max_request_pixels: int = 1_000_000_000
    max_queue: int | None = None
    queue_timeout: float = 30.0


class ServerState:
    """One app's settings, and the pipeline, gallery and identifier it builds on first need."""

    def __init__(self, factory: Callable[[], "FacePipeline"], gallery_path: str | Path | None = None,
                 api_key: str | None = None, limits: Limits = Limits(), demos: Sequence[str | Path] = (),
                 far: float = 0.01, index: str = "auto", inference_threads: int = 1,
                 albums_root: str | Path | None = None, attendance_path: str | Path | None = None) -> None:
        self.pool = InferencePool(factory, inference_threads, limits.max_queue, limits.queue_timeout)
        self.limits = replace(limits, max_queue=self.pool.max_queue)
        self.api_key = api_key
        self.gallery_path = gallery_path
        self.demos = tuple(Path(p) for p in demos)
        self._far, self._index = far, index
        self.gallery_lock = threading.RLock()
        self._gallery: GalleryBackend | None = None
        self._identifiers: dict = {}
        self.attendance_path = attendance_path
        self._attendance: AttendanceLog | None = None
        self.albums = AlbumStore(albums_root)

    @property
    def has_gallery(self) -> bool:
        return self.gallery_path is not None

    @property
    def loaded(self) -> bool:
        return self.pool.loaded

    @property
    def queue(self) -> dict:
        """The admission queue's occupancy (admitted requests, its size, the workers)."""
        return self.pool.occupancy()

    def pipeline(self) -> "FacePipeline":
        """The pipeline that describes the app's (model, threshold, preprocessing); for inference use :meth:`run`."""
        return self.pool.primary()

    def warm(self) -> None:
        """Build every inference worker's pipeline now, networks loaded, so that the first request
        runs at full speed."""
        for pipeline in self.pool.pipelines():
            pipeline.detector, pipeline.embedder.network

    def admitted(self) -> AbstractContextManager[None]:
        """A place in the admission queue for a request that will infer (503 ``busy`` when it is full);
        take it before reading the uploads."""
        return self.pool.admitted()

    def run(self, fn: Callable[["FacePipeline"], T]) -> T:
        """``fn(pipeline)`` on an inference worker, within an :meth:`admitted` block."""
        return self.pool.run(fn)

    def gallery(self) -> "GalleryBackend":
        """The gallery (a file or a PostgreSQL URL), opened on first need and kept open."""
        from ..gallery import open_gallery

        if self.gallery_path is None:
            raise ApiError(503, "no_gallery", "this server has no gallery (start it with --gallery)")
        if self._gallery is None:
            self._gallery = open_gallery(self.gallery_path, mode="create")
        return self._gallery

    def attendance(self) -> "AttendanceLog":
        """The attendance log ``facespace attend`` writes (404 ``no_attendance`` without one)."""
        from ..attendance import AttendanceLog

        if self.attendance_path is None:
            raise ApiError(404, "no_attendance", "this server has no attendance log (start it with --attendance)")
        with self.gallery_lock:
            if self._attendance is None:
                self._attendance = AttendanceLog(self.attendance_path, mode="write")
            return self._attendance

    def identifier(self, threshold: float | None) -> "Identifier":
        from ..gallery import Identifier

        with self.gallery_lock:
            g = self.gallery()
            if g.model is None:
                raise ApiError(409, "empty_gallery", "the gallery is empty; enrol identities first")
            key = (g.generation, threshold)  # read from the gallery: another worker's enrolment moves it on
            if key not in self._identifiers:
                self._identifiers = {key: Identifier.for_pipeline(g, self.pipeline(), threshold=threshold,
                                                                  far=self._far, index=self._index,
                                                                  allow_map=True)}
            return self._identifiers[key]
