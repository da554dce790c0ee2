"""The clustering route: ``/api/cluster``, and :func:`cluster_vectors` (the rule shared with the albums).

The uploads are checked from their headers and handed to the pipeline as bytes, so it decodes
them chunk by chunk (by decoded pixels) instead of holding every image at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from fastapi import APIRouter, Depends, File, Form, UploadFile

from ..errors import ImageLoadError
from .deps import AUTH, get_state, read_images
from .errors import ApiError
from .state import ServerState

if TYPE_CHECKING:
    from ..clustering import Clustering

router = APIRouter(tags=["clustering"], dependencies=AUTH)


def check_method(method: str) -> str:
    """``method`` if it is a clustering method, else 422."""
    from ..clustering import METHODS

    if method not in METHODS:
        raise ApiError(422, "invalid_request", f"method must be one of {', '.join(METHODS)}")
    return method


def cluster_vectors(state: ServerState, vectors: list[np.ndarray], method: str, threshold: float | None,
                    k: int | None = None) -> "Clustering":
    """The faces' embeddings clustered by ``method``, at the method's default threshold for the
    app's model and this many faces unless ``threshold`` is given."""
    from ..clustering import cluster, default_threshold

    p = state.pipeline()
    t = default_threshold(p.model_name, method, len(vectors), p.threshold) if threshold is None else threshold
    stacked = np.stack(vectors) if vectors else np.zeros((0, p.dim), np.float32)
    return cluster(stacked, method, threshold=t, k=k)


@router.post("/api/cluster")
def cluster_endpoint(images: list[UploadFile] = File(...),
                     method: str = Form("agglomerative"),
                     threshold: float | None = Form(None, ge=0, le=4),
                     k: int | None = Form(None, ge=1),
                     state: ServerState = Depends(get_state)) -> dict:
    check_method(method)
    with state.admitted():
        uploads = read_images(images, state.limits)
        results = state.run(lambda p: p.embed_images(uploads, on_error="report"))
    faces, vectors = [], []
    for i, result in enumerate(results):
        if not result.ok:  # a header that read well over data that did not
            raise ImageLoadError(f"images[{i}] ({images[i].filename}): {result.error}")
        for f in result.faces:
            faces.append({"image": i, "filename": images[i].filename, **f.face.to_dict()})
            vectors.append(f.embedding)
    clustering = cluster_vectors(state, vectors, method, threshold, k)
    return {"method": method, "params": clustering.params, "faces": len(faces),
            "clusters": [[faces[j] for j in members] for members in clustering.clusters()]}
