"""Triplet loss with online mining on the batch distance matrix (FaceNet section 3).

For a triplet (anchor a, positive p, negative n) of L2-normalised embeddings
the loss is ``max(0, d(a,p) - d(a,n) + alpha)`` with ``d`` the *squared*
Euclidean distance and ``alpha = 0.2`` (the paper's margin).

Mining works on the whole batch at once:

* every anchor-positive pair (a, p), a != p, with the same label is used
  (the paper: "we use all anchor-positive pairs in a mini-batch");
* one negative is chosen for each pair by ``strategy``:

  - ``"semihard"`` -- the paper's rule: negatives with
    ``d(a,p) < d(a,n) < d(a,p) + alpha``; of those the hardest (smallest
    ``d(a,n)``). When a pair has none, ``fallback`` decides:

    * ``"nearest_outside"`` (default; the rule of TF's ``triplet_semihard_loss``):
      the closest negative farther than the positive if there is one (it lies
      beyond the margin, so the triplet adds zero loss), otherwise the
      farthest negative (all negatives are closer than the positive: take the
      least hard of these hard negatives);
    * ``"hardest"``: the closest negative;
    * ``"drop"``: the pair contributes no triplet;

  - ``"hard"`` -- the closest negative (``argmin d(a,n)``);
  - ``"random"`` -- a uniformly random negative (``generator`` for reproducibility);
* ``"batch_all"`` is the baseline that uses every valid (a, p, n) triplet.

``reduction="mean"`` averages over the selected triplets, ``"mean_active"``
over those with a positive loss (Hermans et al.'s batch-all variant), ``"sum"``
sums. A batch with no valid triplet (no identity with two faces, or a single
identity) gives a zero loss that is still connected to the graph, and stats
with ``triplets == 0``.

Mining itself runs without gradient on detached distances; the loss is then
computed from the distance matrix that carries the gradient.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

STRATEGIES = ("semihard", "hard", "random", "batch_all")
FALLBACKS = ("nearest_outside", "hardest", "drop")
REDUCTIONS = ("mean", "mean_active", "sum")


def pairwise_distances(embeddings: torch.Tensor, squared: bool = True) -> torch.Tensor:
    """(B, B) matrix of (squared) Euclidean distances between rows of ``embeddings``."""
    dot = embeddings @ embeddings.t()
    norms = dot.diagonal()
    dist = (norms[:, None] - 2.0 * dot + norms[None, :]).clamp_min(0.0)
    # exact zeros on the diagonal, whatever the rounding
    dist = dist * (1.0 - torch.eye(len(embeddings), device=dist.device, dtype=dist.dtype))
    if not squared:
        dist = torch.sqrt(dist + 1e-12) * (dist > 0)
    return dist


@dataclass
class Triplets:
    """Indices into the batch of the selected triplets (each a 1-D long tensor)."""

    anchor: torch.Tensor
    positive: torch.Tensor
    negative: torch.Tensor
    pairs: int = 0              # anchor-positive pairs in the batch
    pairs_without_semihard: int = 0

    def __len__(self) -> int:
        return int(self.anchor.numel())

    def as_set(self) -> set[tuple[int, int, int]]:
        return set(zip(self.anchor.tolist(), self.positive.tolist(), self.negative.tolist()))


@dataclass
class TripletLossOutput:
    loss: torch.Tensor
    triplets: Triplets
    stats: dict = field(default_factory=dict)


def _empty(device) -> torch.Tensor:
    return torch.zeros(0, dtype=torch.long, device=device)


@torch.no_grad()
def mine_triplets(dist: torch.Tensor, labels: torch.Tensor, strategy: str = "semihard", margin: float = 0.2,
                  fallback: str = "nearest_outside", generator: torch.Generator | None = None) -> Triplets:
    """Choose triplets from a (B, B) distance matrix and (B,) labels; see the module docstring."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown mining strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if fallback not in FALLBACKS:
        raise ValueError(f"unknown semi-hard fallback {fallback!r}; choose one of {', '.join(FALLBACKS)}")
    dist = dist.detach()
    device = dist.device
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=device)
    pos_mask = same & ~eye
    neg_mask = ~same
    a, p = pos_mask.nonzero(as_tuple=True)
    n_pairs = int(a.numel())
    if strategy == "batch_all":
        valid = pos_mask[:, :, None] & neg_mask[:, None, :]
        ia, ip, ineg = valid.nonzero(as_tuple=True)
        return Triplets(ia, ip, ineg, pairs=n_pairs)
    # only pairs whose anchor has at least one negative
    has_neg = neg_mask.any(dim=1)[a]
    a, p = a[has_neg], p[has_neg]
    if a.numel() == 0:
        return Triplets(_empty(device), _empty(device), _empty(device), pairs=n_pairs)
    d_an = dist[a]                        # (pairs, B)
    negs = neg_mask[a]                    # (pairs, B)
    inf = torch.tensor(float("inf"), device=device, dtype=dist.dtype)
    missing = 0
    if strategy == "hard":
        n = torch.where(negs, d_an, inf).argmin(dim=1)
    elif strategy == "random":
        scores = torch.rand(d_an.shape, generator=generator, device="cpu" if generator is None else generator.device)
        scores = scores.to(device)
        n = torch.where(negs, scores, -1.0).argmax(dim=1)
    else:
        d_ap = dist[a, p][:, None]
        semi = negs & (d_an > d_ap) & (d_an < d_ap + margin)
        has_semi = semi.any(dim=1)
        n = torch.where(semi, d_an, inf).argmin(dim=1)
        missing = int((~has_semi).sum())
        if missing:
            if fallback == "hardest":
                alt = torch.where(negs, d_an, inf).argmin(dim=1)
            elif fallback == "nearest_outside":
                outside = negs & (d_an > d_ap)
                nearest_out = torch.where(outside, d_an, inf).argmin(dim=1)
                farthest = torch.where(negs, d_an, -inf).argmax(dim=1)
                alt = torch.where(outside.any(dim=1), nearest_out, farthest)
            else:  # drop
                keep = has_semi
                return Triplets(a[keep], p[keep], n[keep], pairs=n_pairs, pairs_without_semihard=missing)
            n = torch.where(has_semi, n, alt)
    return Triplets(a, p, n, pairs=n_pairs, pairs_without_semihard=missing)


def triplet_loss(embeddings: torch.Tensor, labels: torch.Tensor, margin: float = 0.2,
                 strategy: str = "semihard", fallback: str = "nearest_outside", reduction: str = "mean",
                 generator: torch.Generator | None = None) -> TripletLossOutput:
    """Mine triplets in the batch and return the triplet loss with statistics.

    ``stats``: ``triplets`` (selected), ``active_fraction`` (share with loss > 0),
    ``mean_pos_dist`` / ``mean_neg_dist`` (mean squared distances d(a,p),
    d(a,n) over the selected triplets; NaN when there are none), ``pairs``
    (anchor-positive pairs in the batch) and ``pairs_without_semihard``.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; choose one of {', '.join(REDUCTIONS)}")
    labels = labels.to(embeddings.device)
    dist = pairwise_distances(embeddings.float(), squared=True)
    triplets = mine_triplets(dist, labels, strategy, margin, fallback, generator)
    nan = float("nan")
    if len(triplets) == 0:
        loss = embeddings.sum() * 0.0
        stats = {"triplets": 0, "active_fraction": 0.0, "mean_pos_dist": nan, "mean_neg_dist": nan}
    else:
        d_ap = dist[triplets.anchor, triplets.positive]
        d_an = dist[triplets.anchor, triplets.negative]
        losses = torch.relu(d_ap - d_an + margin)
        active = losses.detach() > 0
        n_active = int(active.sum())
        if reduction == "sum":
            loss = losses.sum()
        elif reduction == "mean_active":
            loss = losses.sum() / max(n_active, 1)
        else:
            loss = losses.mean()
        stats = {"triplets": len(triplets), "active_fraction": n_active / len(triplets),
                 "mean_pos_dist": float(d_ap.detach().mean()), "mean_neg_dist": float(d_an.detach().mean())}
    stats["pairs"] = triplets.pairs
    stats["pairs_without_semihard"] = triplets.pairs_without_semihard
    return TripletLossOutput(loss=loss, triplets=triplets, stats=stats)


class TripletLoss(torch.nn.Module):
    """Module form of :func:`triplet_loss` holding its settings."""

    def __init__(self, margin: float = 0.2, strategy: str = "semihard", fallback: str = "nearest_outside",
                 reduction: str = "mean"):
        super().__init__()
        self.margin, self.strategy, self.fallback, self.reduction = margin, strategy, fallback, reduction

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor,
                generator: torch.Generator | None = None) -> TripletLossOutput:
        return triplet_loss(embeddings, labels, self.margin, self.strategy, self.fallback, self.reduction, generator)
