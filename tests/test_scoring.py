"""Scoring rules for the pair protocol: concatenated flips and per-fold mean subtraction, by hand."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from facespace.evaluation.cache import EmbeddingSet
from facespace.evaluation.pairs import PairSet
from facespace.evaluation.protocol import evaluate_pairs
from facespace.evaluation.scoring import ScoringRule, pair_distances, scored_distances


def _pairs(first, second, same, folds) -> PairSet:
    return PairSet(first=[Path(p) for p in first], second=[Path(p) for p in second],
                   same=np.array(same, dtype=bool), folds=np.array(folds), source="hand")


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def test_concat_flip_is_the_mean_of_the_two_views_distances():
    # Image a: plain (1,0), mirror (0,1); image b: plain (1,0), mirror (1,0).
    plain = np.array([[1.0, 0.0], [1.0, 0.0]], np.float32)
    mirror = np.array([[0.0, 1.0], [1.0, 0.0]], np.float32)
    averaged = np.stack([_unit([1, 1]), _unit([2, 0])]).astype(np.float32)
    emb = EmbeddingSet(paths=[Path("a"), Path("b")], embeddings=averaged, detected=np.ones(2, bool),
                       views={"plain": plain, "mirror": mirror})
    pairs = _pairs(["a"], ["b"], [True], [0])
    # Averaged rule: |(1,1)/sqrt2 - (1,0)|^2 = 2 - 2/sqrt2.
    assert pair_distances(emb, pairs)[0] == pytest.approx(2 - math.sqrt(2))
    # Concat rule: plain distance 0, mirror distance |(0,1)-(1,0)|^2 = 2; mean = 1.
    d, per_fold = scored_distances(emb, pairs, ScoringRule(flip="concat"))
    assert per_fold is None
    assert d[0] == pytest.approx(1.0)


def test_subtract_mean_uses_only_the_training_folds():
    # Four images on a line through (0, 1): centring on the training mean changes the angles.
    vectors = {"a": [1.0, 1.0], "b": [-1.0, 1.0], "c": [1.0, 3.0], "d": [3.0, 1.0]}
    names = list(vectors)
    emb = EmbeddingSet(paths=[Path(n) for n in names],
                       embeddings=np.stack([_unit(v) for v in vectors.values()]).astype(np.float32),
                       detected=np.ones(4, bool))
    emb.views = {"plain": emb.embeddings}
    pairs = _pairs(["a", "c"], ["b", "d"], [False, True], [0, 1])
    everything, per_fold = scored_distances(emb, pairs, ScoringRule(subtract_mean=True))
    u = {n: _unit(v) for n, v in vectors.items()}
    # Fold 0 is held out: the mean is that of fold 1's images c and d.
    m0 = (u["c"] + u["d"]) / 2
    # Fold 1 is held out: the mean is that of fold 0's images a and b.
    m1 = (u["a"] + u["b"]) / 2
    m_all = (u["a"] + u["b"] + u["c"] + u["d"]) / 4

    def dist(x, y, m):
        return float(np.sum((_unit(u[x] - m) - _unit(u[y] - m)) ** 2))

    assert per_fold.shape == (2, 2)
    assert per_fold[0] == pytest.approx([dist("a", "b", m0), dist("c", "d", m0)])
    assert per_fold[1] == pytest.approx([dist("a", "b", m1), dist("c", "d", m1)])
    assert everything == pytest.approx([dist("a", "b", m_all), dist("c", "d", m_all)])
    # a and b are orthogonal unit vectors; m1 = (0, 1/sqrt2) removes their shared part, leaving
    # them opposite: distance 4.
    assert per_fold[1][0] == pytest.approx(4.0)


def test_protocol_chooses_each_folds_threshold_on_its_own_row():
    # Two folds of two pairs. Global distances would separate nothing, but each fold's row does.
    same = np.array([True, False, True, False])
    folds = np.array([0, 0, 1, 1])
    flat = np.array([0.5, 0.5, 0.5, 0.5])
    rows = np.array([[0.1, 0.9, 0.2, 0.8],    # fold 0 held out: threshold from pairs 2,3 -> (0.2+0.8)/2
                     [0.9, 0.1, 0.3, 0.7]])   # fold 1 held out: threshold from pairs 0,1 -> first max 0.1
    report = evaluate_pairs(flat, same, folds, fold_distances=rows)
    # Fold 0 at 0.5 on row 0: 0.1 same ok, 0.9 diff ok -> 1.0.
    # Fold 1 on row 1: train pairs (0.9 S, 0.1 D): accepting none gives 1/2, accepting 0.1 gives 0/2,
    #   accepting both gives 1/2 -> the first maximum, "accept nothing", a threshold below 0.1;
    #   held-out 0.3 S is rejected (wrong), 0.7 D rejected (right) -> 0.5.
    assert report.fold_accuracies == pytest.approx([1.0, 0.5])
    assert report.thresholds[0] == pytest.approx(0.5)
    assert report.thresholds[1] < 0.1
    assert report.auc == pytest.approx(0.5)  # ROC/AUC come from the flat global distances
    with pytest.raises(ValueError, match="shape"):
        evaluate_pairs(flat, same, folds, fold_distances=rows[:1])


def test_bad_rule():
    with pytest.raises(ValueError, match="flip rule"):
        ScoringRule(flip="max")
