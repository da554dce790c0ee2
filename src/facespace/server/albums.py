"""Albums for the web app: photos clustered by person, kept in memory so a cluster can be named.

An album is made from uploaded photos or from a folder under the operator's ``--albums-root``
(:meth:`AlbumStore.folder` resolves the name the browser sent and refuses anything outside
the root: 400 for an absolute path or a ``..`` part, 403 for a link that leads out). Each face
keeps its embedding and a small JPEG crop (:mod:`facespace.thumbnails`) for the face grids; the
photos themselves are not kept. The store holds the last :data:`KEEP` albums of the app; an
older one answers 404 and is simply made again. An album holds at most :data:`MAX_FACES` faces (413).
"""

from __future__ import annotations

import os
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import ApiError

if TYPE_CHECKING:
    from ..pipeline import FacePipeline

#: Albums kept per app (each about 4 KB a face).
KEEP = 8
#: Folders listed under the albums root, at most.
MAX_FOLDERS = 500
#: Faces one album may hold (a crowd photo has hundreds): with :data:`KEEP`, the store's memory bound.
MAX_FACES = 2000


@dataclass(frozen=True)
class AlbumFace:
    """One face of an album: where it came from, its detection, crop and embedding."""

    image: int
    filename: str
    face: dict
    crop: bytes
    embedding: np.ndarray


@dataclass(frozen=True)
class Album:
    id: str
    source: str
    faces: list[AlbumFace]
    skipped: list[dict]
    clusters: list[list[int]]
    method: str
    params: dict

    def to_dict(self) -> dict:
        return {"album": self.id, "source": self.source, "method": self.method, "params": self.params,
                "faces": len(self.faces), "skipped": self.skipped,
                "clusters": [[{"face": j, "image": self.faces[j].image, "filename": self.faces[j].filename,
                               "crop_url": f"/api/albums/{self.id}/faces/{j}", **self.faces[j].face}
                              for j in members] for members in self.clusters]}


def embed_album(pipeline: "FacePipeline", images: list[bytes],
                filenames: list[str]) -> tuple[list[AlbumFace], list[dict]]:
    """Every face of every image with its crop; images that cannot be read are listed, not fatal."""
    from ..errors import FacespaceError
    from ..thumbnails import thumbnail_jpeg

    faces, skipped = [], []
    for i, result in enumerate(pipeline.embed_images(images, on_error="report")):
        if result.ok and result.faces:
            try:
                array = pipeline.load(images[i])
            except FacespaceError as exc:
                result.error = str(exc)
        if not result.ok:
            skipped.append({"image": i, "filename": filenames[i], "reason": result.error})
            continue
        if len(faces) + len(result.faces) > MAX_FACES:
            raise ApiError(413, "too_many_faces", f"the photos hold more than {MAX_FACES} faces; cluster fewer at once")
        for f in result.faces:
            faces.append(AlbumFace(i, filenames[i], f.face.to_dict(), thumbnail_jpeg(array, f.face.box), f.embedding))
    return faces, skipped


class AlbumStore:
    """The app's recent albums, and the folders under its albums root (None: no folders offered)."""

    def __init__(self, root: str | os.PathLike | None = None, keep: int = KEEP) -> None:
        self.root = Path(root).resolve() if root is not None else None
        self._keep = keep
        self._albums: OrderedDict[str, Album] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, source: str, faces: list[AlbumFace], skipped: list[dict], clusters: list[list[int]],
            method: str, params: dict) -> Album:
        album = Album(uuid.uuid4().hex[:12], source, faces, skipped, clusters, method, params)
        with self._lock:
            self._albums[album.id] = album
            while len(self._albums) > self._keep:
                self._albums.popitem(last=False)
        return album

    def get(self, album_id: str) -> Album:
        with self._lock:
            album = self._albums.get(album_id)
        if album is None:
            raise ApiError(404, "unknown_album", f"no album {album_id!r} (albums are kept in memory, the last "
                                                 f"{self._keep}: cluster the photos again)")
        return album

    def _root(self) -> Path:
        if self.root is None:
            raise ApiError(404, "no_albums_root", "this server offers no folders (start it with --albums-root DIR)")
        return self.root

    def folder(self, name: str) -> Path:
        """The folder ``name`` (relative to the root, ``/``-separated; ``""`` or ``.`` the root itself)."""
        root = self._root()
        if "\x00" in name or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
            raise ApiError(400, "bad_path", f"folder {name!r}: give a path relative to the albums root")
        parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
        if ".." in parts:
            raise ApiError(400, "bad_path", f"folder {name!r}: '..' is not allowed")
        path = root.joinpath(*parts).resolve()
        if path != root and root not in path.parents:
            raise ApiError(403, "outside_albums_root", f"folder {name!r} lies outside the albums root")
        if not path.is_dir():
            raise ApiError(404, "no_such_folder", f"no folder {name!r} under the albums root")
        return path

    def folders(self) -> list[dict]:
        """The root and the folders under it that hold images directly (links not followed)."""
        from ..files import image_files

        root, found = self._root(), []
        for here, dirs, _ in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            count = len(image_files(here, recursive=False))
            if count:
                relative = Path(here).relative_to(root).as_posix()
                found.append({"folder": "" if relative == "." else relative, "images": count})
            if len(found) >= MAX_FOLDERS:
                break
        return found
