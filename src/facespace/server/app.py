"""FastAPI application: detect, embed, verify, identify, enrol, list/remove identities, cluster.

Every error is JSON ``{"error": {"type": ..., "message": ...}}`` with a fitting
status: 400 unreadable image or bad input, 401 missing/wrong API key, 404
unknown identity, 409 model mismatch or duplicate name, 413 upload or image
too large, 422 no face where one is needed or invalid parameters, 503 no
gallery configured.

The routes live in ``routes_*`` by area, the errors in :mod:`.errors`, the
shared per-app objects in :mod:`.state` (reached through :mod:`.deps`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from fastapi import FastAPI

from . import routes_cluster, routes_gallery, routes_inference, routes_pages
from .errors import ApiError, install_error_handling
from .state import Limits, ServerState

if TYPE_CHECKING:
    from ..pipeline import FacePipeline

__all__ = ["ApiError", "Limits", "create_app", "warm"]


def create_app(
    pipeline_factory: Callable[[], "FacePipeline"],
    gallery_path: str | Path | None = None,
    api_key: str | None = None,
    limits: Limits = Limits(),
    demo_images: Sequence[str | Path] = (),
    far: float = 0.01,
    index: str = "auto",
) -> FastAPI:
    """The facespace REST app.

    ``pipeline_factory`` is called once, on first need (or by :func:`warm`);
    ``gallery_path`` enables identify/enrol/identities; ``api_key`` (if set)
    must come as ``X-API-Key`` or ``Authorization: Bearer`` on every ``/api``
    call; ``demo_images`` are served at ``/demo/<i>`` for the page's demo mode.
    """
    from ..version import __version__

    app = FastAPI(title="facespace", version=__version__,
                  description="FaceNet face detection, embedding, verification, identification and clustering.")
    app.state.facespace = ServerState(pipeline_factory, gallery_path, api_key, limits, demo_images, far, index)
    install_error_handling(app)
    for router in (routes_pages.router, routes_inference.router, routes_gallery.identify_router(limits.max_top),
                   routes_gallery.router, routes_cluster.router):
        app.include_router(router)
    return app


def warm(app: FastAPI) -> None:
    """Build the pipeline now instead of on the first request."""
    app.state.facespace.pipeline()
