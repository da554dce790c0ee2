"""Face galleries: enrolled identities in SQLite, and searching them.

:class:`Gallery` (``store``) keeps identities and their embeddings in one
SQLite file; ``enrol`` embeds a person's images with a pipeline and enrols
them, ``export`` reads and writes the ``.json`` / ``.npz`` export files,
``schema`` opens the file (the ``create`` / ``write`` / ``read`` modes, refusing
files that are not galleries, migrating older schemas), and ``records`` holds
the errors and records they share. :class:`Identifier`
(``search``) finds the nearest identities of a probe embedding, with a
calibrated probability (:mod:`facespace.calibration`) and open-set rejection.
"""

from .search import Candidate, Identification, Identifier, build_index
from .store import Gallery, IdentityInfo

__all__ = [
    "Candidate",
    "Gallery",
    "Identification",
    "IdentityInfo",
    "Identifier",
    "build_index",
]
