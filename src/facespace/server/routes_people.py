"""The people routes of the web app: everyone enrolled with counts and thumbnails, a thumbnail,
and renaming (enrolment and removal are ``/api/identities`` in :mod:`.routes_gallery`).

A name may hold any character but control characters, ``/`` included, so the routes that take
one in their path match it with Starlette's ``path`` converter.
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from pydantic import BaseModel, Field

from .deps import AUTH, get_state
from .errors import ApiError
from .state import ServerState

router = APIRouter(tags=["gallery"], dependencies=AUTH)


class NewName(BaseModel):
    name: str = Field(..., min_length=1, max_length=200)


def thumbnail_url(name: str) -> str:
    return f"/api/people/{quote(name, safe='')}/thumbnail"


@router.get("/api/people")
def people(state: ServerState = Depends(get_state)) -> dict:
    """Every identity with its embedding count and the URL of its thumbnail (null without one)."""
    with state.gallery_lock:
        g = state.gallery()
        listed = [{**i.to_dict(), "thumbnail_url": thumbnail_url(i.name) if g.thumbnail(i.name) else None}
                  for i in g.identities()]
        return {"model": g.model, "people": listed}


@router.get("/api/people/{name:path}/thumbnail", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}}})
def thumbnail(name: str, state: ServerState = Depends(get_state)) -> Response:
    with state.gallery_lock:
        g = state.gallery()
        g.get(name)  # 404 unknown_identity
        jpeg = g.thumbnail(name)
    if jpeg is None:
        raise ApiError(404, "no_thumbnail", f"{name!r} has no thumbnail")
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, no-cache"})


@router.patch("/api/identities/{name:path}")
def rename(name: str, body: NewName, state: ServerState = Depends(get_state)) -> dict:
    """Rename an identity: its embeddings and thumbnail go with it (409 if the new name is taken)."""
    with state.gallery_lock:
        state.gallery().rename(name, body.name)
    return {"renamed": name, "name": body.name}
