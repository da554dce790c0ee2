"""The inference routes: ``/api/detect``, ``/api/embed`` and ``/api/verify``.

Each takes its place in the admission queue before reading its upload, decodes it on the
request's own thread, and runs the networks on an inference worker (see :mod:`.pool`).
"""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Depends, File, Form, UploadFile

from ..errors import FacespaceError, NoFaceError
from ..face_choice import choose_face
from .deps import AUTH, get_state, load_upload
from .state import ServerState

router = APIRouter(tags=["inference"], dependencies=AUTH)


@router.post("/api/detect")
def detect(image: UploadFile = File(..., description="photo"), state: ServerState = Depends(get_state)) -> dict:
    with state.admitted():
        array = load_upload(image, "image", state.limits)
        faces = state.run(lambda p: p.detect_arrays([array])[0])
    return {"width": array.shape[1], "height": array.shape[0], "faces": [f.to_dict() for f in faces]}


@router.post("/api/embed")
def embed(image: UploadFile = File(...), state: ServerState = Depends(get_state)) -> dict:
    with state.admitted():
        array = load_upload(image, "image", state.limits)
        faces = state.run(lambda p: p.embed(array))
    p = state.pipeline()
    return {"model": p.model_name, "preprocessing_id": p.preprocessing_id,
            "width": array.shape[1], "height": array.shape[0], "faces": [f.to_dict() for f in faces]}


@router.post("/api/verify")
def verify(a: UploadFile = File(..., description="first photo"),
           b: UploadFile = File(..., description="second photo"),
           threshold: float | None = Form(None, ge=0, le=4),
           min_quality: float | None = Form(None, ge=0, le=1),
           state: ServerState = Depends(get_state)) -> dict:
    from ..comparison import verify as compare

    uploads = {"a": a, "b": b}
    with state.admitted():
        images = {key: load_upload(upload, key, state.limits) for key, upload in uploads.items()}
        found = state.run(lambda p: {key: p.embed(array) for key, array in images.items()})  # one turn for both
    faces = {key: _faces(found[key], images[key], f"{key} ({uploads[key].filename})") for key in uploads}
    p = state.pipeline()
    chosen = faces["a"][0], faces["b"][0]
    verdict = compare(chosen[0].embedding, chosen[1].embedding, p.threshold if threshold is None else threshold,
                      (chosen[0].quality or 0.0, chosen[1].quality or 0.0),
                      p.min_quality if min_quality is None else min_quality)
    out = verdict.to_dict()
    probability = _probability(p, verdict.distance)
    if probability is not None:
        out["probability"] = probability
    out["faces"] = {k: {"chosen": _described(chosen), "all": [_described(f) for f in found],
                        "width": int(images[k].shape[1]), "height": int(images[k].shape[0])}
                    for k, (chosen, found) in faces.items()}
    return out


def _described(face) -> dict:
    """An embedded face's JSON without its embedding: box, score, landmarks, pose, quality."""
    out = face.to_dict()
    out.pop("embedding")
    return out


def _faces(found: list, array: np.ndarray, name: str) -> tuple:
    """(the face verify uses, all ``found`` faces) of one image; NoFaceError when it has none."""
    if not found:
        raise NoFaceError(f"{name}: no face found")
    return choose_face(found, array.shape, "largest"), found


def _probability(pipeline, distance: float) -> float | None:
    """The calibrated same-person probability at ``distance``, or None without a calibration."""
    try:
        from ..calibration import Calibration

        return round(float(Calibration.load(pipeline.model_name, pipeline.threshold).probability(distance)), 6)
    except (FacespaceError, OSError, KeyError, ValueError):
        return None
