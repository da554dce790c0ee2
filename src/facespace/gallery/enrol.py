"""Enrolment: embedding a person's images with a pipeline and storing them in a gallery.

The embeddings are computed *before* the gallery's write transaction opens
(:meth:`~facespace.gallery.backend.GalleryBackend.store_embeddings`), so the write lock
is held for milliseconds; each identity commits at once or not at all.

Each embedding is keyed by the sha256 of the image it came from: a file is read
once here, hashed, and its bytes handed to the pipeline (bytes inputs are
hashed as they are; arrays and PIL images have no file, and their embeddings
are keyed by the vector). An embedding the identity already has is not stored
again but counted (:attr:`EnrolResult.duplicates`), so enrolling a tree again
after an interruption, or from two processes at once, stores each image once.

The identity's thumbnail (:meth:`~facespace.gallery.store.Gallery.put_thumbnail`) is the face
crop of its first usable image, made when it has none yet or its embeddings were replaced.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Optional, Sequence

import numpy as np

from ..face_choice import choose_face
from ..files import image_files, sha256_of
from .records import EnrolResult, GalleryError, check_name, content_hash

if TYPE_CHECKING:
    from ..imageio import ImageInput
    from ..pipeline import FacePipeline
    from .backend import GalleryBackend

__all__ = ["enroll_images", "enroll_tree", "folder_tree"]

#: Image files larger than this are hashed as a stream and left to the pipeline to read.
READ_WHOLE_MAX = 256 << 20


def enroll_images(gallery: "GalleryBackend", pipeline: "FacePipeline", name: str, images: Iterable["ImageInput"],
                  replace: bool = False, sources: Sequence[str] | None = None) -> EnrolResult:
    """Embed the largest face of each image and enrol them all as ``name`` (one transaction).

    Images that cannot be read or show no face are skipped and reported;
    an identity with no usable image at all is not created. Images the
    identity already has (the same file content) are counted in ``duplicates``.
    """
    from ..imageio import describe

    check_name(name)
    gallery.check_pipeline(pipeline)  # fail before the slow part
    images = list(images)
    names = list(sources) if sources is not None else [describe(i) for i in images]
    keys: list[_Keyed] = []
    results = pipeline.embed_images(_keyed_inputs(images, keys), on_error="report")
    vectors, used, hashes, skipped, first = [], [], [], [], None
    for index, (label, result, key) in enumerate(zip(names, results, keys)):
        if not result.ok:
            skipped.append((label, key.message(result.error or "unreadable")))
        elif not result.faces:
            skipped.append((label, "no face found"))
        else:
            face = choose_face(result.faces, rule="largest")
            vectors.append(face.embedding)
            first = first or (images[index], face.face.box)
            used.append(label)
            hashes.append(key.hash)
    if not vectors:
        return EnrolResult(name=name, added=0, skipped=skipped)
    stored = gallery.store_embeddings(name, np.stack(vectors), used, model=pipeline.model_name,
                                      preprocessing_id=pipeline.preprocessing_id, replace=replace, hashes=hashes)
    if first is not None and (replace or gallery.thumbnail(name) is None):
        _store_thumbnail(gallery, pipeline, name, *first)
    return EnrolResult(name=name, added=stored.added, skipped=skipped, duplicates=stored.duplicates)


def _store_thumbnail(gallery: "Gallery", pipeline: "FacePipeline", name: str, image: "ImageInput",
                     box: np.ndarray) -> None:
    """The face crop of ``image`` as ``name``'s thumbnail; an image gone since it was embedded gives none."""
    from ..errors import FacespaceError
    from ..thumbnails import thumbnail_jpeg

    try:
        array = pipeline.load(image)
    except FacespaceError:  # read a moment ago: changed or removed since; the embeddings are stored
        return
    gallery.put_thumbnail(name, thumbnail_jpeg(array, box))


@dataclass(frozen=True)
class _Keyed:
    """One image as given to the pipeline: the sha256 of its content (None: key its embedding by
    the vector), and, when a file was passed as its bytes, the names to put back in messages."""

    hash: Optional[str]
    given: str = ""
    original: str = ""

    def message(self, error: str) -> str:
        return error.replace(self.given, self.original) if self.given else error


def _keyed_inputs(images: Sequence["ImageInput"], keys: list[_Keyed]) -> Iterator["ImageInput"]:
    """Each image as the pipeline should read it (a file as the bytes hashed here), appending its
    :class:`_Keyed` to ``keys`` before it is handed over."""
    from ..imageio import describe

    for image in images:
        if isinstance(image, (bytes, bytearray)):
            keys.append(_Keyed(content_hash(bytes(image)) if image else None))
            yield image
            continue
        data, digest = _file_content(image) if isinstance(image, (str, os.PathLike)) else (None, None)
        keys.append(_Keyed(digest, describe(data), str(image)) if data is not None else _Keyed(digest))
        yield data if data is not None else image


def _file_content(path: str | os.PathLike) -> tuple[Optional[bytes], Optional[str]]:
    """(the file's bytes, their sha256); (None, sha256) for a very large file; (None, None) when it
    cannot be read: the pipeline then reads the path and reports why."""
    path = Path(path)
    try:
        size = path.stat().st_size if path.is_file() else 0
        if size > READ_WHOLE_MAX:
            return None, sha256_of(path)
        data = path.read_bytes() if size else b""
    except OSError:
        return None, None
    return (data, content_hash(data)) if data else (None, None)


def enroll_tree(gallery: "GalleryBackend", pipeline: "FacePipeline", root: str | os.PathLike, replace: bool = False,
                progress: bool = False) -> list[EnrolResult]:
    """Enrol every ``root/<person>/`` folder's images as identity ``<person>``.

    Each person is its own transaction, committed before the next begins.
    """
    people = folder_tree(root)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(len(v) for v in people.values()), unit="img", dynamic_ncols=True)
    results = []
    for person, paths in people.items():
        results.append(enroll_images(gallery, pipeline, person, paths, replace=replace,
                                     sources=[str(p) for p in paths]))
        if bar is not None:
            bar.update(len(paths))
    if bar is not None:
        bar.close()
    return results


def folder_tree(root: str | os.PathLike) -> dict[str, list[Path]]:
    """``{person: [image paths]}`` for a ``root/<person>/<images>`` tree, sorted, empty folders left out.

    A person's images are :func:`facespace.files.image_files` of their folder (sub-folders included).
    """
    root = Path(root)
    if not root.is_dir():
        raise GalleryError(f"{root}: not a folder (want one sub-folder of images per person)")
    people = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        images = image_files(folder)
        if images:
            people[folder.name] = images
    if not people:
        raise GalleryError(f"{root}: no <person>/ sub-folders with images found")
    return people
