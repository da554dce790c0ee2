"""Harmonic training on real embeddings: the mixed-version triplet loss falls, and the result is a map.

Embeddings of 240 celeba-299 images by both models come from the evaluation
cache; training touches only embeddings, so a few dozen steps take about a second.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facespace.compat import CompatMap
from facespace_train.harmonic import (HarmonicConfig, HarmonicModel, cross_accuracy, mixed_batch_loss, sample_pairs,
                                      split_identities, to_compat_map, train_harmonic)

from shared_data import DATA

OLD, NEW = "facenet-casia-512", "facenet-msceleb-128"


@pytest.fixture(scope="module")
def pairs_of_versions() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(new, old, labels) of 24 identities x 10 celeba images."""
    from facespace import FacePipeline
    from facespace.evaluation import embed_paths

    folders = [f for f in sorted((DATA / "celeba-299" / "faces").iterdir()) if len(list(f.glob("*.jpg"))) >= 10]
    paths = [p for f in folders[:24] for p in sorted(f.glob("*.jpg"))[:10]]
    new = embed_paths(FacePipeline(model=NEW), paths, progress=False).embeddings
    old = embed_paths(FacePipeline(model=OLD), paths, progress=False).embeddings
    return new, old, np.array([int(p.parent.name) for p in paths])


def test_untrained_head_is_the_new_model(pairs_of_versions):
    new, old, _ = pairs_of_versions
    model = HarmonicModel(new.shape[1], old.shape[1])
    np.testing.assert_allclose(model.embed(new=new), new, atol=1e-6)
    assert model.embed(old=old).shape == new.shape


def test_mixed_batches_mine_across_versions(pairs_of_versions):
    new, old, labels = pairs_of_versions
    model = HarmonicModel(new.shape[1], old.shape[1])
    rows = torch.arange(40)
    out = mixed_batch_loss(model, torch.as_tensor(new[rows]), torch.as_tensor(old[rows]),
                           torch.as_tensor(labels[rows]))
    n = len(rows)
    t = out.triplets
    assert ((t.anchor < n) != (t.positive < n)).any()   # cross-version anchor-positive pairs
    assert ((t.anchor < n) != (t.negative < n)).any()   # negatives from the other version
    assert out.loss.requires_grad


def test_head_training_lowers_the_loss_and_becomes_a_harmonic_map(pairs_of_versions):
    new, old, labels = pairs_of_versions
    train, test = split_identities(labels, held_out=0.25, seed=0)
    config = HarmonicConfig(p=12, k=5, steps=60, lr=1e-2, validate_every=20, max_new_drop=1.0)
    result = train_harmonic(new[train], old[train], labels[train], config,
                            held_out=(new[test], old[test], labels[test]))
    assert len(result.losses) == 60
    assert np.mean(result.losses[-10:]) < np.mean(result.losses[:10])
    assert [h["step"] for h in result.validation] == [0, 20, 40, 60]
    assert result.kept_step in (0, 20, 40, 60)
    compat = to_compat_map(result.model, source_model=OLD, target_model=NEW, source_preprocessing="o",
                           target_preprocessing="n")
    assert isinstance(compat, CompatMap) and compat.kind == "harmonic" and compat.dim == new.shape[1]
    a, b = compat.apply(old[test]), compat.apply_target(new[test])
    np.testing.assert_allclose(b, result.model.embed(new=new[test]), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    assert cross_accuracy(a, b, sample_pairs(labels[test])) > 0.6
