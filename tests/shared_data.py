"""Where the tests' real data lives: ``../shared/data`` beside the repository, or ``$FACESPACE_TEST_DATA``."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FACESPACE_TEST_DATA") or REPO / ".." / "shared" / "data").resolve()
