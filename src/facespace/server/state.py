"""What one app shares between its requests: its settings and the lazily built pipeline, gallery and identifier.

``create_app`` puts one :class:`ServerState` at ``app.state.facespace``; routes reach it
through the :func:`facespace.server.deps.get_state` dependency.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from .errors import ApiError

if TYPE_CHECKING:
    from ..gallery import Gallery, Identifier
    from ..pipeline import FacePipeline


@dataclass(frozen=True)
class Limits:
    """Request limits: bytes per uploaded file and per request, pixels per image, files per request."""

    max_upload_bytes: int = 10 * 1024 * 1024
    max_request_bytes: int = 64 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_files: int = 100
    max_top: int = 100


class ServerState:
    """One app's settings, and the pipeline, gallery and identifier it builds on first need."""

    def __init__(self, factory: Callable[[], "FacePipeline"], gallery_path: str | Path | None = None,
                 api_key: str | None = None, limits: Limits = Limits(), demos: Sequence[str | Path] = (),
                 far: float = 0.01, index: str = "auto") -> None:
        self.limits = limits
        self.api_key = api_key
        self.gallery_path = gallery_path
        self.demos = tuple(Path(p) for p in demos)
        self._factory = factory
        self._far, self._index = far, index
        self._pipeline: FacePipeline | None = None
        self._lock = threading.Lock()  # one inference at a time: the CPU is the bottleneck anyway
        self.gallery_lock = threading.RLock()
        self._gallery: Gallery | None = None
        self._identifiers: dict = {}

    @property
    def has_gallery(self) -> bool:
        return self.gallery_path is not None

    @property
    def loaded(self) -> bool:
        return self._pipeline is not None

    def pipeline(self) -> "FacePipeline":
        with self._lock:
            if self._pipeline is None:
                self._pipeline = self._factory()
            return self._pipeline

    def run(self, fn):
        """``fn(pipeline)``, alone: requests take turns at the pipeline."""
        pipeline = self.pipeline()
        with self._lock:
            return fn(pipeline)

    def gallery(self) -> "Gallery":
        from ..gallery import Gallery

        if self.gallery_path is None:
            raise ApiError(503, "no_gallery", "this server has no gallery (start it with --gallery)")
        if self._gallery is None:
            self._gallery = Gallery(self.gallery_path)
        return self._gallery

    def identifier(self, threshold: float | None) -> "Identifier":
        from ..gallery import Identifier

        with self.gallery_lock:
            g = self.gallery()
            if g.model is None:
                raise ApiError(409, "empty_gallery", "the gallery is empty; enrol identities first")
            key = (g.generation, threshold)
            if key not in self._identifiers:
                self._identifiers = {key: Identifier.for_pipeline(g, self.pipeline(), threshold=threshold,
                                                                  far=self._far, index=self._index)}
            return self._identifiers[key]
