"""The LFW verification protocol on per-pair distances: pure NumPy.

Inputs are the squared distances of pairs (smaller means more alike), whether
each pair shows the same person, and a fold id per pair. Two pairs are called
the same person when ``distance <= threshold``, as in
:func:`facespace.comparison.verify`.

* **Accuracy** (LFW view 2, "unrestricted"): for each fold the threshold that
  maximises accuracy on the *other* folds is applied to the held-out fold;
  the mean and (population) standard deviation over folds are reported.
* **VAL@FAR** (FaceNet paper): for each fold the threshold at which the
  false-accept rate on the other folds is ``far_target`` is found by linear
  interpolation of FAR(threshold), as in Sandberg's facenet; the
  true-accept rate (VAL) and FAR that threshold gives on the held-out fold
  are reported.
* **AUC** and **EER** over all pairs together.

Threshold rules, exactly:

*Best accuracy.* Candidate thresholds are the midpoints between consecutive
distinct distances, plus one below the smallest and the largest itself
(everything "different", everything "same"). The candidate with the highest
accuracy wins; on a tie the smallest wins.

*FAR interpolation.* Let ``u_1 < ... < u_k`` be the distinct distances of
the different-person pairs and ``F(u_i)`` the fraction of them at or below
``u_i``, with the anchor ``F(min(0, u_1)) = 0``. FAR(threshold) is the
piecewise-linear curve through those points and the threshold is where it
equals ``far_target``. Because the curve jumps only at ``u_i``, the chosen
threshold never accepts more than ``far_target`` of the training impostors.
A target above the largest FAR gives ``u_k``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ..calibration import threshold_at_far

__all__ = [
    "PairsReport",
    "RocCurve",
    "accuracy_at",
    "auc_score",
    "best_accuracy_threshold",
    "calibrate_threshold",
    "equal_error_rate",
    "evaluate_pairs",
    "roc_curve",
    "val_far_at",
]


def _check(distances, labels) -> tuple[np.ndarray, np.ndarray]:
    d = np.asarray(distances, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if y.dtype != bool:
        if not np.isin(y, (0, 1)).all():
            raise ValueError("labels must be booleans or 0/1")
        y = y.astype(bool)
    if len(d) != len(y):
        raise ValueError(f"{len(d)} distances but {len(y)} labels")
    if not np.isfinite(d).all():
        raise ValueError("distances contain NaN or infinite values")
    return d, y


# -- one set ---------------------------------------------------------------------
def accuracy_at(distances, labels, threshold: float) -> float:
    """Fraction of pairs classified correctly by ``distance <= threshold``."""
    d, y = _check(distances, labels)
    if len(d) == 0:
        return float("nan")
    return float(np.mean((d <= threshold) == y))


def val_far_at(distances, labels, threshold: float) -> tuple[float, float]:
    """(VAL, FAR) at a threshold: accepted fraction of same pairs and of different pairs."""
    d, y = _check(distances, labels)
    accepted = d <= threshold
    val = float(accepted[y].mean()) if y.any() else float("nan")
    far = float(accepted[~y].mean()) if (~y).any() else float("nan")
    return val, far


def best_accuracy_threshold(distances, labels) -> tuple[float, float]:
    """(threshold, accuracy) maximising accuracy on one set; see the module notes for the rule."""
    d, y = _check(distances, labels)
    if len(d) == 0:
        raise ValueError("no pairs to choose a threshold on")
    order = np.argsort(d, kind="stable")
    d, y = d[order], y[order]
    values, starts = np.unique(d, return_index=True)
    # correct(i): same pairs at or below values[i] plus different pairs above it.
    ends = np.append(starts[1:], len(d))  # one past the last index of each distinct value
    cum_same = np.cumsum(y)[ends - 1]
    cum_diff = ends - cum_same
    n_diff = int((~y).sum())
    correct_at_value = cum_same + (n_diff - cum_diff)
    # Candidate 0 accepts nothing; candidate i (1..k) accepts up to values[i-1].
    correct = np.concatenate([[n_diff], correct_at_value])
    best = int(np.argmax(correct))  # first maximum = smallest threshold
    if best == 0:
        spread = values[-1] - values[0]
        threshold = values[0] - max(spread * 1e-3, 1e-6)
    elif best == len(values):
        threshold = values[-1]
    else:
        threshold = (values[best - 1] + values[best]) / 2.0
    return float(threshold), float(correct[best] / len(d))


def calibrate_threshold(distances, labels) -> float:
    """The best-accuracy threshold on one set of pairs (e.g. LFW view 1 pairsDevTrain.txt)."""
    return best_accuracy_threshold(distances, labels)[0]


# -- curves over all pairs ----------------------------------------------------------
@dataclass
class RocCurve:
    """True-accept and false-accept rates as the threshold sweeps the distinct distances."""

    thresholds: np.ndarray
    tpr: np.ndarray
    fpr: np.ndarray

    def to_dict(self) -> dict:
        return {"thresholds": self.thresholds.tolist(), "tpr": self.tpr.tolist(), "fpr": self.fpr.tolist()}


def roc_curve(distances, labels) -> RocCurve:
    """ROC points from "accept nothing" to "accept everything" (thresholds increasing).

    The first point has threshold ``-inf`` (TPR = FAR = 0).
    """
    d, y = _check(distances, labels)
    n_same, n_diff = int(y.sum()), int((~y).sum())
    order = np.argsort(d, kind="stable")
    d, y = d[order], y[order]
    values, starts = np.unique(d, return_index=True)
    ends = np.append(starts[1:], len(d))
    cum_same = np.cumsum(y)[ends - 1] if len(d) else np.zeros(0)
    cum_diff = ends - cum_same
    tpr = np.concatenate([[0.0], cum_same / n_same if n_same else np.full(len(values), np.nan)])
    fpr = np.concatenate([[0.0], cum_diff / n_diff if n_diff else np.full(len(values), np.nan)])
    return RocCurve(thresholds=np.concatenate([[-np.inf], values]), tpr=tpr, fpr=fpr)


def auc_score(distances, labels) -> float:
    """Area under the ROC curve: P(same-pair distance < different-pair distance), ties count 1/2."""
    d, y = _check(distances, labels)
    n_same, n_diff = int(y.sum()), int((~y).sum())
    if n_same == 0 or n_diff == 0:
        return float("nan")
    # Mann-Whitney U with average ranks; small distances rank first.
    order = np.argsort(d, kind="stable")
    ranks = np.empty(len(d), dtype=np.float64)
    sorted_d = d[order]
    _, starts, counts = np.unique(sorted_d, return_index=True, return_counts=True)
    avg = starts + (counts + 1) / 2.0  # 1-based average rank of each tie group
    ranks[order] = np.repeat(avg, counts)
    rank_sum_diff = ranks[~y].sum()
    u = rank_sum_diff - n_diff * (n_diff + 1) / 2.0  # number of (same, diff) pairs with d_same < d_diff
    return float(u / (n_same * n_diff))


def equal_error_rate(distances, labels) -> tuple[float, float]:
    """(EER, threshold) where FAR equals the false-reject rate, linearly interpolated on the ROC."""
    curve = roc_curve(distances, labels)
    gap = 1.0 - curve.tpr - curve.fpr  # FRR - FAR: 1 at "accept nothing", -1 at "accept everything"
    if not np.isfinite(gap).all():
        return float("nan"), float("nan")
    i = int(np.argmax(gap <= 0))
    if i == 0:
        return 0.0, float(curve.thresholds[1])
    a = gap[i - 1] / (gap[i - 1] - gap[i])
    eer = curve.fpr[i - 1] + a * (curve.fpr[i] - curve.fpr[i - 1])
    lo = curve.thresholds[i - 1] if np.isfinite(curve.thresholds[i - 1]) else curve.thresholds[i]
    threshold = lo + a * (curve.thresholds[i] - lo)
    return float(eer), float(threshold)


# -- the fold protocol -----------------------------------------------------------------
@dataclass
class PairsReport:
    """Results of the cross-validated verification protocol on one set of pairs."""

    n_pairs: int
    n_same: int
    n_different: int
    n_folds: int
    accuracy: float
    accuracy_std: float
    fold_accuracies: list[float]
    thresholds: list[float]
    far_target: float
    val: float
    val_std: float
    far: float
    far_std: float
    fold_vals: list[float]
    fold_fars: list[float]
    val_thresholds: list[float]
    auc: float
    eer: float
    eer_threshold: float
    roc: RocCurve | None = field(default=None, repr=False)

    @property
    def threshold(self) -> float:
        """Mean of the per-fold best-accuracy thresholds."""
        return float(np.mean(self.thresholds))

    def to_dict(self, include_roc: bool = False) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "roc"}
        out["threshold_mean"] = self.threshold
        if include_roc and self.roc is not None:
            out["roc"] = self.roc.to_dict()
        return _jsonable(out)

    def summary(self) -> str:
        return (
            f"accuracy {100 * self.accuracy:.2f}% +- {100 * self.accuracy_std:.2f} "
            f"(threshold {self.threshold:.4f}), VAL {100 * self.val:.2f}% +- {100 * self.val_std:.2f} "
            f"@ FAR={self.far_target:g}, AUC {self.auc:.4f}, EER {100 * self.eer:.2f}%"
        )


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if np.isfinite(v) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    return value


def evaluate_pairs(distances, labels, folds, far_target: float = 1e-3, fold_distances=None) -> PairsReport:
    """Run the cross-validated protocol; ``folds`` gives each pair's fold id (at least two folds).

    ``fold_distances`` (optional, shape ``(n_folds, n_pairs)``, folds in
    sorted id order) gives distances that depend on training statistics:
    row ``k`` is used to choose and apply fold ``k``'s thresholds, while
    ``distances`` still gives the ROC, AUC and EER.
    """
    d, y = _check(distances, labels)
    f = np.asarray(folds).reshape(-1)
    if len(f) != len(d):
        raise ValueError(f"{len(d)} distances but {len(f)} fold ids")
    fold_ids = np.unique(f)
    if len(fold_ids) < 2:
        raise ValueError("the protocol needs at least two folds")
    if fold_distances is not None:
        fold_distances = np.asarray(fold_distances, dtype=np.float64)
        if fold_distances.shape != (len(fold_ids), len(d)):
            raise ValueError(f"fold_distances must have shape {(len(fold_ids), len(d))}, "
                             f"got {fold_distances.shape}")
        for row in fold_distances:
            _check(row, y)
    accs, thresholds, vals, fars, val_thresholds = [], [], [], [], []
    for i, k in enumerate(fold_ids):
        test = f == k
        train = ~test
        fd = d if fold_distances is None else fold_distances[i]
        threshold, _ = best_accuracy_threshold(fd[train], y[train])
        thresholds.append(threshold)
        accs.append(accuracy_at(fd[test], y[test], threshold))
        impostors = fd[train][~y[train]]
        t_far = threshold_at_far(impostors, far_target) if len(impostors) else float("nan")
        val_thresholds.append(t_far)
        val, far = val_far_at(fd[test], y[test], t_far) if np.isfinite(t_far) else (np.nan, np.nan)
        vals.append(val)
        fars.append(far)
    eer, eer_threshold = equal_error_rate(d, y)
    return PairsReport(
        n_pairs=len(d),
        n_same=int(y.sum()),
        n_different=int((~y).sum()),
        n_folds=len(fold_ids),
        accuracy=float(np.mean(accs)),
        accuracy_std=float(np.std(accs)),
        fold_accuracies=[float(a) for a in accs],
        thresholds=[float(t) for t in thresholds],
        far_target=float(far_target),
        val=float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan"),
        val_std=float(np.nanstd(vals)) if np.isfinite(vals).any() else float("nan"),
        far=float(np.nanmean(fars)) if np.isfinite(fars).any() else float("nan"),
        far_std=float(np.nanstd(fars)) if np.isfinite(fars).any() else float("nan"),
        fold_vals=[float(v) for v in vals],
        fold_fars=[float(v) for v in fars],
        val_thresholds=[float(t) for t in val_thresholds],
        auc=auc_score(d, y),
        eer=eer,
        eer_threshold=eer_threshold,
        roc=roc_curve(d, y),
    )


#: Fractions of pairs set aside, worst quality first, in :func:`reject_curve`.
REJECT_FRACTIONS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2)


def reject_curve(distances, labels, folds, pair_quality, fractions=REJECT_FRACTIONS) -> list[dict]:
    """Error against reject: the fold protocol's accuracy on the pairs left once the worst
    ``fraction`` of pairs by quality (a pair's quality is its worse face's) are set aside."""
    distances, labels = np.asarray(distances, float), np.asarray(labels, bool)
    folds, pair_quality = np.asarray(folds), np.asarray(pair_quality, float)
    order = np.argsort(pair_quality, kind="stable")
    out = []
    for fraction in fractions:
        keep = np.ones(len(distances), bool)
        keep[order[:int(round(fraction * len(distances)))]] = False
        if len(np.unique(folds[keep])) < 2 or labels[keep].all() or not labels[keep].any():
            continue
        r = evaluate_pairs(distances[keep], labels[keep], folds[keep])
        out.append({"rejected": fraction, "pairs": int(keep.sum()), "accuracy": r.accuracy, "val": r.val,
                    "min_quality": float(pair_quality[order[int(round(fraction * len(distances)))]])
                    if fraction > 0 else None})
    return out
