"""Pointing'04 (INRIA head pose database): its images' labels and a pose-matched pairs set.

Files are ``PersonNN/personNNSKK<tilt><pan>.jpg`` (person NN, series S in {1, 2}, image KK,
tilt and pan in degrees with their sign, e.g. ``person01100-90+0.jpg``), each with a
``.txt`` beside it: filename, a blank line, ``Face``, then the face box's centre x, centre y,
width and height in pixels.

:func:`pose_pairs` builds a :class:`~facespace.evaluation.pairs.PairSet` for
:func:`~facespace.evaluation.protocol.evaluate_pairs`: for every person and pose, the
same-person pair (series 1, series 2); for every pose and every two people of one fold,
the two different-person pairs (a's series 1, b's series 2) and (b's series 1, a's
series 2). Both images of every pair share the pose; folds hold disjoint people
(by default 5 folds of 3 consecutive people).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np

from .pairs import DatasetError, PairSet

__all__ = ["PAN_BUCKETS", "PoseImage", "cross_pose_pairs", "list_images", "pose_pairs", "read_face_box"]

#: The |pan| values (degrees) of the database.
PAN_BUCKETS: tuple[int, ...] = (0, 15, 30, 45, 60, 75, 90)

_NAME = re.compile(r"^person(\d{2})(\d)(\d{2})([+-]\d+)([+-]\d+)\.jpg$")


@dataclass(frozen=True)
class PoseImage:
    """One labelled Pointing'04 image."""

    path: Path
    person: int
    series: int
    index: int
    tilt: int
    pan: int

    @property
    def pose(self) -> tuple[int, int]:
        return self.tilt, self.pan


def parse_name(path: Path) -> PoseImage | None:
    """The labels in an image's file name, or None for a name of another form."""
    match = _NAME.match(path.name)
    if match is None:
        return None
    person, series, index, tilt, pan = (int(g) for g in match.groups())
    return PoseImage(path=path, person=person, series=series, index=index, tilt=tilt, pan=pan)


def list_images(root: str | Path) -> list[PoseImage]:
    """Every labelled image under ``root/PersonNN/`` (``Front/`` is left out), sorted by path."""
    root = Path(root)
    folders = sorted(p for p in root.glob("Person[0-9][0-9]") if p.is_dir())
    if not folders:
        raise DatasetError(f"{root}: no PersonNN folders (is this the Pointing'04 folder?)")
    found = (parse_name(p) for folder in folders for p in sorted(folder.glob("*.jpg")))
    return [image for image in found if image is not None]


def read_face_box(image_path: str | Path) -> np.ndarray:
    """The labelled face box of an image as (x1, y1, x2, y2), from the ``.txt`` beside it."""
    text = Path(image_path).with_suffix(".txt").read_text().split()
    try:
        start = text.index("Face") + 1
        cx, cy, w, h = (float(v) for v in text[start:start + 4])
    except (ValueError, IndexError):
        raise DatasetError(f"{image_path}: unreadable face box file") from None
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dtype=np.float32)


def person_folds(people: Sequence[int], n_folds: int = 5) -> dict[int, int]:
    """Fold id (0..n_folds-1) of each person: consecutive, nearly equal groups of the sorted ids."""
    ordered = sorted(set(people))
    if len(ordered) < n_folds:
        raise ValueError(f"{len(ordered)} people cannot fill {n_folds} identity-disjoint folds")
    return {p: int(k) for k, group in enumerate(np.array_split(ordered, n_folds)) for p in group}


def _by_key(images: Sequence[PoseImage]) -> dict[tuple[int, int, int, int], Path]:
    """{(person, series, tilt, pan): path}; a duplicate label is an error."""
    out: dict[tuple[int, int, int, int], Path] = {}
    for im in images:
        key = (im.person, im.series, im.tilt, im.pan)
        if key in out:
            raise DatasetError(f"two images labelled {key}: {out[key]} and {im.path}")
        out[key] = im.path
    return out


def pose_pairs(images: Sequence[PoseImage], n_folds: int = 5) -> tuple[PairSet, np.ndarray, np.ndarray]:
    """(pairs, tilt per pair, pan per pair): the pose-matched pairs set of the module notes.

    A pose some person lacks in one series is skipped for that person (and their pairs).
    """
    where = _by_key(images)
    folds = person_folds([im.person for im in images], n_folds)
    poses = sorted({im.pose for im in images})
    first, second, same, fold, tilts, pans = [], [], [], [], [], []

    def add(a: tuple, b: tuple, is_same: bool, k: int, pose: tuple[int, int]) -> None:
        if a in where and b in where:
            first.append(where[a]), second.append(where[b]), same.append(is_same), fold.append(k)
            tilts.append(pose[0]), pans.append(pose[1])

    for tilt, pan in poses:
        for person, k in folds.items():
            add((person, 1, tilt, pan), (person, 2, tilt, pan), True, k, (tilt, pan))
        for a, b in combinations(sorted(folds), 2):
            if folds[a] == folds[b]:
                add((a, 1, tilt, pan), (b, 2, tilt, pan), False, folds[a], (tilt, pan))
                add((b, 1, tilt, pan), (a, 2, tilt, pan), False, folds[a], (tilt, pan))
    pairs = PairSet(first, second, np.array(same), np.array(fold), source="pointing04 pose-matched",
                    folds_origin=f"{n_folds} identity-disjoint folds of consecutive people")
    return pairs, np.array(tilts), np.array(pans)


def cross_pose_pairs(images: Sequence[PoseImage], n_folds: int = 5) -> tuple[PairSet, np.ndarray, np.ndarray]:
    """(pairs, tilt, pan of the second image): frontal against every pose, the shape of in-the-wild
    frontal-versus-profile protocols. First image: series 1 at pan 0, tilt 0; second: series 2 at
    each pose; same-person pairs for every person and pose, different-person pairs for every two
    people of a fold, both ways. Folds hold disjoint people, as in :func:`pose_pairs`."""
    where = _by_key(images)
    folds = person_folds([im.person for im in images], n_folds)
    poses = sorted({im.pose for im in images})
    first, second, same, fold, tilts, pans = [], [], [], [], [], []
    for tilt, pan in poses:
        for a, ka in folds.items():
            for b, kb in folds.items():
                if ka != kb or (a, 1, 0, 0) not in where or (b, 2, tilt, pan) not in where:
                    continue
                first.append(where[(a, 1, 0, 0)]), second.append(where[(b, 2, tilt, pan)])
                same.append(a == b), fold.append(ka), tilts.append(tilt), pans.append(pan)
    pairs = PairSet(first, second, np.array(same), np.array(fold), source="pointing04 frontal-vs-pose",
                    folds_origin=f"{n_folds} identity-disjoint folds of consecutive people")
    return pairs, np.array(tilts), np.array(pans)
