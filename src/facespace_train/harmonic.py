"""Harmonic training (FaceNet appendix; Shen et al. 2020): a new-model head compatible with an old model.

A head on the new network's embedding (a linear layer started at the
identity, so training starts from the new model as it is) and a projection of
the old model's frozen embeddings into the head's space (started from the
ridge map, learned or fixed) are trained together with the triplet loss
(alpha 0.2, semi-hard mining; :mod:`.losses`) on **mixed-version** batches:
every P x K batch (:class:`.sampler.PKSampler`) holds the new-model embedding
of each image through the head *and* the old model's embedding of the same
image through the projection, with the same identity label, so anchors,
positives and negatives come from either version and semi-hard negatives are
mined over the union.

The networks themselves are frozen, so training needs only their embeddings:
precomputed (and cached by ``facespace.evaluation.embed_paths``) once, after
which a few hundred steps take seconds on a CPU.

The step kept is chosen on held-out identities of the fitting data
(:func:`split_identities`): the best held-out cross-model pair accuracy among
the steps whose new/new accuracy (through the head) is within
``max_new_drop`` of the untrained head's. The result becomes a
:class:`facespace.compat.CompatMap` of kind ``"harmonic"`` (:func:`to_compat_map`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from facespace.compat import CompatMap, map_name
from facespace.evaluation.protocol import best_accuracy_threshold

from .losses import TripletLossOutput, triplet_loss
from .sampler import PKSampler

__all__ = ["HarmonicConfig", "HarmonicModel", "HarmonicResult", "PairSample", "cross_accuracy",
           "mixed_batch_loss", "sample_pairs", "split_identities", "to_compat_map", "train_harmonic"]


@dataclass
class HarmonicConfig:
    """Settings of one harmonic run (defaults: a few seconds of CPU on celeba-299 embeddings)."""

    p: int = 32                 #: identities per batch
    k: int = 6                  #: images per identity (each image appears in both versions)
    steps: int = 500
    lr: float = 1e-4            #: Adam; higher rates overfit celeba's 299 identities within a few dozen steps
    weight_decay: float = 0.0
    margin: float = 0.2         #: the paper's alpha
    learn_projection: bool = True
    validate_every: int = 25
    max_new_drop: float = 0.003  #: held-out new/new accuracy the head may lose (0.3 points)
    time_budget_s: float = 180.0
    seed: int = 0


class HarmonicModel(nn.Module):
    """The head on the new embedding and the projection of the old one, each followed by L2 normalisation."""

    def __init__(self, new_dim: int, old_dim: int, projection: tuple[np.ndarray, np.ndarray] | None = None,
                 learn_projection: bool = True) -> None:
        super().__init__()
        self.head = nn.Linear(new_dim, new_dim)
        self.projection = nn.Linear(old_dim, new_dim)
        with torch.no_grad():
            self.head.weight.copy_(torch.eye(new_dim))
            self.head.bias.zero_()
            if projection is not None:  # facespace maps are x @ W + b; nn.Linear holds W^T
                self.projection.weight.copy_(torch.as_tensor(projection[0]).t())
                self.projection.bias.copy_(torch.as_tensor(projection[1]))
        self.projection.requires_grad_(learn_projection)

    def new(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.head(x), dim=1)

    def old(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.projection(x), dim=1)

    @torch.no_grad()
    def embed(self, new: np.ndarray | None = None, old: np.ndarray | None = None) -> np.ndarray:
        """Either version's embeddings (NumPy) in the shared space."""
        if (new is None) == (old is None):
            raise ValueError("give new or old embeddings")
        fn, x = (self.new, new) if new is not None else (self.old, old)
        return fn(torch.as_tensor(np.asarray(x, np.float32))).numpy()


def mixed_batch_loss(model: HarmonicModel, new: torch.Tensor, old: torch.Tensor, labels: torch.Tensor,
                     margin: float = 0.2) -> TripletLossOutput:
    """The triplet loss over the union of both versions of the batch's images (semi-hard mining)."""
    embeddings = torch.cat([model.new(new), model.old(old)])
    return triplet_loss(embeddings, torch.cat([labels, labels]), margin=margin, strategy="semihard")


# -- held-out identities and pair accuracy -------------------------------------------------------
def split_identities(labels: np.ndarray, held_out: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train mask, held-out mask) with each identity wholly on one side."""
    identities = np.unique(labels)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(identities, size=max(1, int(round(held_out * len(identities)))), replace=False)
    test = np.isin(labels, chosen)
    return ~test, test


@dataclass
class PairSample:
    """Ordered image pairs (i, j), i != j, all same-identity ones and as many different ones."""

    first: np.ndarray
    second: np.ndarray
    same: np.ndarray


def sample_pairs(labels: np.ndarray, seed: int = 0) -> PairSample:
    """Every same-identity ordered pair plus an equal number of random different-identity pairs."""
    labels = np.asarray(labels)
    same_mask = labels[:, None] == labels[None, :]
    np.fill_diagonal(same_mask, False)
    a, b = np.nonzero(same_mask)
    rng = np.random.default_rng(seed)
    da, db = rng.integers(0, len(labels), size=(2, 4 * len(a)))
    keep = labels[da] != labels[db]
    da, db = da[keep][:len(a)], db[keep][:len(a)]
    same = np.r_[np.ones(len(a), bool), np.zeros(len(da), bool)]
    return PairSample(first=np.r_[a, da], second=np.r_[b, db], same=same)


def cross_accuracy(first: np.ndarray, second: np.ndarray, pairs: PairSample) -> float:
    """Best-threshold accuracy of squared L2 distances between ``first[i]`` and ``second[j]``
    (unit rows of one space; pass the same array twice for a single model)."""
    d = np.sum((first[pairs.first] - second[pairs.second]) ** 2, axis=1)
    return best_accuracy_threshold(d, pairs.same)[1]


# -- training -------------------------------------------------------------------------------------
@dataclass
class HarmonicResult:
    """The trained model (at the kept step), the loss per step and the held-out scores."""

    model: HarmonicModel
    losses: list[float]
    kept_step: int
    validation: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def _validate(model: HarmonicModel, new: np.ndarray, old: np.ndarray, pairs: PairSample, step: int) -> dict:
    n, o = model.embed(new=new), model.embed(old=old)
    cross = (cross_accuracy(o, n, pairs) + cross_accuracy(n, o, pairs)) / 2
    return {"step": step, "cross_accuracy": cross, "new_accuracy": cross_accuracy(n, n, pairs)}


def _keep(history: list[dict], max_drop: float) -> dict:
    """The held-out record with the best cross accuracy whose new/new accuracy stayed within max_drop."""
    floor = history[0]["new_accuracy"] - max_drop - 1e-12
    allowed = [h for h in history if h["new_accuracy"] >= floor]
    return max(allowed, key=lambda h: (h["cross_accuracy"], -h["step"]))


def train_harmonic(new: np.ndarray, old: np.ndarray, labels: np.ndarray, config: HarmonicConfig = HarmonicConfig(),
                   projection: tuple[np.ndarray, np.ndarray] | None = None,
                   held_out: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> HarmonicResult:
    """Train the head and projection on paired embeddings ``new[i]``, ``old[i]`` of image i (label ``labels[i]``).

    With ``held_out = (new, old, labels)`` of other identities the step kept is chosen
    on them (module notes); without, the last step is kept.
    """
    torch.manual_seed(config.seed)
    model = HarmonicModel(new.shape[1], old.shape[1], projection, config.learn_projection)
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    sampler = iter(PKSampler(labels, p=config.p, k=config.k, seed=config.seed))
    new_t, old_t = torch.as_tensor(new, dtype=torch.float32), torch.as_tensor(old, dtype=torch.float32)
    labels_t = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    pairs = sample_pairs(held_out[2], config.seed) if held_out is not None else None
    history = [_validate(model, held_out[0], held_out[1], pairs, 0)] if pairs is not None else []
    states, losses, start = {0: _state(model)}, [], time.perf_counter()
    for step in range(1, config.steps + 1):
        rows = torch.as_tensor([i for i, _ in next(sampler)])
        out = mixed_batch_loss(model, new_t[rows], old_t[rows], labels_t[rows], config.margin)
        optimiser.zero_grad()
        out.loss.backward()
        optimiser.step()
        losses.append(float(out.loss.detach()))
        last = step == config.steps or time.perf_counter() - start > config.time_budget_s
        if pairs is not None and (step % config.validate_every == 0 or last):
            history.append(_validate(model, held_out[0], held_out[1], pairs, step))
            states[step] = _state(model)
        if last:
            break
    kept = _keep(history, config.max_new_drop)["step"] if history else len(losses)
    if history:
        model.load_state_dict(states[kept])
    return HarmonicResult(model=model, losses=losses, kept_step=kept, validation=history,
                          seconds=time.perf_counter() - start)


def _state(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def to_compat_map(model: HarmonicModel, *, source_model: str, target_model: str, source_preprocessing: str,
                  target_preprocessing: str, meta: dict | None = None) -> CompatMap:
    """The trained pair as a ``harmonic`` map: ``apply`` = the old projection, ``apply_target`` = the head."""
    def affine(layer: nn.Linear) -> tuple[np.ndarray, np.ndarray]:
        return layer.weight.detach().t().numpy().astype(np.float32), layer.bias.detach().numpy().astype(np.float32)

    weight, bias = affine(model.projection)
    target_weight, target_bias = affine(model.head)
    return CompatMap(name=map_name(source_model, target_model, "harmonic"), kind="harmonic", source=source_model,
                     target=target_model, source_preprocessing=source_preprocessing,
                     target_preprocessing=target_preprocessing, weight=weight, bias=bias,
                     target_weight=target_weight, target_bias=target_bias, meta=dict(meta or {}))
