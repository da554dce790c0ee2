"""The gallery backend interface, and :func:`open_gallery`: where a location becomes a backend.

A backend keeps identities and their embeddings: the SQLite :class:`~.store.Gallery` (one file,
the embedded default) and the PostgreSQL + pgvector :class:`~.pg_store.PgGallery` (one database
that many processes and machines share). Enrolment (:mod:`.enrol`), search (:mod:`.search`),
export, migration (:mod:`.migrate`), the CLI and the server use only :class:`GalleryBackend`.

A location is a file path (SQLite) or a ``postgresql://`` (or ``postgres://``) URL; the CLI's
gallery arguments, the Python API and ``facespace serve --gallery`` all take either.

:class:`GalleryBase` writes the behaviour both backends share once, on a few primitives each
backend supplies (``transaction``, ``_has``, ``_add``, ``_bump``, ``_export_rows``): a write of
one identity's embeddings, imports, exports and enrolment with a pipeline.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from pathlib import Path
from typing import (TYPE_CHECKING, Any, Iterable, Literal, NamedTuple, Protocol, Sequence, Union,
                    runtime_checkable)

import numpy as np

from ..errors import ModelMismatchError, check_choice
from .enrol import enroll_images as _enroll_images
from .enrol import enroll_tree as _enroll_tree
from .export import ExportRow, read_export, write_export
from .records import (
    EmbeddingBatch,
    VectorEncoding,
    encoding_of,
    EnrolResult,
    GalleryError,
    GalleryMatrix,
    IdentityExistsError,
    IdentityInfo,
    ImportResult,
    Stored,
    check_name,
)
from .schema import SCHEMA_VERSION, GalleryMode

if TYPE_CHECKING:
    from ..imageio import ImageInput
    from ..pipeline import FacePipeline
    from .search import Index

__all__ = ["GalleryBackend", "GalleryBase", "GalleryLocation", "ImportFile", "OnConflict", "POSTGRES_SCHEMES",
           "check_stored_model", "is_postgres_url", "open_gallery", "read_import"]

#: A gallery's location: a SQLite file, or a PostgreSQL URL.
GalleryLocation = Union[str, "os.PathLike[str]"]
#: URL schemes that name a PostgreSQL gallery.
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
#: What :meth:`GalleryBase.import_file` does with a name already enrolled.
OnConflict = Literal["merge", "replace", "skip", "error"]


def is_postgres_url(location: GalleryLocation) -> bool:
    return isinstance(location, str) and location.lower().startswith(POSTGRES_SCHEMES)


def open_gallery(location: GalleryLocation, mode: GalleryMode = "create", **options: Any) -> "GalleryBackend":
    """The gallery at ``location`` (a file path or a ``postgresql://`` URL) opened as ``mode`` says;
    ``options`` go to the backend (``timeout=`` for SQLite, ``index_min=`` for PostgreSQL)."""
    check_choice(mode, GalleryMode, "gallery mode")
    if is_postgres_url(location):
        from .pg_store import PgGallery

        return PgGallery(str(location), mode=mode, **options)
    from .store import Gallery

    return Gallery(location, mode=mode, **options)


@runtime_checkable
class GalleryBackend(Protocol):
    """What every gallery offers; see :class:`~.store.Gallery` for the behaviour each method promises."""

    mode: GalleryMode

    @property
    def location(self) -> str:
        """Where the gallery is, printable (a path, or a URL without its password)."""

    @property
    def read_only(self) -> bool: ...
    @property
    def model(self) -> str | None: ...
    @property
    def preprocessing_id(self) -> str | None: ...
    @property
    def dim(self) -> int | None: ...
    @property
    def encoding(self) -> "VectorEncoding":
        """How the vectors are stored (``float32`` or ``int8`` codes); reads always give float32 unit rows."""
    @property
    def generation(self) -> int:
        """A counter every committed change moves on: a cached search structure is stale when it differs."""

    def close(self) -> None: ...
    def __enter__(self) -> "GalleryBackend": ...
    def __exit__(self, *exc: object) -> None: ...
    def __len__(self) -> int: ...
    def __contains__(self, name: object) -> bool: ...

    def check_compatible(self, model: str, preprocessing_id: str, dim: int | None = None) -> None: ...
    def check_pipeline(self, pipeline: "FacePipeline") -> None: ...
    def add_embeddings(self, name: str, vectors: np.ndarray, sources: Sequence[str | None] | None = None, *,
                       model: str, preprocessing_id: str, replace: bool = False,
                       hashes: Sequence[str | None] | None = None) -> int: ...
    def store_embeddings(self, name: str, vectors: np.ndarray, sources: Sequence[str | None] | None = None, *,
                         model: str, preprocessing_id: str, replace: bool = False,
                         hashes: Sequence[str | None] | None = None) -> Stored: ...
    def enroll_images(self, pipeline: "FacePipeline", name: str, images: Iterable["ImageInput"],
                      replace: bool = False, sources: Sequence[str] | None = None) -> EnrolResult: ...
    def enroll_tree(self, pipeline: "FacePipeline", root: "str | os.PathLike[str]", replace: bool = False,
                    progress: bool = False) -> list[EnrolResult]: ...

    def identities(self) -> list[IdentityInfo]: ...
    def get(self, name: str) -> IdentityInfo: ...
    def embeddings_of(self, name: str) -> tuple[np.ndarray, list[str | None]]: ...
    def embedding_rows(self, name: str) -> EmbeddingBatch: ...
    def rename(self, old: str, new: str) -> None: ...
    def remove(self, name: str) -> int: ...
    def put_thumbnail(self, name: str, jpeg: bytes) -> None: ...
    def thumbnail(self, name: str) -> bytes | None: ...
    def matrix(self) -> GalleryMatrix: ...
    def integrity_check(self) -> list[str]: ...

    def export(self, path: "str | os.PathLike[str]") -> int: ...
    def import_(self, path: "str | os.PathLike[str]", on_conflict: OnConflict = "merge") -> int: ...
    def import_file(self, source: "str | os.PathLike[str] | ImportFile",
                    on_conflict: OnConflict = "merge") -> ImportResult: ...

    def native_index(self, matrix: GalleryMatrix, kind: str) -> "Index | None":
        """A search index the backend itself keeps over ``matrix``'s rows for ``kind`` (None: build one in
        memory, :func:`.search.build_index`)."""


class GalleryBase:
    """The behaviour both backends share, written on their primitives."""

    mode: GalleryMode
    _requested_encoding: "VectorEncoding | None" = None  # what a new gallery is to store (None: float32)

    # -- primitives a backend supplies ------------------------------------------------
    location: str

    def transaction(self) -> AbstractContextManager[Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _has(self, cur: Any, name: str) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def _add(self, cur: Any, name: str, batch: EmbeddingBatch, model: str, preprocessing_id: str,
             replace: bool) -> Stored:  # pragma: no cover - abstract
        raise NotImplementedError

    def _bump(self, cur: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _export_rows(self) -> list[ExportRow]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _meta(self, key: str) -> str | None:  # pragma: no cover - abstract
        """The value of the ``meta`` row ``key`` (None: no such row)."""
        raise NotImplementedError

    def _after_write(self) -> None:
        """Called after a committed write (PostgreSQL: build its vector index once it is large enough)."""

    def check_compatible(self, model: str, preprocessing_id: str, dim: int | None = None) -> None:
        raise NotImplementedError  # pragma: no cover - abstract

    def close(self) -> None:
        raise NotImplementedError  # pragma: no cover - abstract

    # -- shared ---------------------------------------------------------------------------
    @property
    def model(self) -> str | None:
        """Name of the model every embedding was made with (None while empty)."""
        return self._meta("model")

    @property
    def preprocessing_id(self) -> str | None:
        return self._meta("preprocessing_id")

    @property
    def dim(self) -> int | None:
        value = self._meta("dim")
        return None if value is None else int(value)

    @property
    def encoding(self) -> VectorEncoding:
        """How the vectors are stored: recorded by the first enrolment (none recorded in a gallery that
        holds embeddings: float32, from before int8); an empty gallery's is the one it was opened for."""
        recorded = self._meta("encoding")
        if recorded is None and self.model is None:
            return self._requested_encoding or "float32"
        return encoding_of(recorded)

    def _check_encoding_request(self) -> None:
        """Refuse to open a gallery for another encoding than the one its embeddings are stored in."""
        if self._requested_encoding is not None and self.model is not None \
                and self.encoding != self._requested_encoding:
            raise GalleryError(f"{self.location} stores {self.encoding} vectors, not {self._requested_encoding}; "
                               "an encoding is chosen when a gallery is created (enrol into a new gallery to change it)")

    @property
    def generation(self) -> int:
        """Moves on with every committed change: a cached search structure is stale when it differs."""
        return int(self._meta("generation") or 0)

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def read_only(self) -> bool:
        return self.mode == "read"

    def _refuse_read_only(self) -> None:
        if self.read_only:
            raise GalleryError(f"{self.location}: opened read-only; open it with mode 'write' to change it")

    def check_pipeline(self, pipeline: "FacePipeline") -> None:
        self.check_compatible(pipeline.model_name, pipeline.preprocessing_id, pipeline.dim)

    def native_index(self, matrix: GalleryMatrix, kind: str) -> "Index | None":
        return None

    def add_embeddings(self, name: str, vectors: np.ndarray, sources: Sequence[str | None] | None = None, *,
                       model: str, preprocessing_id: str, replace: bool = False,
                       hashes: Sequence[str | None] | None = None) -> int:
        """Enrol ``vectors`` (N, D) under ``name`` in one transaction; returns the identity id.

        See :meth:`store_embeddings`, which also says how many were added and how many
        the identity already had.
        """
        return self.store_embeddings(name, vectors, sources, model=model, preprocessing_id=preprocessing_id,
                                     replace=replace, hashes=hashes).identity

    def store_embeddings(self, name: str, vectors: np.ndarray, sources: Sequence[str | None] | None = None, *,
                         model: str, preprocessing_id: str, replace: bool = False,
                         hashes: Sequence[str | None] | None = None) -> Stored:
        """Enrol ``vectors`` (N, D) under ``name`` in one transaction.

        An existing identity gains the new embeddings (``replace=True`` drops its old ones
        first); one it already has (the same content hash: ``hashes[i]``, the sha256 of the
        image file, or else of the vector) is skipped and counted in ``duplicates``. The
        first enrolment fixes the gallery's model.
        """
        check_name(name)
        batch = EmbeddingBatch.of(vectors, sources, hashes)
        with self.transaction() as cur:
            stored = self._add(cur, name, batch, model, preprocessing_id, replace)
            if stored.added or replace:
                self._bump(cur)
        if stored.added:
            self._after_write()
        return stored

    def enroll_images(self, pipeline: "FacePipeline", name: str, images: Iterable["ImageInput"],
                      replace: bool = False, sources: Sequence[str] | None = None) -> EnrolResult:
        """Embed the largest face of each image and enrol them all as ``name`` (one transaction);
        see :func:`facespace.gallery.enrol.enroll_images`."""
        return _enroll_images(self, pipeline, name, images, replace=replace, sources=sources)

    def enroll_tree(self, pipeline: "FacePipeline", root: "str | os.PathLike[str]", replace: bool = False,
                    progress: bool = False) -> list[EnrolResult]:
        """Enrol every ``root/<person>/`` folder's images as identity ``<person>``, one transaction
        each; see :func:`facespace.gallery.enrol.enroll_tree`."""
        return _enroll_tree(self, pipeline, root, replace=replace, progress=progress)

    def export(self, path: "str | os.PathLike[str]") -> int:
        """Write every identity and embedding to ``.json`` or ``.npz`` (:mod:`.export`), each with its
        content hash; returns identities written. An earlier file at ``path`` stays as it was unless
        the new one is complete."""
        return write_export(path, self._export_rows(), version=SCHEMA_VERSION, model=self.model,
                            preprocessing_id=self.preprocessing_id, dim=self.dim, encoding=self.encoding)

    def import_(self, path: "str | os.PathLike[str]", on_conflict: OnConflict = "merge") -> int:
        """Add the identities of an export file in one transaction; returns identities imported
        (:meth:`import_file` also counts the embeddings added and those already there)."""
        return self.import_file(path, on_conflict).identities

    def import_file(self, source: "str | os.PathLike[str] | ImportFile",
                    on_conflict: OnConflict = "merge") -> ImportResult:
        """Add the identities of an export file (a path, or what :func:`read_import` read) in one
        transaction; returns identities taken in, embeddings added and duplicates skipped.

        ``on_conflict`` says what happens to a name already enrolled: "merge"
        (add the embeddings it does not have yet), "replace", "skip" or "error".
        An embedding the identity already has (the same content hash) is skipped
        and counted, so importing a file twice changes nothing the second time.
        """
        check_choice(on_conflict, OnConflict, "on_conflict")
        loaded = source if isinstance(source, ImportFile) else read_import(source)
        if loaded.header.get("model") is None:
            return ImportResult(0, 0, 0)
        if loaded.header["encoding"] != self.encoding:  # int8 codes are not float rows, nor the reverse
            raise GalleryError(f"{loaded.path} holds {loaded.header['encoding']} embeddings but {self.location} "
                               f"stores {self.encoding}; import it into a gallery created with that encoding")
        identities = added = duplicates = 0
        with self.transaction() as cur:
            for name, batch in loaded.people.items():
                exists = self._has(cur, name)
                if exists and on_conflict == "skip":
                    continue
                if exists and on_conflict == "error":
                    raise IdentityExistsError(f"{loaded.path}: identity {name!r} is already in {self.location}")
                stored = self._add(cur, name, batch, loaded.header["model"], loaded.header["preprocessing_id"],
                                   on_conflict == "replace")
                identities, added, duplicates = identities + 1, added + stored.added, duplicates + stored.duplicates
            if added or (identities and on_conflict == "replace"):
                self._bump(cur)
        if added:
            self._after_write()
        return ImportResult(identities=identities, added=added, duplicates=duplicates)


class ImportFile(NamedTuple):
    """An export file read and checked (:func:`read_import`), its people ready to store."""

    path: Path
    header: dict
    people: dict[str, EmbeddingBatch]


def read_import(path: "str | os.PathLike[str]") -> ImportFile:
    """An export file read and checked before any gallery is opened or transaction begun."""
    header, people = read_export(path)
    batches = {}
    for name, person in people.items():
        try:
            check_name(name)
            batches[name] = EmbeddingBatch.of(person.vectors, person.sources, person.hashes, person.created)
        except GalleryError as exc:
            raise GalleryError(f"{path}: identity {name!r}: {exc}") from exc
    return ImportFile(Path(path), header, batches)


def check_stored_model(stored: dict[str, str], where: str, model: str, preprocessing_id: str,
                       dim: int | None) -> None:
    """Raise :class:`ModelMismatchError` unless embeddings of ``model``/``preprocessing_id``/``dim`` fit a
    gallery whose meta rows are ``stored`` (no ``model`` row: an empty gallery, anything fits)."""
    if "model" not in stored:
        return
    if stored["model"] != model or stored["preprocessing_id"] != preprocessing_id:
        raise ModelMismatchError(
            f"gallery {where} holds embeddings of model {stored['model']!r} with preprocessing "
            f"[{stored['preprocessing_id']}], but these come from model {model!r} with preprocessing "
            f"[{preprocessing_id}]; embeddings of different models or preprocessing cannot be compared. "
            f"Use the same model and options (e.g. --model {stored['model']}), or enrol into a new gallery."
        )
    if dim is not None and int(stored["dim"]) != int(dim):
        raise ModelMismatchError(f"gallery {where} holds {stored['dim']}-dimensional embeddings, not {dim}")
