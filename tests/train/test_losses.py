"""Triplet loss and mining on hand-computed cases.

Embeddings are points on a line, labels [0, 0, 1, 1], x = [0, 0.3, 0.5, 1.0];
squared distances d01=.09 d02=.25 d03=1 d12=.04 d13=.49 d23=.25, margin 0.2.
"""

import pytest
import torch

from facespace_train.losses import mine_triplets, pairwise_distances, triplet_loss

X = torch.tensor([[0.0], [0.3], [0.5], [1.0]])
Y = torch.tensor([0, 0, 1, 1])


def test_pairwise_distances_squared():
    d = pairwise_distances(X)
    assert d[0, 1] == pytest.approx(0.09, abs=1e-6)
    assert d[1, 2] == pytest.approx(0.04, abs=1e-6)
    assert d[2, 3] == pytest.approx(0.25, abs=1e-6)
    assert torch.all(d.diagonal() == 0)
    e = torch.nn.functional.normalize(torch.randn(5, 8), dim=1)
    assert torch.allclose(pairwise_distances(e), torch.cdist(e, e) ** 2, atol=1e-5)


def test_semihard_with_nearest_outside_fallback():
    out = triplet_loss(X, Y, margin=0.2, strategy="semihard")
    # (0,1): semi-hard 2 -> .04 ; (1,0): none, nearest farther neg 3 -> 0 ;
    # (2,3): no neg farther than d_ap -> farthest neg 0 -> .2 ; (3,2): nearest farther 1 -> 0
    assert out.triplets.as_set() == {(0, 1, 2), (1, 0, 3), (2, 3, 0), (3, 2, 1)}
    assert out.loss.item() == pytest.approx((0.04 + 0.2) / 4, abs=1e-6)
    assert out.stats["active_fraction"] == 0.5
    assert out.stats["pairs_without_semihard"] == 3
    assert out.stats["mean_pos_dist"] == pytest.approx((0.09 * 2 + 0.25 * 2) / 4, abs=1e-6)
    assert out.stats["mean_neg_dist"] == pytest.approx((0.25 + 0.49 + 0.25 + 0.49) / 4, abs=1e-6)


def test_semihard_fallbacks_hardest_and_drop():
    hardest = triplet_loss(X, Y, strategy="semihard", fallback="hardest")
    assert hardest.triplets.as_set() == {(0, 1, 2), (1, 0, 2), (2, 3, 1), (3, 2, 1)}
    drop = triplet_loss(X, Y, strategy="semihard", fallback="drop")
    assert drop.triplets.as_set() == {(0, 1, 2)}
    assert drop.loss.item() == pytest.approx(0.04, abs=1e-6)


def test_semihard_paper_rule_is_strict():
    # d(a,n) == d(a,p) is not semi-hard (needs d(a,p) < d(a,n)); only d(a,n) < d(a,p)+alpha counts
    x = torch.tensor([[0.0], [0.5], [-0.5], [0.0]])
    y = torch.tensor([0, 0, 1, 2])
    t = mine_triplets(pairwise_distances(x), y, "semihard", 0.2, fallback="drop")
    assert t.as_set() == set()  # anchor 0: d_ap=.25, negs at .25 (equal) and 0 (closer)
    t = mine_triplets(pairwise_distances(x), y, "semihard", 0.3, fallback="drop")
    assert t.as_set() == set()
    x2 = torch.tensor([[0.0], [0.5], [-0.6], [2.0]])
    t = mine_triplets(pairwise_distances(x2), y, "semihard", 0.2, fallback="drop")
    assert (0, 1, 2) in t.as_set()  # .25 < .36 < .45


def test_hard_mining():
    out = triplet_loss(X, Y, strategy="hard")
    assert out.triplets.as_set() == {(0, 1, 2), (1, 0, 2), (2, 3, 1), (3, 2, 1)}
    assert out.loss.item() == pytest.approx((0.04 + 0.25 + 0.41 + 0.0) / 4, abs=1e-6)
    assert out.stats["active_fraction"] == 0.75


def test_batch_all_and_reductions():
    out = triplet_loss(X, Y, strategy="batch_all")
    assert len(out.triplets) == 8
    assert out.loss.item() == pytest.approx(0.9 / 8, abs=1e-6)
    active = triplet_loss(X, Y, strategy="batch_all", reduction="mean_active")
    assert active.loss.item() == pytest.approx(0.9 / 4, abs=1e-6)
    summed = triplet_loss(X, Y, strategy="batch_all", reduction="sum")
    assert summed.loss.item() == pytest.approx(0.9, abs=1e-6)


def test_random_mining_picks_valid_negatives_reproducibly():
    torch.manual_seed(0)
    e = torch.nn.functional.normalize(torch.randn(12, 4), dim=1)
    y = torch.arange(4).repeat_interleave(3)
    seen = set()
    for seed in range(20):
        t1 = mine_triplets(pairwise_distances(e), y, "random", generator=torch.Generator().manual_seed(seed))
        t2 = mine_triplets(pairwise_distances(e), y, "random", generator=torch.Generator().manual_seed(seed))
        assert torch.equal(t1.negative, t2.negative)
        assert torch.all(y[t1.negative] != y[t1.anchor]) and torch.all(y[t1.positive] == y[t1.anchor])
        seen |= set(t1.negative[t1.anchor == 0].tolist())
    assert len(t1) == 4 * 3 * 2
    assert seen == set(range(3, 12))  # every negative of anchor 0 gets picked sometimes


@pytest.mark.parametrize("labels", [[0, 1, 2, 3], [5, 5, 5, 5], [0, 0, 1, 2]])
@pytest.mark.parametrize("strategy", ["semihard", "hard", "random", "batch_all"])
def test_batches_without_valid_triplet(labels, strategy):
    e = torch.nn.functional.normalize(torch.randn(4, 3), dim=1).requires_grad_(True)
    y = torch.tensor(labels)
    out = triplet_loss(e, y, strategy=strategy)
    if labels == [0, 0, 1, 2]:  # one pair, negatives exist: a valid triplet
        assert out.stats["triplets"] > 0
        return
    assert out.loss.item() == 0.0 and out.stats["triplets"] == 0
    assert out.stats["active_fraction"] == 0.0
    out.loss.backward()
    assert torch.all(e.grad == 0)


def test_gradient_pushes_negative_away():
    e = torch.tensor([[0.0, 1.0], [0.6, 0.8], [0.8, 0.6]], requires_grad=True)
    out = triplet_loss(e, torch.tensor([0, 0, 1]), strategy="hard")
    out.loss.backward()
    assert out.loss.item() > 0
    # anchor 0 moves towards positive 1 and away from negative 2
    assert (e.grad[2] * (e[2] - e[0]).detach()).sum() < 0 or (e.grad[2] * (e[2] - e[1]).detach()).sum() < 0


def test_bad_arguments():
    with pytest.raises(ValueError):
        triplet_loss(X, Y, strategy="nope")
    with pytest.raises(ValueError):
        triplet_loss(X, Y, fallback="nope")
    with pytest.raises(ValueError):
        triplet_loss(X, Y, reduction="nope")
