"""LFW verification for training runs: centre-cropped pairs and best-threshold accuracy.

Images are the 250x250 deep-funneled LFW faces with a fixed centre crop
(``crop_fraction`` of the side, the same rule the training data uses) resized
to the network input. The pairs file is read by
:func:`facespace.evaluation.read_lfw_pairs` and the numbers come from
:mod:`facespace.evaluation.protocol`, on squared L2 distances between
L2-normalised embeddings: either the best accuracy over all thresholds on the
given pairs (``best_accuracy_threshold``; fast, optimistic; used for the
periodic evaluation) or the standard k-fold protocol (``evaluate_pairs``:
threshold picked on the other folds, accuracy on the held-out one).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from facespace.evaluation import PairSet, evaluate_pairs, read_lfw_pairs
from facespace.evaluation.protocol import best_accuracy_threshold
from facespace.imageio import load_image
from facespace.runtime.preprocess import normalise

from .data import crop_and_augment


def subset_pairs(pairs: PairSet, n: int) -> PairSet:
    """About ``n`` pairs taken evenly from every fold: the first ``n / (2 * folds)`` same and
    different pairs of each (in file order), so a subset keeps every fold and both kinds."""
    if n <= 0 or n >= len(pairs):
        return pairs
    take = max(1, n // (2 * pairs.n_folds))
    chosen: list[int] = []
    for fold in np.unique(pairs.folds):
        for same in (True, False):
            chosen.extend(np.flatnonzero((pairs.folds == fold) & (pairs.same == same))[:take].tolist())
    return pairs.subset(chosen)


class LFWPairs:
    """LFW pairs with their preloaded, centre-cropped images, ready to embed."""

    def __init__(self, root: str | Path, pairs_file: str | Path | None = None, input_size=160,
                 crop_fraction: float = 0.64, n_pairs: int = 0, normalisation: str = "fixed") -> None:
        self.root = Path(root)
        pairs_file = Path(pairs_file) if pairs_file else self.root / "pairs.txt"
        image_dir = self.root / "lfw-deepfunneled"
        if not image_dir.is_dir():
            image_dir = self.root
        pairs = read_lfw_pairs(pairs_file, image_dir, check_files=False)
        self.folds = pairs.n_folds
        self.pairs = subset_pairs(pairs, n_pairs)
        self.pairs.check_files()
        paths = sorted(self.pairs.paths(), key=str)
        self.index = {path: i for i, path in enumerate(paths)}
        self.normalisation = normalisation
        self.crops = np.stack([crop_and_augment(load_image(p), input_size, crop_fraction) for p in paths])
        self.same = self.pairs.same

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
        a, b = self.pairs.index_pairs(list(self.index))
        return ((embeddings[a] - embeddings[b]) ** 2).sum(axis=1)

    def evaluate(self, model: torch.nn.Module, device="cpu", kfold: bool = False) -> dict:
        dist = self.distances(self.embed(model, device))
        threshold, acc = best_accuracy_threshold(dist, self.same)
        out = {"lfw_best_acc": acc, "lfw_threshold": threshold, "lfw_pairs": len(self.pairs)}
        if kfold:
            report = evaluate_pairs(dist, self.same, self.pairs.folds)
            out.update(lfw_kfold_acc=float(report.accuracy), lfw_kfold_std=float(report.accuracy_std))
        return out
