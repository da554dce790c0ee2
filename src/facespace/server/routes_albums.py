"""The album routes of the web app: cluster uploaded photos or a folder under ``--albums-root``,
see each cluster's faces, and enrol a cluster under a name.

``POST /api/albums`` (uploads) and ``POST /api/albums/folder`` (JSON ``{"folder"}``) embed every
face, crop it, cluster the faces (:func:`.routes_cluster.cluster_vectors`) and keep the album
(:mod:`.albums`); the answer lists the clusters with each face's crop URL. A folder's images
come under the same limits as uploads (files, bytes, pixels).
"""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Depends, File, Form, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, Field

from .albums import Album
from .deps import AUTH, get_state, read_files, read_images
from .errors import ApiError
from .routes_cluster import check_method, cluster_vectors
from .state import ServerState

router = APIRouter(tags=["albums"], dependencies=AUTH)


class FolderAlbum(BaseModel):
    folder: str = Field("", max_length=4096)
    method: str = "agglomerative"
    threshold: float | None = Field(None, ge=0, le=4)


class ClusterName(BaseModel):
    name: str = Field(..., min_length=1, max_length=200)


def _make_album(state: ServerState, images: list[bytes], filenames: list[str], source: str, method: str,
                threshold: float | None) -> dict:
    from .albums import embed_album

    faces, skipped = state.run(lambda p: embed_album(p, images, filenames))
    clustering = cluster_vectors(state, [f.embedding for f in faces], method, threshold)
    album = state.albums.add(source, faces, skipped, [[int(j) for j in c] for c in clustering.clusters()],
                             method, clustering.params)
    return album.to_dict()


@router.post("/api/albums")
def album_from_uploads(images: list[UploadFile] = File(...), method: str = Form("agglomerative"),
                       threshold: float | None = Form(None, ge=0, le=4),
                       state: ServerState = Depends(get_state)) -> dict:
    check_method(method)
    with state.admitted():
        uploads = read_images(images, state.limits)
        names = [f.filename or f"upload{i}" for i, f in enumerate(images)]
        return _make_album(state, uploads, names, f"{len(images)} uploaded photos", method, threshold)


@router.get("/api/albums/folders")
def album_folders(state: ServerState = Depends(get_state)) -> dict:
    """The folders under the albums root that hold images (404 ``no_albums_root`` without one)."""
    return {"folders": state.albums.folders()}


@router.post("/api/albums/folder")
def album_from_folder(body: FolderAlbum, state: ServerState = Depends(get_state)) -> dict:
    from ..files import image_files

    check_method(body.method)
    folder = state.albums.folder(body.folder)
    paths = image_files(folder, recursive=False)
    if not paths:
        raise ApiError(422, "no_images", f"folder {body.folder!r} holds no images")
    labels = [p.relative_to(state.albums.root).as_posix() for p in paths]
    with state.admitted():
        images = read_files(paths, labels, state.limits)
        return _make_album(state, images, labels, f"folder {body.folder or '.'}", body.method, body.threshold)


@router.get("/api/albums/{album_id}")
def album(album_id: str, state: ServerState = Depends(get_state)) -> dict:
    return state.albums.get(album_id).to_dict()


@router.get("/api/albums/{album_id}/faces/{face}", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}}})
def album_face(album_id: str, face: int, state: ServerState = Depends(get_state)) -> Response:
    faces = state.albums.get(album_id).faces
    if not 0 <= face < len(faces):
        raise ApiError(404, "not_found", f"album {album_id} has no face {face}")
    return Response(faces[face].crop, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


@router.post("/api/albums/{album_id}/clusters/{number}/enrol", status_code=201)
def enrol_cluster(album_id: str, number: int, body: ClusterName, state: ServerState = Depends(get_state)) -> dict:
    """Enrol the faces of cluster ``number`` as ``name`` (added to an identity of that name if there is one);
    its first face becomes the identity's thumbnail if it has none."""
    found = state.albums.get(album_id)
    if not 0 <= number < len(found.clusters):
        raise ApiError(404, "not_found", f"album {album_id} has no cluster {number}")
    return _enrol(state, found, found.clusters[number], body.name)


def _enrol(state: ServerState, found: Album, members: list[int], name: str) -> dict:
    p = state.pipeline()
    faces = [found.faces[j] for j in members]
    with state.gallery_lock:
        g = state.gallery()
        stored = g.store_embeddings(name, np.stack([f.embedding for f in faces]), [f.filename for f in faces],
                                    model=p.model_name, preprocessing_id=p.preprocessing_id)
        if g.thumbnail(name) is None:
            g.put_thumbnail(name, faces[0].crop)
    return {"name": name, "added": stored.added, "duplicates": stored.duplicates}
