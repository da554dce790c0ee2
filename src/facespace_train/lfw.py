"""LFW verification for training runs: centre-cropped pairs and best-threshold accuracy.

Images are the 250x250 deep-funneled LFW faces with a fixed centre crop
(``crop_fraction`` of the side, the same rule the training data uses) resized
to the network input. Accuracy is computed on squared L2 distances between
L2-normalised embeddings, either as the best accuracy over all thresholds on
the given pairs (fast, optimistic; used for the periodic evaluation) or with
the standard 10-fold protocol (threshold picked on nine folds, accuracy on the
tenth). ``facespace.evaluation.protocol`` (``best_accuracy_threshold``,
``evaluate_pairs``) is used when it is installed; otherwise the small
implementation here, which gives the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .data import crop_and_augment, normalise, read_rgb


@dataclass(frozen=True)
class Pair:
    first: str
    second: str
    same: bool


def read_pairs(path: str | Path) -> tuple[list[Pair], int]:
    """Pairs from an LFW ``pairs.txt`` (header "folds<TAB>n"), and the number of folds."""
    lines = [line.split() for line in Path(path).read_text().splitlines() if line.strip()]
    folds = 1
    if len(lines[0]) <= 2:
        folds = int(lines[0][0]) if len(lines[0]) == 2 else 1
        lines = lines[1:]
    pairs = []
    for f in lines:
        if len(f) == 3:
            pairs.append(Pair(f"{f[0]}/{f[0]}_{int(f[1]):04d}.jpg", f"{f[0]}/{f[0]}_{int(f[2]):04d}.jpg", True))
        elif len(f) == 4:
            pairs.append(Pair(f"{f[0]}/{f[0]}_{int(f[1]):04d}.jpg", f"{f[2]}/{f[2]}_{int(f[3]):04d}.jpg", False))
    return pairs, folds


def subset_pairs(pairs: Sequence[Pair], folds: int, n: int) -> list[Pair]:
    """About ``n`` pairs taken evenly from every fold, half same, half different."""
    if n <= 0 or n >= len(pairs):
        return list(pairs)
    per_fold = len(pairs) // folds
    take = max(1, n // (2 * folds))
    out: list[Pair] = []
    for f in range(folds):
        fold = pairs[f * per_fold : (f + 1) * per_fold]
        out += [p for p in fold if p.same][:take] + [p for p in fold if not p.same][:take]
    return out


def best_threshold_accuracy(distances: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """(accuracy, threshold) of the best "same if distance <= t" rule on these pairs."""
    distances, same = np.asarray(distances, np.float64), np.asarray(same, bool)
    order = np.argsort(distances, kind="stable")
    d, s = distances[order], same[order]
    # predicting "same" for the first i pairs: correct = same in [:i] + different in [i:]
    correct = np.concatenate([[0], np.cumsum(s)]) + np.concatenate([[(~s).sum()], (~s).sum() - np.cumsum(~s)])
    # only cut between distinct distances
    valid = np.concatenate([[True], np.r_[d[1:] > d[:-1], True]])
    correct = np.where(valid, correct, -1)
    i = int(np.argmax(correct))
    if i == 0:
        threshold = d[0] - 1e-6
    elif i == len(d):
        threshold = d[-1] + 1e-6
    else:
        threshold = (d[i - 1] + d[i]) / 2.0
    return float(correct[i]) / len(d), float(threshold)


def kfold_accuracy(distances: np.ndarray, same: np.ndarray, folds: int = 10) -> tuple[float, float]:
    """Mean and std of the k-fold accuracy (threshold from the other folds)."""
    distances, same = np.asarray(distances), np.asarray(same, bool)
    idx = np.array_split(np.arange(len(distances)), folds)
    accs = []
    for k in range(folds):
        train = np.concatenate([idx[j] for j in range(folds) if j != k])
        _, t = best_threshold_accuracy(distances[train], same[train])
        accs.append(float(((distances[idx[k]] <= t) == same[idx[k]]).mean()))
    return float(np.mean(accs)), float(np.std(accs))


class LFWPairs:
    """LFW pairs with their preloaded, centre-cropped images, ready to embed."""

    def __init__(self, root: str | Path, pairs_file: str | Path | None = None, input_size=160,
                 crop_fraction: float = 0.64, n_pairs: int = 0, normalisation: str = "fixed") -> None:
        self.root = Path(root)
        pairs_file = Path(pairs_file) if pairs_file else self.root / "pairs.txt"
        pairs, self.folds = read_pairs(pairs_file)
        self.pairs = subset_pairs(pairs, self.folds, n_pairs)
        image_dir = self.root / "lfw-deepfunneled"
        if not image_dir.is_dir():
            image_dir = self.root
        names = sorted({p.first for p in self.pairs} | {p.second for p in self.pairs})
        self.index = {name: i for i, name in enumerate(names)}
        self.normalisation = normalisation
        self.crops = np.stack([crop_and_augment(read_rgb(image_dir / n), input_size, crop_fraction) for n in names])
        self.same = np.array([p.same for p in self.pairs])

    @torch.no_grad()
    def embed(self, model: torch.nn.Module, device="cpu", batch_size: int = 128) -> np.ndarray:
        was = model.training
        model.eval()
        out = []
        for start in range(0, len(self.crops), batch_size):
            x = normalise(self.crops[start : start + batch_size], self.normalisation).to(device)
            out.append(torch.nn.functional.normalize(model(x).float(), dim=1).cpu().numpy())
        model.train(was)
        return np.concatenate(out)

    def distances(self, embeddings: np.ndarray) -> np.ndarray:
        a = np.array([self.index[p.first] for p in self.pairs])
        b = np.array([self.index[p.second] for p in self.pairs])
        return ((embeddings[a] - embeddings[b]) ** 2).sum(axis=1)

    def evaluate(self, model: torch.nn.Module, device="cpu", kfold: bool = False) -> dict:
        dist = self.distances(self.embed(model, device))
        acc, threshold = _best_threshold(dist, self.same)
        out = {"lfw_best_acc": acc, "lfw_threshold": threshold, "lfw_pairs": len(self.pairs)}
        if kfold:
            mean, std = _protocol_kfold(dist, self.same, self.folds)
            out.update(lfw_kfold_acc=mean, lfw_kfold_std=std)
        return out


def _protocol_kfold(dist: np.ndarray, same: np.ndarray, folds: int) -> tuple[float, float]:
    """k-fold accuracy with ``facespace.evaluation.protocol`` when present, else :func:`kfold_accuracy`.

    Pairs are in fold order (as in pairs.txt and :func:`subset_pairs`), so pair i is in fold i * folds // n.
    """
    try:
        from facespace.evaluation.protocol import evaluate_pairs
    except ImportError:
        return kfold_accuracy(dist, same, folds)
    fold_ids = np.arange(len(dist)) * folds // len(dist)
    report = evaluate_pairs(dist, same, fold_ids)
    return float(report.accuracy), float(report.accuracy_std)


def _best_threshold(dist: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    try:
        from facespace.evaluation.protocol import best_accuracy_threshold
    except ImportError:
        return best_threshold_accuracy(dist, same)
    threshold, acc = best_accuracy_threshold(dist, same)
    return acc, threshold
