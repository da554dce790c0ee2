"""The page and service routes: ``/`` (the web app), ``/static/<file>``, ``/demo/<i>``, ``/health`` and ``/api/info``.

The web app's page and script need no key (they hold no data); everything they show comes from
the keyed API.

``/demo/<i>`` is a stored photo: it needs the API key as ``/api`` does. ``/health`` runs on the
event loop and touches no lock, so it is answered at once however busy inference is.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from .deps import AUTH, get_state
from .errors import ApiError
from .state import Limits, ServerState

router = APIRouter()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def page(state: ServerState = Depends(get_state)) -> HTMLResponse:
    from .page import render_page

    return HTMLResponse(render_page(requires_key=state.api_key is not None, demos=len(state.demos),
                                    has_gallery=state.has_gallery, albums=state.albums.root is not None))


@router.get("/static/{name}", include_in_schema=False)
def static(name: str) -> Response:
    from .page import STATIC_FILES, static_file

    if name not in STATIC_FILES:
        raise ApiError(404, "not_found", f"no file {name!r}")
    return Response(static_file(name), media_type=STATIC_FILES[name], headers={"Cache-Control": "no-cache"})


@router.get("/demo/{number}", include_in_schema=False, dependencies=AUTH)
def demo(number: int, state: ServerState = Depends(get_state)) -> Response:
    demos = state.demos
    if not 0 <= number < len(demos):
        raise ApiError(404, "not_found", f"no demo image {number}")
    suffix = demos[number].suffix.lower().lstrip(".")
    media = {"jpg": "image/jpeg", "jpeg": "image/jpeg"}.get(suffix, f"image/{suffix}")
    return Response(demos[number].read_bytes(), media_type=media)


@router.get("/health", tags=["service"])
async def health(request: Request) -> dict:
    state = get_state(request)
    return {"status": "ok", "pipeline_loaded": state.loaded, "gallery": state.has_gallery, "inference": state.queue}


@router.get("/api/info", tags=["service"], dependencies=AUTH)
def info(state: ServerState = Depends(get_state)) -> dict:
    p = state.pipeline()
    out = {"model": p.model_name, "preprocessing_id": p.preprocessing_id, "threshold": p.threshold,
           "embedding_size": p.dim,
           "limits": {k: getattr(state.limits, k) for k in Limits.__dataclass_fields__}}
    if state.has_gallery:
        with state.gallery_lock:
            g = state.gallery()
            out["gallery"] = {"identities": len(g), "model": g.model}
    return out
