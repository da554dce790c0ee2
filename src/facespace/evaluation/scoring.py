"""How a pair of images becomes one distance for the verification protocol.

The default rule is the library's own: the squared L2 distance of the two
unit embeddings (with flip on, each embedding is ``normalise(plain +
mirror)``, what :class:`facespace.embedding.Embedder` returns). Two options
reproduce how published FaceNet numbers were measured (Sandberg's
``validate_on_lfw.py --use_flipped_images --subtract_mean
--distance_metric 1``):

``flip="concat"``
    each image is ``[plain, mirror] / sqrt(2)`` instead of the averaged
    vector, so the distance is the mean of the two views' distances.
``subtract_mean=True``
    the mean vector of the *training folds'* images is removed and the
    vectors renormalised before the distance, which makes it the cosine
    distance of centred embeddings. The mean is computed per fold from the
    other nine folds only, so a held-out fold never informs its own
    threshold. Deployed verification has no such mean; the report says
    which rule made each number.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal, get_args

import numpy as np

from ..comparison import squared_distance, unit_rows
from ..errors import check_choice
from .cache import EmbeddingSet
from .pairs import PairSet

__all__ = ["FLIP_RULES", "ScoringRule", "pair_distances", "pair_vectors", "scored_distances", "vector_distances"]

#: How the plain and mirrored views of an image are combined.
#: With flip on: average the two views' unit embeddings (what the library does) or concatenate them.
FlipRule = Literal["mean", "concat"]
FLIP_RULES: tuple[str, ...] = get_args(FlipRule)


@dataclass(frozen=True)
class ScoringRule:
    """Which views make an image's vector and whether the training mean is removed."""

    flip: FlipRule = "mean"
    subtract_mean: bool = False

    def __post_init__(self) -> None:
        check_choice(self.flip, FlipRule, "flip rule")

    @property
    def is_default(self) -> bool:
        return self == ScoringRule()

    def to_dict(self) -> dict:
        return asdict(self)


def image_vectors(embeddings: EmbeddingSet, rule: ScoringRule) -> np.ndarray:
    """One unit vector per image under ``rule`` (float64)."""
    if rule.flip == "concat" and "mirror" in embeddings.views:
        joined = np.concatenate([embeddings.views["plain"], embeddings.views["mirror"]], axis=1)
        return unit_rows(joined.astype(np.float64))
    return embeddings.embeddings.astype(np.float64)


def pair_vectors(embeddings: EmbeddingSet, pairs: PairSet, rule: ScoringRule = ScoringRule()):
    """The two images' vectors of every pair, as two (n_pairs, dim) arrays."""
    vectors = image_vectors(embeddings, rule)
    where = embeddings.index()
    return vectors[[where[p] for p in pairs.first]], vectors[[where[p] for p in pairs.second]]


def pair_distances(embeddings: EmbeddingSet, pairs: PairSet) -> np.ndarray:
    """Squared L2 distance of each pair's two embeddings (the library's own rule)."""
    a, b = pair_vectors(embeddings, pairs)
    return squared_distance(a, b).astype(np.float64)


def _centred_distances(a: np.ndarray, b: np.ndarray, mean: np.ndarray) -> np.ndarray:
    return squared_distance(unit_rows(a - mean), unit_rows(b - mean)).astype(np.float64)


def scored_distances(embeddings: EmbeddingSet, pairs: PairSet, rule: ScoringRule = ScoringRule()):
    """``(distances, fold_distances)`` for :func:`.protocol.evaluate_pairs`.

    ``distances`` scores every pair at once (for the ROC, AUC and EER; with
    ``subtract_mean`` the mean is that of all pairs). ``fold_distances`` is
    ``None`` unless the rule needs training statistics; then row ``k`` holds
    every pair's distance with the mean of the images outside fold ``k``.
    """
    a, b = pair_vectors(embeddings, pairs, rule)
    return vector_distances(a, b, pairs.folds, rule.subtract_mean)


def vector_distances(a: np.ndarray, b: np.ndarray, folds, subtract_mean: bool = False):
    """``(distances, fold_distances)`` of the pairs ``(a[i], b[i])``, already one vector per image
    (e.g. two models' embeddings in a compatibility map's common space); see :func:`scored_distances`."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if not subtract_mean:
        return squared_distance(a, b).astype(np.float64), None
    folds = np.asarray(folds)
    everything = _centred_distances(a, b, np.concatenate([a, b]).mean(axis=0))
    per_fold = []
    for k in np.unique(folds):
        train = folds != k
        mean = np.concatenate([a[train], b[train]]).mean(axis=0)
        per_fold.append(_centred_distances(a, b, mean))
    return everything, np.stack(per_fold)
