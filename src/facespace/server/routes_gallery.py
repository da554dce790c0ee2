"""The gallery routes: ``/api/identify`` and ``/api/identities`` (enrol, list, remove).

identify is made per app by :func:`identify_router`, since its ``top`` is bounded by the app's ``max_top``.
Enrolment hands the pipeline the uploads' bytes (checked from their headers), so they are decoded
chunk by chunk; one that fails only when decoded is reported among the skipped images.
"""

from __future__ import annotations

import functools
import threading

import numpy as np
from fastapi import APIRouter, Depends, File, Form, UploadFile

from ..errors import NoFaceError
from .deps import AUTH, get_state, load_upload, read_images
from .state import ServerState

router = APIRouter(tags=["gallery"], dependencies=AUTH)


def identify_router(max_top: int) -> APIRouter:
    """The identify route, with ``top`` at most ``max_top``."""
    identify_only = APIRouter(tags=["gallery"], dependencies=AUTH)

    @identify_only.post("/api/identify")
    def identify(image: UploadFile = File(...), top: int = Form(5, ge=1, le=max_top),
                 threshold: float | None = Form(None, ge=0, le=4), min_quality: float | None = Form(None, ge=0, le=1),
                 state: ServerState = Depends(get_state)) -> dict:
        with state.admitted():
            array = load_upload(image, "image", state.limits)
            identifier = state.identifier(threshold)
            faces = state.run(lambda p: p.embed(array))
        found = identifier.search(np.stack([f.embedding for f in faces]), k=top) if faces else []
        floor = state.pipeline().min_quality if min_quality is None else min_quality
        found = [ident.with_quality(f.quality, floor) for f, ident in zip(faces, found)]
        mapped = {"map": identifier.map_name} if identifier.map_name else {}  # a gallery of another model
        return {"width": array.shape[1], "height": array.shape[0], "threshold": identifier.threshold, **mapped,
                "faces": [{**f.face.to_dict(), **ident.to_dict()} for f, ident in zip(faces, found)]}

    return identify_only


@router.post("/api/identities", status_code=201)
def enroll(name: str = Form(..., min_length=1, max_length=200),
           images: list[UploadFile] = File(..., description="photos of this person"),
           replace: bool = Form(False), state: ServerState = Depends(get_state)) -> dict:
    from ..gallery.enrol import enroll_images

    sources = [f.filename or f"upload{i}" for i, f in enumerate(images)]
    with state.admitted():
        uploads = read_images(images, state.limits)
        with state.gallery_lock:
            g = state.gallery()
            g.check_pipeline(state.pipeline())  # refuse a mismatch before the slow part
        locked = _Locked(g, state.gallery_lock)  # the gallery is free to others while the images are embedded
        result = state.run(lambda p: enroll_images(locked, p, name, uploads, replace=replace, sources=sources))
    if not result.usable:  # re-sending photos already enrolled is not "no face"
        reasons = "; ".join(f"{source}: {why}" for source, why in result.skipped[:5])
        raise NoFaceError(f"no face found in any image for {name!r}; nothing enrolled ({reasons})")
    return result.to_dict()


@router.get("/api/identities")
def identities(state: ServerState = Depends(get_state)) -> dict:
    with state.gallery_lock:
        g = state.gallery()
        return {"model": g.model, "identities": [i.to_dict() for i in g.identities()]}


@router.delete("/api/identities/{name}")
def remove(name: str, state: ServerState = Depends(get_state)) -> dict:
    with state.gallery_lock:
        count = state.gallery().remove(name)
    return {"removed": name, "embeddings": count}


class _Locked:
    """``target`` with each attribute read and method call made under ``lock``."""

    def __init__(self, target: object, lock: threading.RLock) -> None:
        self._target, self._lock = target, lock

    def __getattr__(self, name: str):
        with self._lock:
            value = getattr(self._target, name)
        if not callable(value):
            return value

        @functools.wraps(value)
        def locked(*args, **kwargs):
            with self._lock:
                return value(*args, **kwargs)

        return locked
