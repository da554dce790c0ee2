"""Verification benchmarks: pair lists, cached embeddings, the LFW protocol and reports.

* :mod:`.protocol` -- the fold protocol on distances (pure NumPy).
* :mod:`.pairs` -- LFW ``pairs.txt`` / view 1 files and CSV pair lists.
* :mod:`.cache` -- :func:`embed_paths`, embeddings computed once and cached on disk.
* :mod:`.scoring` -- how a pair becomes a distance (flip views, optional mean removal).
* :mod:`.report` -- running a pipeline on pairs, JSON report and ROC plot.
"""

from .cache import EmbeddingSet, embed_paths
from .pairs import DatasetError, PairSet, PairsFormatError, read_csv_pairs, read_lfw_pairs, read_pairs
from .protocol import PairsReport, calibrate_threshold, evaluate_pairs
from .scoring import ScoringRule

__all__ = [
    "DatasetError",
    "EmbeddingSet",
    "PairSet",
    "PairsFormatError",
    "PairsReport",
    "ScoringRule",
    "calibrate_threshold",
    "embed_paths",
    "evaluate_pairs",
    "read_csv_pairs",
    "read_lfw_pairs",
    "read_pairs",
]
