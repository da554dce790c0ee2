"""Where the tests' real data lives: ``../shared/data`` beside the repository, or ``$FACESPACE_TEST_DATA``."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FACESPACE_TEST_DATA") or REPO / ".." / "shared" / "data").resolve()
LFW = DATA / "lfw" / "lfw-deepfunneled"


def lfw_people(count: int) -> list[tuple[str, list[bytes], bytes]]:
    """(name, two photos to enrol, a third to identify) for the first ``count`` LFW people (by name)
    with three photos or more: what the multi-worker test and benchmark send."""
    chosen = []
    for folder in sorted(p for p in LFW.iterdir() if p.is_dir()):
        photos = sorted(folder.glob("*.jpg"))
        if len(photos) >= 3:
            chosen.append((folder.name, [p.read_bytes() for p in photos[:2]], photos[2].read_bytes()))
        if len(chosen) == count:
            return chosen
    raise FileNotFoundError(f"fewer than {count} people with three photos in {LFW}")
