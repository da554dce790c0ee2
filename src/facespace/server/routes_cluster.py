"""The clustering route: ``/api/cluster``."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Depends, File, Form, UploadFile

from .deps import AUTH, get_state, load_uploads
from .errors import ApiError
from .state import ServerState

router = APIRouter(tags=["clustering"], dependencies=AUTH)


@router.post("/api/cluster")
def cluster_endpoint(images: list[UploadFile] = File(...),
                     method: str = Form("agglomerative"),
                     threshold: float | None = Form(None, ge=0, le=4),
                     k: int | None = Form(None, ge=1),
                     state: ServerState = Depends(get_state)) -> dict:
    from ..clustering import METHODS, cluster, default_threshold

    if method not in METHODS:
        raise ApiError(422, "invalid_request", f"method must be one of {', '.join(METHODS)}")
    arrays = load_uploads(images, state.limits)
    results = state.run(lambda p: p.embed_images(arrays, on_error="raise"))
    faces, vectors = [], []
    for i, result in enumerate(results):
        for f in result.faces:
            faces.append({"image": i, "filename": images[i].filename, **f.face.to_dict()})
            vectors.append(f.embedding)
    p = state.pipeline()
    t = default_threshold(p.model_name, method, len(vectors), p.threshold) if threshold is None else threshold
    stacked = np.stack(vectors) if vectors else np.zeros((0, p.embedder.dim), np.float32)
    clustering = cluster(stacked, method, threshold=t, k=k)
    return {"method": method, "params": clustering.params, "faces": len(faces),
            "clusters": [[faces[j] for j in members] for members in clustering.clusters()]}
