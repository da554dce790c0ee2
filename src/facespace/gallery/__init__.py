"""Face galleries: enrolled identities in SQLite or PostgreSQL, and searching them.

:func:`open_gallery` (``backend``) opens a gallery by its location: a file path is the SQLite
:class:`Gallery` (``store``), one file; a ``postgresql://`` URL the PostgreSQL + pgvector
``PgGallery`` (``pg_store``), one database many processes share; both are a
:class:`GalleryBackend`, the interface the rest of facespace uses. ``enrol`` embeds a person's
images with a pipeline and enrols them, ``export`` reads and writes the ``.json`` / ``.npz`` export files,
``schema`` opens the file (the ``create`` / ``write`` / ``read`` modes, refusing
files that are not galleries, migrating older schemas), and ``records`` holds
the errors and records they share. :class:`Identifier`
(``search``) finds the nearest identities of a probe embedding, with a
calibrated probability (:mod:`facespace.calibration`) and open-set rejection.
"""

from .backend import GalleryBackend, open_gallery
from .search import Candidate, Identification, Identifier, build_index
from .store import Gallery, IdentityInfo

__all__ = [
    "Candidate",
    "Gallery",
    "GalleryBackend",
    "Identification",
    "IdentityInfo",
    "Identifier",
    "build_index",
    "open_gallery",
]
