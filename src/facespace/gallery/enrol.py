"""Enrolment: embedding a person's images with a pipeline and storing them in a gallery.

The embeddings are computed *before* the gallery's write transaction opens
(:meth:`~facespace.gallery.store.Gallery.add_embeddings`), so the write lock
is held for milliseconds; each identity commits at once or not at all.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from ..face_choice import choose_face
from ..files import image_files
from .records import EnrolResult, GalleryError, check_name

if TYPE_CHECKING:
    from ..imageio import ImageInput
    from ..pipeline import FacePipeline
    from .store import Gallery

__all__ = ["enroll_images", "enroll_tree", "folder_tree"]


def enroll_images(gallery: "Gallery", pipeline: "FacePipeline", name: str, images: Iterable["ImageInput"],
                  replace: bool = False, sources: Sequence[str] | None = None) -> EnrolResult:
    """Embed the largest face of each image and enrol them all as ``name`` (one transaction).

    Images that cannot be read or show no face are skipped and reported;
    an identity with no usable image at all is not created.
    """
    from ..imageio import describe

    check_name(name)
    gallery.check_pipeline(pipeline)  # fail before the slow part
    images = list(images)
    names = list(sources) if sources is not None else [describe(i) for i in images]
    vectors, used, skipped = [], [], []
    for label, result in zip(names, pipeline.embed_images(images, on_error="report")):
        if not result.ok:
            skipped.append((label, result.error or "unreadable"))
        elif not result.faces:
            skipped.append((label, "no face found"))
        else:
            vectors.append(choose_face(result.faces, rule="largest").embedding)
            used.append(label)
    if vectors:
        gallery.add_embeddings(name, np.stack(vectors), used, model=pipeline.model_name,
                               preprocessing_id=pipeline.preprocessing_id, replace=replace)
    return EnrolResult(name=name, added=len(vectors), skipped=skipped)


def enroll_tree(gallery: "Gallery", pipeline: "FacePipeline", root: str | os.PathLike, replace: bool = False,
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
