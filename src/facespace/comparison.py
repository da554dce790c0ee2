"""Comparing embeddings: squared Euclidean distance, as in the FaceNet paper.

For L2-normalised embeddings the squared distance lies in [0, 4] and equals
2 - 2 * cosine similarity, so a matrix product gives all pairs at once.
"""

from __future__ import annotations

import numpy as np

from .errors import ModelMismatchError
from .types import Verification


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Each row of ``x`` scaled to unit L2 length (all-zero rows stay zero); float dtype kept."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def squared_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise squared L2 distance between two equally shaped (N, D) or (D,) arrays."""
    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    if a.shape[-1] != b.shape[-1]:
        raise ModelMismatchError(
            f"embeddings of size {a.shape[-1]} and {b.shape[-1]} cannot be compared; "
            "they come from different models"
        )
    return np.sum((a - b) ** 2, axis=-1)


def distances_from_similarity(similarity: np.ndarray) -> np.ndarray:
    """Squared distances of unit embeddings from their cosine similarities: 2 - 2 s, clipped to [0, 4]
    (rounding can take a product of unit vectors a little past +-1)."""
    return np.clip(2.0 - 2.0 * np.asarray(similarity), 0.0, 4.0)


def distance_matrix(queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """All squared distances between (Q, D) queries and (G, D) normalised gallery rows."""
    queries, gallery = np.atleast_2d(queries).astype(np.float32), np.atleast_2d(gallery).astype(np.float32)
    if queries.shape[1] != gallery.shape[1]:
        raise ModelMismatchError(
            f"embeddings of size {queries.shape[1]} and {gallery.shape[1]} cannot be compared"
        )
    return distances_from_similarity(queries @ gallery.T)


def verify(a: np.ndarray, b: np.ndarray, threshold: float, quality: tuple[float, float] | None = None,
           min_quality: float | None = None) -> Verification:
    """Same person when the squared distance is at or below ``threshold``; no verdict (``same`` None,
    "low_quality") when ``min_quality`` is given and the worse of the two faces' ``quality`` is below it."""
    distance = float(squared_distance(a, b))
    refused = quality is not None and min_quality is not None and min(quality) < min_quality
    return Verification(distance=distance, threshold=float(threshold), same=None if refused else distance <= threshold,
                        quality=None if quality is None else (float(quality[0]), float(quality[1])),
                        min_quality=min_quality)
