"""Reading verification pair lists: LFW ``pairs.txt`` (view 2), view 1 files and CSV.

LFW files
    View 2 (``pairs.txt``): a header ``"<folds>\\t<n>"``, then for each fold
    ``n`` same-person lines ``name i j`` and ``n`` different-person lines
    ``name1 i name2 j``. The folds are kept.
    View 1 (``pairsDevTrain.txt``, ``pairsDevTest.txt``): a header ``"<n>"``,
    then ``n`` same and ``n`` different lines; one set, no folds. A file
    without a header is read as one set too.
    Image ``i`` of ``Name`` is ``<root>/<Name>/<Name>_<iiii>.jpg``.

CSV
    ``path1,path2,same[,fold]`` with an optional header row; ``same`` is
    1/0, true/false, yes/no or same/different; relative paths are taken
    from ``root`` (default: the CSV's folder). Without a fold column, folds
    are made with a fixed seed, identity-disjoint where identities are known
    (see :func:`make_folds`).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import FacespaceError
from ..imageio import describe

__all__ = [
    "DatasetError",
    "PairSet",
    "PairsFormatError",
    "find_lfw_layout",
    "lfw_image_path",
    "make_folds",
    "read_csv_pairs",
    "read_lfw_pairs",
    "read_pairs",
]

#: Folder names an LFW download unpacks to, tried below ``--root``.
LFW_IMAGE_FOLDERS = ("lfw-deepfunneled", "lfw_funneled", "lfw-funneled", "lfw", "lfw_mtcnnpy_160")

_TRUE = {"1", "true", "yes", "same", "y", "t"}
_FALSE = {"0", "false", "no", "different", "diff", "n", "f"}


class DatasetError(FacespaceError):
    """A data set folder or an image a pair list names is missing."""


class PairsFormatError(FacespaceError):
    """A pairs file is missing, empty or has a malformed line."""


@dataclass
class PairSet:
    """Pairs of image paths with same/different labels and a fold id per pair."""

    first: list[Path]
    second: list[Path]
    same: np.ndarray
    folds: np.ndarray
    source: str = ""
    #: "file" when the folds came from the pairs file, otherwise how they were made.
    folds_origin: str = "file"

    def __post_init__(self) -> None:
        self.same = np.asarray(self.same, dtype=bool).reshape(-1)
        self.folds = np.asarray(self.folds, dtype=np.int64).reshape(-1)
        n = len(self.first)
        if not (len(self.second) == len(self.same) == len(self.folds) == n):
            raise ValueError("pair lists of unequal length")

    def __len__(self) -> int:
        return len(self.first)

    @property
    def n_folds(self) -> int:
        return len(np.unique(self.folds))

    def paths(self) -> list[Path]:
        """Every image the pairs use, once, in order of first use."""
        return list(dict.fromkeys([*self.first, *self.second]))

    def index_pairs(self, paths: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
        """Row indices of each pair's two images within ``paths``."""
        where = {p: i for i, p in enumerate(paths)}
        return (np.array([where[p] for p in self.first], dtype=np.int64),
                np.array([where[p] for p in self.second], dtype=np.int64))

    def subset(self, index) -> "PairSet":
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        return PairSet([self.first[i] for i in index], [self.second[i] for i in index],
                       self.same[index], self.folds[index], self.source, self.folds_origin)

    def limit(self, n: int) -> "PairSet":
        """At most ``n`` pairs, taken in file order round-robin over (fold, same/different) groups,
        so a small subset keeps every fold and both kinds of pair."""
        if n >= len(self):
            return self
        groups: dict[tuple[int, bool], list[int]] = {}
        for i, key in enumerate(zip(self.folds.tolist(), self.same.tolist())):
            groups.setdefault(key, []).append(i)
        queues = [groups[k] for k in sorted(groups)]
        chosen: list[int] = []
        depth = 0
        while len(chosen) < n:
            for q in queues:
                if depth < len(q) and len(chosen) < n:
                    chosen.append(q[depth])
            depth += 1
        return self.subset(sorted(chosen))

    def with_folds(self, n_folds: int = 10, seed: int = 0) -> "PairSet":
        """The same pairs with folds made by :func:`make_folds` (identities: the images' folders)."""
        names = [(a.parent.name, b.parent.name) for a, b in zip(self.first, self.second)]
        identities = names if len({x for pair in names for x in pair}) > 1 else None
        folds, origin = make_folds(len(self), n_folds=n_folds, seed=seed, identities=identities)
        return PairSet(self.first, self.second, self.same, folds, self.source, origin)

    def check_files(self) -> None:
        """Raise :class:`DatasetError` naming the first missing images, if any."""
        missing = [p for p in self.paths() if not p.is_file()]
        if missing:
            shown = ", ".join(describe(p) for p in missing[:3])
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise DatasetError(f"{len(missing)} image(s) named in {self.source or 'the pairs'} do not exist: "
                               f"{shown}{more}")


# -- LFW --------------------------------------------------------------------------
def lfw_image_path(root: Path, name: str, number: int) -> Path:
    return Path(root) / name / f"{name}_{number:04d}.jpg"


def find_lfw_layout(root: str | Path, pairs: str | Path | None = None) -> tuple[Path, Path]:
    """(image folder, pairs file) for ``--root``, which may be the image folder itself or
    a folder holding it (``lfw-deepfunneled/`` etc.) and ``pairs.txt``."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"LFW root {root} does not exist or is not a folder")
    images = root
    for name in LFW_IMAGE_FOLDERS:
        if (root / name).is_dir():
            images = root / name
            break
    if pairs is None:
        for candidate in (root / "pairs.txt", root.parent / "pairs.txt", images / "pairs.txt"):
            if candidate.is_file():
                pairs = candidate
                break
        else:
            raise PairsFormatError(f"no pairs.txt in {root} or {root.parent}; give one with --pairs")
    return images, Path(pairs).expanduser()


def _read_text(path: Path) -> str:
    """The text of a pairs file; :class:`PairsFormatError` when it is missing, unreadable (any
    ``OSError``: no permission, a name too long) or not UTF-8 text (a binary file)."""
    name = describe(path)
    try:
        if not path.is_file():
            raise PairsFormatError(f"pairs file {name} does not exist")
        data = path.read_bytes()
    except OSError as exc:
        raise PairsFormatError(f"pairs file {name} cannot be read ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PairsFormatError(f"{name}: not a text file ({exc})") from None
    if "\x00" in text:
        raise PairsFormatError(f"{name}: not a text file (it holds NUL bytes)")
    return text


def _read_lines(path: Path) -> list[tuple[int, list[str]]]:
    path = Path(path)
    text = _read_text(path)
    lines = [(n, line.split()) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not lines:
        raise PairsFormatError(f"pairs file {describe(path)} is empty")
    return lines


def _int(path: Path, lineno: int, value: str, what: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise PairsFormatError(f"{path}:{lineno}: {what} {value!r} is not a whole number") from None
    if number < 0:
        raise PairsFormatError(f"{path}:{lineno}: {what} {value!r} is negative")
    return number


def _lfw_pair(path: Path, root: Path, lineno: int, fields: list[str]) -> tuple[Path, Path, bool]:
    if len(fields) == 3:
        name, i, j = fields
        return (lfw_image_path(root, name, _int(path, lineno, i, "image number")),
                lfw_image_path(root, name, _int(path, lineno, j, "image number")), True)
    if len(fields) == 4:
        name1, i, name2, j = fields
        return (lfw_image_path(root, name1, _int(path, lineno, i, "image number")),
                lfw_image_path(root, name2, _int(path, lineno, j, "image number")), False)
    raise PairsFormatError(
        f"{path}:{lineno}: expected 'name i j' or 'name1 i name2 j', got {len(fields)} field(s): "
        f"{' '.join(fields)!r}"
    )


def read_lfw_pairs(pairs_file: str | Path, root: str | Path, check_files: bool = True) -> PairSet:
    """Read an LFW pairs file (view 2 with folds, or view 1 / header-less as one set)."""
    path = Path(pairs_file)
    root = Path(root)
    lines = _read_lines(path)
    header_no, header = lines[0]
    if len(header) == 2 and all(h.isdigit() for h in header):
        n_folds, per_fold = int(header[0]), int(header[1])
        body = lines[1:]
        expected = n_folds * 2 * per_fold
        if len(body) != expected:
            raise PairsFormatError(
                f"{path}: header says {n_folds} folds of {per_fold} same + {per_fold} different pairs "
                f"({expected} lines) but the file has {len(body)} pair lines"
            )
        folds = np.repeat(np.arange(n_folds), 2 * per_fold)
        want_same = np.tile(np.repeat([True, False], per_fold), n_folds)
        origin = "file"
    elif len(header) == 1 and header[0].isdigit():
        per_set = int(header[0])
        body = lines[1:]
        if len(body) != 2 * per_set:
            raise PairsFormatError(
                f"{path}: header says {per_set} same + {per_set} different pairs but the file has "
                f"{len(body)} pair lines"
            )
        folds = np.zeros(len(body), dtype=np.int64)
        want_same = np.repeat([True, False], per_set)
        origin = "none (one set)"
    else:
        body = lines
        folds = np.zeros(len(body), dtype=np.int64)
        want_same = None
        origin = "none (one set)"
    first, second, same = [], [], []
    for k, (lineno, fields) in enumerate(body):
        a, b, is_same = _lfw_pair(path, root, lineno, fields)
        if want_same is not None and is_same != bool(want_same[k]):
            kind = "same-person ('name i j')" if want_same[k] else "different-person ('name1 i name2 j')"
            raise PairsFormatError(f"{path}:{lineno}: expected a {kind} line here, got {' '.join(fields)!r}")
        first.append(a)
        second.append(b)
        same.append(is_same)
    pairs = PairSet(first, second, np.array(same, dtype=bool), folds, source=describe(path), folds_origin=origin)
    if check_files:
        pairs.check_files()
    return pairs


# -- CSV ---------------------------------------------------------------------------
def _parse_same(value: str) -> bool | None:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    return None


def read_csv_pairs(
    csv_file: str | Path,
    root: str | Path | None = None,
    n_folds: int = 10,
    seed: int = 0,
    check_files: bool = True,
) -> PairSet:
    """Read ``path1,path2,same[,fold]`` rows; see the module notes."""
    path = Path(csv_file)
    base = Path(root) if root is not None else path.parent
    try:
        rows = [(n, [c.strip() for c in row])
                for n, row in enumerate(csv.reader(io.StringIO(_read_text(path), newline="")), start=1)
                if row and any(c.strip() for c in row) and not row[0].lstrip().startswith("#")]
    except csv.Error as exc:
        raise PairsFormatError(f"{describe(path)}: not a CSV file ({exc})") from None
    if rows and _is_header(rows[0][1]):
        rows = rows[1:]
    if not rows:
        raise PairsFormatError(f"pairs file {path} has no pairs")
    first, second, same, folds = [], [], [], []
    has_fold = None
    for lineno, row in rows:
        if len(row) not in (3, 4):
            raise PairsFormatError(f"{path}:{lineno}: expected 'path1,path2,same[,fold]', got {len(row)} column(s)")
        if has_fold is None:
            has_fold = len(row) == 4
        elif has_fold != (len(row) == 4):
            raise PairsFormatError(f"{path}:{lineno}: every row must have a fold column, or none")
        label = _parse_same(row[2])
        if label is None:
            raise PairsFormatError(f"{path}:{lineno}: 'same' must be 1/0, true/false, yes/no or "
                                   f"same/different, got {row[2]!r}")
        if not row[0] or not row[1]:
            raise PairsFormatError(f"{path}:{lineno}: empty image path")
        first.append(base / row[0])
        second.append(base / row[1])
        same.append(label)
        if has_fold:
            folds.append(_int(path, lineno, row[3], "fold"))
    same_arr = np.array(same, dtype=bool)
    if has_fold:
        pairs = PairSet(first, second, same_arr, np.array(folds), source=describe(path), folds_origin="file")
    else:
        identities = _identities(first, second, base)
        fold_ids, origin = make_folds(len(first), n_folds=n_folds, seed=seed, identities=identities)
        pairs = PairSet(first, second, same_arr, fold_ids, source=describe(path), folds_origin=origin)
    if check_files:
        pairs.check_files()
    return pairs


def _is_header(row: list[str]) -> bool:
    """A first row like ``path1,path2,same[,fold]``: a 3/4-column row whose label isn't one."""
    if len(row) not in (3, 4):
        return False
    return _parse_same(row[2]) is None or row[0].lower() in {"path1", "path_1", "path", "image1", "first"}


def _identities(first: list[Path], second: list[Path], base: Path) -> list[tuple[str, str]] | None:
    """Each pair's two identities (parent folder names), or None when folders don't name people."""
    out = []
    for a, b in zip(first, second):
        if a.parent == base or b.parent == base:
            return None
        out.append((a.parent.name, b.parent.name))
    if len({x for pair in out for x in pair}) < 2:
        return None
    return out


def make_folds(
    n_pairs: int,
    n_folds: int = 10,
    seed: int = 0,
    identities: Sequence[tuple[str, str]] | None = None,
) -> tuple[np.ndarray, str]:
    """Fold ids for ``n_pairs`` pairs and a note on how they were made.

    With identities, pairs linked by a shared person (connected components of
    the person graph) go to the same fold, components dealt largest first to
    the emptiest fold, so no person appears in two folds. When one component
    is too large for that (more than twice a fold's share, common when
    different-person pairs chain many people together), each pair goes with
    the fold of its first person instead: still no same-person identity in
    two folds, but a different-person pair's second person may be. Without
    identities the folds are a seeded random, balanced split.
    """
    n_folds = max(1, min(n_folds, n_pairs))
    rng = np.random.default_rng(seed)
    if identities is None:
        folds = np.arange(n_pairs) % n_folds
        rng.shuffle(folds)
        return folds, f"random (seed {seed})"
    names = sorted({x for pair in identities for x in pair})
    index = {name: i for i, name in enumerate(names)}
    parent = list(range(len(names)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in identities:
        ra, rb = find(index[a]), find(index[b])
        if ra != rb:
            parent[ra] = rb
    group_of_pair = [find(index[a]) for a, _ in identities]
    sizes: dict[int, int] = {}
    for g in group_of_pair:
        sizes[g] = sizes.get(g, 0) + 1
    share = n_pairs / n_folds
    if max(sizes.values()) <= 2 * share and len(sizes) >= n_folds:
        note = f"identity-disjoint (seed {seed})"
    else:
        group_of_pair = [index[a] for a, _ in identities]
        sizes = {}
        for g in group_of_pair:
            sizes[g] = sizes.get(g, 0) + 1
        note = f"by first identity (seed {seed}); different-person pairs may share a person across folds"
    groups = list(sizes)
    rng.shuffle(groups)
    groups.sort(key=lambda g: -sizes[g])  # stable: shuffled order breaks ties
    load = np.zeros(n_folds)
    fold_of_group = {}
    for g in groups:
        k = int(np.argmin(load))
        fold_of_group[g] = k
        load[k] += sizes[g]
    return np.array([fold_of_group[g] for g in group_of_pair], dtype=np.int64), note


def read_pairs(pairs_file: str | Path, root: str | Path | None = None, **kwargs) -> PairSet:
    """Read a pairs file by its kind: ``.csv`` as CSV, anything else as an LFW pairs file."""
    path = Path(pairs_file)
    if path.suffix.lower() == ".csv":
        return read_csv_pairs(path, root, **kwargs)
    if root is None:
        raise DatasetError("an LFW-style pairs file needs --root, the folder of <Name>/<Name>_<NNNN>.jpg images")
    check = kwargs.get("check_files", True)
    return read_lfw_pairs(path, root, check_files=check)
