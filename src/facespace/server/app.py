"""FastAPI application: detect, embed, verify, identify, enrol, list/remove identities, cluster.

Every error is JSON ``{"error": {"type": ..., "message": ...}}`` with a fitting
status: 400 unreadable image, bad input or a Host the server does not answer
to (``bad_host``), 401 missing/wrong API key, 403 a state-changing request from
another web origin (``bad_origin``), 404 unknown identity, 409 model mismatch
or duplicate name, 413 upload, image or request too large (bytes, files, or
decoded pixels: ``too_many_pixels``), 422 no face where one is needed or
invalid parameters, 503 no gallery configured, its database unreachable (``gallery_unavailable``, with
``Retry-After``), or inference too busy: the
admission queue is full (``busy``) or no worker was free within the queue
timeout (``queue_timeout``), both with ``Retry-After``.

The routes live in ``routes_*`` by area, the errors in :mod:`.errors`, the
Host/Origin checks in :mod:`.security`, the inference workers and admission
queue in :mod:`.pool`, the shared per-app objects in :mod:`.state` (reached
through :mod:`.deps`). Every answer names the process that gave it (``X-Facespace-Worker``:
its pid), for several workers (``facespace serve --workers N``) or machines behind a load
balancer; they share one gallery, a PostgreSQL one (see :mod:`facespace.cli.serve`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from fastapi import FastAPI

from . import routes_albums, routes_cluster, routes_gallery, routes_inference, routes_pages, routes_people
from . import routes_attendance
from .errors import ApiError, install_error_handling
from .pool import ShedWhenFull
from .security import Security, SecurityMiddleware
from .state import Limits, ServerState

if TYPE_CHECKING:
    from ..pipeline import FacePipeline

__all__ = ["ApiError", "Limits", "Security", "create_app", "warm"]


def create_app(
    pipeline_factory: Callable[[], "FacePipeline"],
    gallery_path: str | Path | None = None,
    api_key: str | None = None,
    limits: Limits = Limits(),
    demo_images: Sequence[str | Path] = (),
    far: float = 0.01,
    index: str = "auto",
    security: Security = Security(),
    inference_threads: int = 1,
    albums_root: str | Path | None = None,
    attendance_path: str | Path | None = None,
) -> FastAPI:
    """The facespace REST app.

    ``pipeline_factory`` is called once per inference thread, on first need (or by
    :func:`warm`); ``gallery_path`` enables identify/enrol/identities; ``api_key``
    (if set) must come as ``X-API-Key`` or ``Authorization: Bearer`` on every
    ``/api`` call and ``/demo``; ``demo_images`` are served at ``/demo/<i>`` for the
    page's demo mode; ``security`` names the hosts and origins answered (default:
    loopback names only); ``inference_threads`` pipelines run at once; ``albums_root`` is the folder whose
    sub-folders the web app may cluster as albums (None: uploads only).
    """
    from ..version import __version__

    app = FastAPI(title="facespace", version=__version__,
                  description="FaceNet face detection, embedding, verification, identification and clustering.")
    state = ServerState(pipeline_factory, gallery_path, api_key, limits, demo_images, far, index, inference_threads,
                        albums_root, attendance_path=attendance_path)
    app.state.facespace = state
    install_error_handling(app)
    app.add_middleware(ShedWhenFull, pool=state.pool)
    app.add_middleware(SecurityMiddleware, security=security)
    app.add_middleware(WorkerHeader)  # added last: runs first
    for router in (routes_pages.router, routes_inference.router, routes_gallery.identify_router(limits.max_top),
                   routes_gallery.router, routes_cluster.router, routes_people.router, routes_albums.router):
        app.include_router(router)
    app.include_router(routes_attendance.router)  # attendance: needs attendance_path (serve --attendance)
    return app


class WorkerHeader:
    """ASGI middleware: ``X-Facespace-Worker: <pid>`` on every HTTP answer (which process served it)."""

    def __init__(self, app) -> None:
        self.app, self.header = app, (b"x-facespace-worker", str(os.getpid()).encode())

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_named(message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, send_named)


def warm(app: FastAPI) -> None:
    """Build the pipelines now instead of on the first request."""
    app.state.facespace.warm()
