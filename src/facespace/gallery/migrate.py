"""Migrating a gallery to another model: a new gallery file, the old one left as it is.

Every identity of the old gallery is written to the new one with its embeddings
converted: by a compatibility map (:mod:`facespace.compat`) from the old model
into the new model's own space, or, given a pipeline of the new model and where
all of an identity's recorded ``source`` photos are still readable files, by
embedding those photos again (the better result). Identities that cannot be
re-embedded fall back to the map. Content keys are kept, so the new gallery
stays idempotent for the same photos, and so is the encoding (an int8 gallery migrates into an
int8 gallery). The new gallery records the model and the preprocessing its vectors now have: the
map's target preprocessing, which must be the one the new model's pipeline uses
(``target_preprocessing``), so a map fitted for another crop is refused rather than recorded.

Either gallery may be a file or a PostgreSQL URL (:func:`.backend.open_gallery`). A new file
gallery is built under a temporary name beside its final one and renamed when complete
(:func:`facespace.files.atomic_path`): a migration killed half-way leaves the old gallery
untouched and nothing under the new name (only a hidden ``.NAME.*.part.db`` temporary to
delete). A new PostgreSQL gallery must not exist yet; it is written one identity per
transaction, so a migration killed half-way leaves the identities copied so far (drop its
``facespace_*`` tables, or run the migration again into another database).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from contextlib import contextmanager
from typing import Iterator

from ..files import atomic_path
from .backend import GalleryBackend, is_postgres_url, open_gallery
from .enrol import enroll_images
from .records import GalleryError, printable_url

if TYPE_CHECKING:
    from ..compat import CompatMap
    from .records import VectorEncoding
    from ..pipeline import FacePipeline

__all__ = ["MigrationResult", "default_migration_path", "migrate_gallery"]


@dataclass(frozen=True)
class MigrationResult:
    """What a migration wrote: identities and embeddings, how many identities went through the map
    and how many were embedded again, and images a re-embedding skipped (no face found)."""

    source: "str | Path"
    path: "str | Path"
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
    """``OLD.<MODEL>.db`` beside ``OLD.db`` (a PostgreSQL gallery has no default: give ``new_path``)."""
    if is_postgres_url(old_path):
        raise GalleryError("migrating a PostgreSQL gallery needs the new gallery's location (--out FILE or URL)")
    old = Path(old_path)
    return old.with_name(f"{old.stem}.{target_model}{old.suffix or '.db'}")


def _choose_map(old: GalleryBackend, target_model: str, compat_map: "CompatMap | None", needed: bool,
                target_preprocessing: str | None) -> "CompatMap | None":
    """The given map (checked), else the best stored one into plain ``target_model`` space made with
    ``target_preprocessing`` (when given: the crop the new model's embeddings are made with today);
    None only when none is stored and ``needed`` is false (every identity will be re-embedded)."""
    from ..compat import CompatMapError, find_map

    if compat_map is None:
        try:
            compat_map = find_map(old.model, target_model, source_preprocessing=old.preprocessing_id,
                                  target_preprocessing=target_preprocessing, target_space_only=True)
        except CompatMapError:
            if needed:
                raise
            return None
    compat_map.check(old.model, old.preprocessing_id)  # the gallery's vectors are its source side
    if compat_map.target != target_model or compat_map.space_id != compat_map.target_preprocessing:
        raise GalleryError(f"map {compat_map.name} does not lead into plain {target_model} embeddings "
                           f"(it goes to {compat_map.target}, space {compat_map.space_id}); "
                           "a migrated gallery needs a map without a target head (ridge, procrustes or mlp)")
    if target_preprocessing is not None and compat_map.target_preprocessing != target_preprocessing:
        raise GalleryError(f"map {compat_map.name} was fitted on {target_model} embeddings made with "
                           f"[{compat_map.target_preprocessing}], but {target_model} embeds with "
                           f"[{target_preprocessing}] now; the migrated gallery would not match its probes. "
                           "Fit the maps again for today's crops (facespace fit-maps DIR)")
    return compat_map


def _exists(location: "str | Path") -> bool:
    if not is_postgres_url(location):
        return Path(location).exists()
    try:
        open_gallery(str(location), mode="read").close()
    except GalleryError as exc:
        return "no such gallery" not in str(exc)
    return True


def _check_request(old: GalleryBackend, new_path: "str | Path", target_model: str,
                   pipeline: "FacePipeline | None") -> None:
    if _exists(new_path):
        raise GalleryError(f"{new_path} already exists; choose another --out (a migration never overwrites)")
    if old.model is None:
        raise GalleryError(f"gallery {old.location} is empty; nothing to migrate")
    if old.model == target_model:
        raise GalleryError(f"gallery {old.location} already holds {target_model} embeddings")
    if pipeline is not None and pipeline.model_name != target_model:
        raise GalleryError(f"the re-embedding pipeline runs {pipeline.model_name}, not {target_model}")


def _readable(sources: list) -> bool:
    return bool(sources) and all(s is not None and Path(s).is_file() and os.access(s, os.R_OK) for s in sources)


def migrate_gallery(old_path: str | os.PathLike, new_path: str | os.PathLike | None, target_model: str,
                    compat_map: "CompatMap | None" = None, pipeline: "FacePipeline | None" = None,
                    target_preprocessing: str | None = None) -> MigrationResult:
    """Write a new gallery of ``target_model`` at ``new_path`` (default :func:`default_migration_path`)
    from the gallery at ``old_path``, which is opened read-only and never changed.

    ``pipeline`` (of ``target_model``): re-embed identities whose photos are all readable; the rest,
    and all identities without a pipeline, go through ``compat_map`` (default: the best stored map
    into plain ``target_model`` space). ``target_preprocessing``: the preprocessing id the new
    gallery's probes will have (default: the pipeline's); a map fitted for another crop is refused,
    so a migrated gallery always matches the pipeline that will search it. An existing ``new_path``
    is refused.
    """
    if target_preprocessing is None and pipeline is not None:
        target_preprocessing = pipeline.preprocessing_id
    if new_path is None:
        new_path = default_migration_path(old_path, target_model)
    elif not is_postgres_url(new_path):
        new_path = Path(new_path)
    with open_gallery(old_path, mode="read") as old:
        source = old.location if is_postgres_url(old_path) else Path(old_path)
        _check_request(old, new_path, target_model, pipeline)
        names = [info.name for info in old.identities()]
        batches = {name: old.embedding_rows(name) for name in names}
        needs_map = pipeline is None or not all(_readable(b.sources) for b in batches.values())
        chosen = _choose_map(old, target_model, compat_map, needs_map, target_preprocessing)
        encoding = old.encoding  # an int8 gallery stays one
    if pipeline is not None and chosen is not None and pipeline.preprocessing_id != chosen.space_id:
        raise GalleryError(f"the pipeline's preprocessing [{pipeline.preprocessing_id}] differs from the map's "
                           f"[{chosen.space_id}]; use the model's default crop to mix both in one gallery")
    preprocessing_id = chosen.space_id if chosen is not None else pipeline.preprocessing_id
    counts = {"embeddings": 0, "mapped": 0, "re_embedded": 0, "skipped": 0}
    with _new_gallery(new_path, encoding) as new:
        for name, batch in batches.items():
            _copy_identity(new, name, batch, chosen, pipeline, target_model, counts)
    shown = new_path if isinstance(new_path, Path) else printable_url(new_path)
    return MigrationResult(source=source, path=shown, model=target_model,
                           preprocessing_id=preprocessing_id, map=None if chosen is None else chosen.name,
                           identities=len(batches), **counts)


@contextmanager
def _new_gallery(location: "str | Path", encoding: "VectorEncoding") -> Iterator[GalleryBackend]:
    """The new gallery: a file under a temporary name until complete, or a new PostgreSQL gallery."""
    if is_postgres_url(location):
        with open_gallery(str(location), mode="create", encoding=encoding) as new:
            yield new
        return
    with atomic_path(Path(location)) as tmp:
        with open_gallery(tmp, mode="create", encoding=encoding) as new:
            yield new


def _copy_identity(new: GalleryBackend, name: str, batch, compat_map: "CompatMap | None",
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
