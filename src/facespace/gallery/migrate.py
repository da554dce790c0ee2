"""Migrating a gallery to another model: a new gallery file, the old one left as it is.

Every identity of the old gallery is written to the new one with its embeddings
converted: by a compatibility map (:mod:`facespace.compat`) from the old model
into the new model's own space, or, given a pipeline of the new model and where
all of an identity's recorded ``source`` photos are still readable files, by
embedding those photos again (the better result). Identities that cannot be
re-embedded fall back to the map. Content keys are kept, so the new gallery
stays idempotent for the same photos.

The new gallery is built under a temporary name beside its final one and
renamed when complete (:func:`facespace.files.atomic_path`): a migration
killed half-way leaves the old gallery untouched and nothing under the new
name (only a hidden ``.NAME.*.part.db`` temporary to delete).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..files import atomic_path
from .enrol import enroll_images
from .records import GalleryError
from .store import Gallery

if TYPE_CHECKING:
    from ..compat import CompatMap
    from ..pipeline import FacePipeline

__all__ = ["MigrationResult", "default_migration_path", "migrate_gallery"]


@dataclass(frozen=True)
class MigrationResult:
    """What a migration wrote: identities and embeddings, how many identities went through the map
    and how many were embedded again, and images a re-embedding skipped (no face found)."""

    source: Path
    path: Path
    model: str
    preprocessing_id: str
    map: str | None
    identities: int
    embeddings: int
    mapped: int
    re_embedded: int
    skipped: int = 0

    def to_dict(self) -> dict:
        return {"source": str(self.source), "path": str(self.path), "model": self.model,
                "preprocessing_id": self.preprocessing_id, "map": self.map, "identities": self.identities,
                "embeddings": self.embeddings, "mapped": self.mapped, "re_embedded": self.re_embedded,
                "skipped": self.skipped}


def default_migration_path(old_path: str | os.PathLike, target_model: str) -> Path:
    """``OLD.<MODEL>.db`` beside ``OLD.db``."""
    old = Path(old_path)
    return old.with_name(f"{old.stem}.{target_model}{old.suffix or '.db'}")


def _choose_map(old: Gallery, target_model: str, compat_map: "CompatMap | None",
                needed: bool) -> "CompatMap | None":
    """The given map (checked), else the best stored one into plain ``target_model`` space; None
    only when none is stored and ``needed`` is false (every identity will be re-embedded)."""
    from ..compat import CompatMapError, find_map

    if compat_map is None:
        try:
            compat_map = find_map(old.model, target_model, source_preprocessing=old.preprocessing_id,
                                  target_space_only=True)
        except CompatMapError:
            if needed:
                raise
            return None
    compat_map.check(old.model, old.preprocessing_id)  # the gallery's vectors are its source side
    if compat_map.target != target_model or compat_map.space_id != compat_map.target_preprocessing:
        raise GalleryError(f"map {compat_map.name} does not lead into plain {target_model} embeddings "
                           f"(it goes to {compat_map.target}, space {compat_map.space_id}); "
                           "a migrated gallery needs a ridge or procrustes map")
    return compat_map


def _check_request(old: Gallery, new_path: Path, target_model: str, pipeline: "FacePipeline | None") -> None:
    if new_path.exists():
        raise GalleryError(f"{new_path} already exists; choose another --out (a migration never overwrites)")
    if old.model is None:
        raise GalleryError(f"gallery {old.path} is empty; nothing to migrate")
    if old.model == target_model:
        raise GalleryError(f"gallery {old.path} already holds {target_model} embeddings")
    if pipeline is not None and pipeline.model_name != target_model:
        raise GalleryError(f"the re-embedding pipeline runs {pipeline.model_name}, not {target_model}")


def _readable(sources: list) -> bool:
    return bool(sources) and all(s is not None and Path(s).is_file() and os.access(s, os.R_OK) for s in sources)


def migrate_gallery(old_path: str | os.PathLike, new_path: str | os.PathLike | None, target_model: str,
                    compat_map: "CompatMap | None" = None,
                    pipeline: "FacePipeline | None" = None) -> MigrationResult:
    """Write a new gallery of ``target_model`` at ``new_path`` (default :func:`default_migration_path`)
    from the gallery at ``old_path``, which is opened read-only and never changed.

    ``pipeline`` (of ``target_model``): re-embed identities whose photos are all readable; the rest,
    and all identities without a pipeline, go through ``compat_map`` (default: the best stored map
    into plain ``target_model`` space). An existing ``new_path`` is refused.
    """
    new_path = Path(new_path) if new_path is not None else default_migration_path(old_path, target_model)
    with Gallery(old_path, mode="read") as old:
        _check_request(old, new_path, target_model, pipeline)
        names = [info.name for info in old.identities()]
        batches = {name: old.embedding_rows(name) for name in names}
        needs_map = pipeline is None or not all(_readable(b.sources) for b in batches.values())
        chosen = _choose_map(old, target_model, compat_map, needs_map)
    if pipeline is not None and chosen is not None and pipeline.preprocessing_id != chosen.space_id:
        raise GalleryError(f"the pipeline's preprocessing [{pipeline.preprocessing_id}] differs from the map's "
                           f"[{chosen.space_id}]; use the model's default crop to mix both in one gallery")
    preprocessing_id = chosen.space_id if chosen is not None else pipeline.preprocessing_id
    counts = {"embeddings": 0, "mapped": 0, "re_embedded": 0, "skipped": 0}
    with atomic_path(new_path) as tmp:
        with Gallery(tmp, mode="create") as new:
            for name, batch in batches.items():
                _copy_identity(new, name, batch, chosen, pipeline, target_model, counts)
    return MigrationResult(source=Path(old_path), path=new_path, model=target_model,
                           preprocessing_id=preprocessing_id, map=None if chosen is None else chosen.name,
                           identities=len(batches), **counts)


def _copy_identity(new: Gallery, name: str, batch, compat_map: "CompatMap | None",
                   pipeline: "FacePipeline | None", target_model: str, counts: dict) -> None:
    """One identity into ``new`` (one transaction): re-embedded when it can be, else mapped."""
    if pipeline is not None and _readable(batch.sources):
        result = enroll_images(new, pipeline, name, list(batch.sources), sources=list(batch.sources))
        if result.added or result.duplicates:
            counts["re_embedded"] += 1
            counts["embeddings"] += result.added
            counts["skipped"] += len(result.skipped)
            return
    if compat_map is None:
        raise GalleryError(f"identity {name!r} cannot be re-embedded and no map leads to {target_model}")
    stored = new.store_embeddings(name, compat_map.apply(batch.vectors), batch.sources, model=target_model,
                                  preprocessing_id=compat_map.space_id, hashes=batch.hashes)
    counts["mapped"] += 1
    counts["embeddings"] += stored.added
