"""The ``mlp`` compatibility map: the ridge map plus a small residual network, trained on paired embeddings.

``y = unit(x W + b + gelu(x W1 + b1) W2)``: the ridge map (strength chosen on held-out
identities, as for ``ridge``) carries the linear part; a one-hidden-layer network
(tanh-GELU, its output layer started near zero, so training starts from the ridge map)
learns what is left, by Adam(W) on the mean cosine distance to the target embeddings. No
labels are used beyond the ridge strength's identity folds. With augmented views
(:mod:`.compat_augment`) the network sees several pairs per image, which is what makes it
worth more than the linear map (``benchmarks/harmonic_dev.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["MlpConfig", "fit_mlp_arrays"]


@dataclass(frozen=True)
class MlpConfig:
    """The network and its training (defaults: about a minute of one CPU thread for 20,000 pairs)."""

    hidden: int = 1024
    epochs: int = 30
    batch: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0


def fit_mlp_arrays(source: np.ndarray, target: np.ndarray, groups: Sequence,
                   config: MlpConfig = MlpConfig()) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays of an ``mlp`` :class:`facespace.compat.CompatMap` (weight, bias, hidden_weight,
    hidden_bias, out_weight) and the fitting parameters."""
    import torch

    from facespace.compat import choose_ridge_strength, fit_ridge

    strength = choose_ridge_strength(source, target, groups)[0]
    w, b = (torch.as_tensor(a) for a in fit_ridge(source, target, strength))
    torch.manual_seed(config.seed)
    hidden = torch.nn.Linear(source.shape[1], config.hidden)
    out = torch.nn.Linear(config.hidden, target.shape[1])
    with torch.no_grad():
        out.weight.mul_(0.1)
    gelu = torch.nn.GELU(approximate="tanh")
    params = [*hidden.parameters(), *out.parameters()]
    optimiser = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    x, y = torch.as_tensor(np.asarray(source, np.float32)), torch.as_tensor(np.asarray(target, np.float32))
    losses = []
    for _ in range(config.epochs):
        order, total = torch.randperm(len(x)), 0.0
        for start in range(0, len(x), config.batch):
            i = order[start:start + config.batch]
            mapped = torch.nn.functional.normalize(x[i] @ w + b + out(gelu(hidden(x[i]))), dim=1)
            loss = (1 - (mapped * y[i]).sum(dim=1)).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(i)
        losses.append(total / len(x))
    with torch.no_grad():
        arrays = {"weight": w.numpy(), "bias": (b + out.bias).numpy(), "hidden_weight": hidden.weight.t().numpy(),
                  "hidden_bias": hidden.bias.numpy(), "out_weight": out.weight.t().numpy()}
    params = {"ridge_strength": strength, "hidden": config.hidden, "epochs": config.epochs, "lr": config.lr,
              "weight_decay": config.weight_decay, "activation": "gelu (tanh)", "loss": "mean cosine distance",
              "final_losses": [round(v, 5) for v in losses[-3:]]}
    return {k: np.ascontiguousarray(v, np.float32) for k, v in arrays.items()}, params
