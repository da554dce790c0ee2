"""Where the benchmarks find things: the repository, its results folder and the shared data.

The data is ``../shared/data`` beside the repository, or ``$FACESPACE_TEST_DATA`` (as for the
tests, ``tests/shared_data.py``). ``DATA`` is left unresolved: the result files record the paths
as spelt here (``<repo>/../shared/data/...``); a benchmark that wants a canonical path resolves it.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FACESPACE_TEST_DATA") or REPO / ".." / "shared" / "data")
RESULTS = REPO / "benchmarks" / "results"
