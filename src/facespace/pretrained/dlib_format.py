"""A reader of dlib's serialised ``shape_predictor`` (``.dat``) files, in numpy, without dlib.

dlib's ``serialize.h`` writes every integer as a header byte (its length in bytes, 0x80 when
negative) followed by that many little-endian bytes, and every float as two such integers, a
mantissa and an exponent (value = mantissa * 2**exponent, exact). A ``shape_predictor``
(``image_processing/shape_predictor.h``) is, in order: ``int version`` (1), the mean shape
``matrix<float,0,1> initial_shape`` (a matrix is ``-rows, -cols`` then its values),
``vector<vector<regression_tree>> forests`` (a tree: ``vector<split_feature>``, each
``idx1, idx2, thresh``, then ``vector<matrix<float,0,1>> leaf_values``),
``vector<vector<unsigned long>> anchor_idx`` and ``vector<vector<vector<float,2>>> deltas``.

So the whole file is one stream of such integers. Decoding it byte by byte in Python takes
about 12 s for the 68-point model (33 million integers); :func:`packed_integers` instead follows
the chain of headers in many chunks at once (numpy: 3-6 s on a shared CPU, about 2 GB at its peak) and stitches the chunks where their
chains meet, then checks the stitched chain step by step from the first byte to the last.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import WeightsError

__all__ = ["ShapePredictorModel", "read_shape_predictor", "packed_integers"]

_CHUNK = 1 << 16  # bytes per chunk followed in lockstep
_OVERLAP = 1 << 10  # bytes a chunk's chain runs into the next to meet that chunk's own chain


@dataclass(frozen=True)
class ShapePredictorModel:
    """A cascade of ensembles of regression trees (Kazemi & Sullivan 2014) as dense arrays.

    ``initial_shape``: (P, 2) mean shape in the unit box; per cascade level ``c`` and tree ``t``:
    ``split_idx`` (C, T, S, 2) feature pixels compared, ``split_thresh`` (C, T, S),
    ``leaf_values`` (C, T, L, P, 2) shape increments; ``anchor_idx`` (C, F) the landmark each
    feature pixel hangs from and ``deltas`` (C, F, 2) its offset from it in the mean shape's frame.
    """

    initial_shape: np.ndarray
    split_idx: np.ndarray
    split_thresh: np.ndarray
    leaf_values: np.ndarray
    anchor_idx: np.ndarray
    deltas: np.ndarray

    @property
    def num_parts(self) -> int:
        return len(self.initial_shape)


def _sequential_chain(data: np.ndarray, start: int, end: int) -> list[int]:
    """Header positions from ``start`` up to ``end``, one at a time (the fallback)."""
    out, pos = [], start
    while pos < end:
        out.append(pos)
        pos += 1 + int(data[pos] & 0x0F)
    return out


def _header_positions(data: np.ndarray) -> np.ndarray:
    """The position of every integer's header byte in ``data``."""
    n = len(data)
    step = np.ones(n + 1, dtype=np.int64)
    step[:n] += data & 0x0F
    starts = np.arange(0, n, _CHUNK, dtype=np.int64)
    limits = np.minimum(starts + _CHUNK + _OVERLAP, n)
    limits[-1] = n
    pos, rows = starts.copy(), []
    while (active := pos < limits).any():
        rows.append(np.where(active, pos, n).astype(np.int32))
        pos = np.where(active, np.minimum(pos + step[np.minimum(pos, n)], n), pos)
    # (chunks, steps): every chunk's chain of header positions
    chains = np.stack(rows, axis=1).astype(np.int64) if rows else np.zeros((len(starts), 0), np.int64)
    meets = [0]
    for j in range(1, len(starts)):  # chain j-1 is true from meets[j-1]; find where it meets chain j
        window = (starts[j], starts[j] + _OVERLAP)
        prev = chains[j - 1][(chains[j - 1] >= window[0]) & (chains[j - 1] < window[1])]
        mine = chains[j][(chains[j] >= window[0]) & (chains[j] < window[1])]
        common = np.intersect1d(prev, mine)
        meets.append(int(common[0]) if len(common) else -1)
    if -1 in meets:  # two chains never met (not seen in practice): walk the file one header at a time
        return _checked(np.array(_sequential_chain(data, 0, n), dtype=np.int64), step, n)
    bounds = meets + [n]
    pieces = [chains[j][(chains[j] >= bounds[j]) & (chains[j] < bounds[j + 1])] for j in range(len(meets))]
    return _checked(np.concatenate(pieces), step, n)


def _checked(positions: np.ndarray, step: np.ndarray, n: int) -> np.ndarray:
    """``positions`` when they chain from the first byte, header to header, to exactly the last."""
    if len(positions) == 0 or positions[0] != 0 or (np.diff(positions) != step[positions[:-1]]).any() \
            or positions[-1] + step[positions[-1]] != n:
        raise WeightsError("not a dlib serialised file: its integer headers do not chain to its end")
    return positions


def packed_integers(data: bytes) -> np.ndarray:
    """Every integer of a dlib serialised stream, in order (int64)."""
    raw = np.frombuffer(data, dtype=np.uint8)
    positions = _header_positions(raw)
    header = raw[positions]
    sizes = (header & 0x0F).astype(np.int64)
    if (sizes > 8).any() or (sizes == 0).any():
        raise WeightsError("not a dlib serialised file: an integer longer than 8 bytes")
    padded = np.concatenate([raw, np.zeros(9, np.uint8)])
    values = np.zeros(len(positions), dtype=np.uint64)
    for k in range(int(sizes.max())):
        byte = padded[positions + 1 + k].astype(np.uint64)
        values |= np.where(k < sizes, byte, 0) << np.uint64(8 * k)
    signed = values.astype(np.int64)
    return np.where(header & 0x80, -signed, signed)


class _Cursor:
    """Reads the structure out of the integer stream, checking every length it meets."""

    def __init__(self, ints: np.ndarray) -> None:
        self.ints, self.at = ints, 0

    def take(self, count: int) -> np.ndarray:
        if self.at + count > len(self.ints):
            raise WeightsError("dlib shape predictor file ends early")
        out = self.ints[self.at:self.at + count]
        self.at += count
        return out

    def one(self) -> int:
        return int(self.take(1)[0])

    def floats(self, count: int) -> np.ndarray:
        pairs = self.take(2 * count).reshape(count, 2)
        return np.ldexp(pairs[:, 0].astype(np.float64), pairs[:, 1]).astype(np.float32)

    def column(self) -> np.ndarray:
        rows, cols = -self.one(), -self.one()
        if cols != 1 or rows < 0:
            raise WeightsError(f"dlib shape predictor: expected a column vector, got {rows}x{cols}")
        return self.floats(rows)

    def forest(self, parts: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One cascade level: trees of one shape read as one block (checked)."""
        trees, splits = self.one(), int(self.ints[self.at])
        leaves = splits + 1
        per_tree = 1 + 4 * splits + 1 + leaves * (2 + 4 * parts)
        block = self.take(trees * per_tree).reshape(trees, per_tree)
        split_part = block[:, 1:1 + 4 * splits].reshape(trees, splits, 4)
        leaf_part = block[:, 2 + 4 * splits:].reshape(trees, leaves, 2 + 4 * parts)
        if ((block[:, 0] != splits).any() or (block[:, 1 + 4 * splits] != leaves).any()
                or (leaf_part[:, :, 0] != -2 * parts).any() or (leaf_part[:, :, 1] != -1).any()):
            raise WeightsError("dlib shape predictor: trees of unequal shape are not supported")
        thresh = np.ldexp(split_part[..., 2].astype(np.float64), split_part[..., 3]).astype(np.float32)
        pairs = leaf_part[:, :, 2:].reshape(trees, leaves, 2 * parts, 2)
        leaf = np.ldexp(pairs[..., 0].astype(np.float64), pairs[..., 1]).astype(np.float32)
        return split_part[..., :2], thresh, leaf.reshape(trees, leaves, parts, 2)


def read_shape_predictor(path: str | Path) -> ShapePredictorModel:
    """Read a dlib ``shape_predictor`` file (see the module notes for the layout)."""
    data = Path(path).read_bytes()
    cur = _Cursor(packed_integers(data))
    version = cur.one()
    if version != 1:
        raise WeightsError(f"{path}: dlib shape predictor version {version}, expected 1")
    initial = cur.column().reshape(-1, 2)
    parts = len(initial)
    levels = [cur.forest(parts) for _ in range(cur.one())]
    anchors = [cur.take(cur.one()).copy() for _ in range(cur.one())]
    deltas = [cur.floats(2 * cur.one()).reshape(-1, 2) for _ in range(cur.one())]
    if cur.at != len(cur.ints) or not (len(levels) == len(anchors) == len(deltas)):
        raise WeightsError(f"{path}: not a dlib shape predictor (unexpected layout)")
    return ShapePredictorModel(
        initial_shape=initial,
        split_idx=np.stack([lv[0] for lv in levels]).astype(np.int64),
        split_thresh=np.stack([lv[1] for lv in levels]),
        leaf_values=np.stack([lv[2] for lv in levels]),
        anchor_idx=np.stack(anchors).astype(np.int64),
        deltas=np.stack(deltas),
    )
