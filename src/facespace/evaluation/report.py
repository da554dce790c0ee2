"""Running a pipeline on a pair list, and writing the JSON report and ROC plot.

The ROC plot needs matplotlib (the ``eval`` extra); without it the JSON
report is still written and the plot is skipped with a note.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import numpy as np

from ..files import atomic_path, atomic_write_bytes
from .cache import EmbeddingSet, cached_faces, embed_paths
from .pairs import PairSet
from .protocol import PairsReport, evaluate_pairs, reject_curve
from .scoring import ScoringRule, image_vectors, pair_vectors, scored_distances, vector_distances

if TYPE_CHECKING:
    from ..occlusion import Occlusion

__all__ = ["CROSS_ORDERS", "CrossModelResult", "EvaluationResult", "machine_info", "plot_roc", "run_cross_pairs",
           "run_pairs", "write_report"]

#: The two orders of a cross-model evaluation: which model embeds a pair's first image.
CROSS_ORDERS: tuple[str, ...] = ("old_first", "new_first")


def _missed_pairs(embeddings: EmbeddingSet, pairs: PairSet) -> int:
    """Pairs with at least one image whose face the detector missed."""
    ok = dict(zip(embeddings.paths, embeddings.detected))
    return int(sum(not (ok[a] and ok[b]) for a, b in zip(pairs.first, pairs.second)))


def _pairs_info(pairs: PairSet) -> dict:
    return {"file": pairs.source, "n": len(pairs), "folds": pairs.n_folds, "folds_origin": pairs.folds_origin}


@dataclass
class EvaluationResult:
    """A pipeline's protocol report on a pair list, with how it was made."""

    report: PairsReport
    pairs: PairSet
    embeddings: EmbeddingSet
    distances: np.ndarray
    wall_s: float
    info: dict = field(default_factory=dict)
    scoring: ScoringRule = ScoringRule()

    @property
    def missed_pairs(self) -> int:
        """Pairs with at least one image whose face the detector missed."""
        return _missed_pairs(self.embeddings, self.pairs) if self.embeddings.detection_used else 0

    def to_dict(self, include_roc: bool = False) -> dict:
        emb = self.embeddings
        missed = emb.missed
        return {
            **self.info,
            "pairs": _pairs_info(self.pairs),
            "preprocessing": emb.preprocessing,
            "scoring": self.scoring.to_dict(),
            "images": len(emb),
            "missed_detections": len(missed) if emb.detection_used else None,
            "missed_images": missed,
            "pairs_with_missed_detection": self.missed_pairs if emb.detection_used else None,
            "wall_s": round(self.wall_s, 3),
            "images_per_s": round(len(emb) / self.wall_s, 2) if self.wall_s > 0 else None,
            "embedding_stats": emb.stats,
            "metrics": self.report.to_dict(include_roc=include_roc),
        }

    @property
    def far_target(self) -> float:
        return self.report.far_target

    def roc_curves(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``label: (fpr, tpr)`` of the ROC plot."""
        roc = self.report.roc
        label = f"{self.info.get('model')} {self.embeddings.preprocessing.get('align')}"
        return {} if roc is None else {label: (roc.fpr, roc.tpr)}

    def summary(self) -> str:
        emb = self.embeddings
        lines = [
            f"{emb.preprocessing.get('model')} align={emb.preprocessing.get('align')} "
            f"flip={'on' if emb.preprocessing.get('flip') else 'off'}: {len(self.pairs)} pairs, "
            f"{self.pairs.n_folds} folds, {len(emb)} images"
            + (f", occluded {self.info['occlusion']}" if "occlusion" in self.info else "")
            + ("" if self.scoring.is_default else
               f", scoring flip={self.scoring.flip} subtract_mean={self.scoring.subtract_mean}"),
            "  " + self.report.summary(),
        ]
        if emb.detection_used:
            shown = ", ".join(Path(p).name for p in emb.missed[:5])
            more = f", ... ({len(emb.missed) - 5} more)" if len(emb.missed) > 5 else ""
            lines.append(f"  missed detections: {len(emb.missed)} image(s), centre-crop fallback"
                         + (f": {shown}{more}" if emb.missed else ""))
        curve = self.info.get("reject_curve")
        if curve:
            lines.append("  quality reject curve (accuracy with the worst pairs set aside): " + ", ".join(
                f"{100 * c['rejected']:g}% -> {100 * c['accuracy']:.2f}%" for c in curve))
        computed = sum(emb.stats.get("computed", {}).values())
        lines.append(f"  {self.wall_s:.1f} s ({computed} embeddings computed, the rest from cache)")
        return "\n".join(lines)


def run_pairs(
    pipeline,
    pairs: PairSet,
    far_target: float = 1e-3,
    progress: bool = True,
    cache: bool = True,
    cache_root: str | os.PathLike | None = None,
    scoring: ScoringRule = ScoringRule(),
    occlusion: "Occlusion | None" = None,
) -> EvaluationResult:
    """Embed every image of ``pairs`` (cached) and run the fold protocol under ``scoring``;
    with ``occlusion``, each pair's first image (``which="first"``) or both are occluded first."""
    if scoring.flip == "concat" and not pipeline.embedder.flip:
        raise ValueError("the concat flip rule needs a pipeline with flip on")
    start = time.perf_counter()
    embeddings = embed_paths(pipeline, pairs.paths(), progress=progress, cache=cache, cache_root=cache_root)
    if occlusion is None:
        distances, fold_distances = scored_distances(embeddings, pairs, scoring)
    else:
        distances, fold_distances = _occluded_distances(pipeline, pairs, embeddings, occlusion, scoring,
                                                        progress=progress, cache=cache, cache_root=cache_root)
    wall = time.perf_counter() - start
    report = evaluate_pairs(distances, pairs.same, pairs.folds, far_target=far_target,
                            fold_distances=fold_distances)
    info = {"model": pipeline.model_name, "preprocessing_id": pipeline.preprocessing_id,
            **({"occlusion": str(occlusion)} if occlusion is not None else {})}
    if embeddings.detection_used:
        info["reject_curve"] = quality_reject_curve(pipeline, pairs, embeddings, distances, cache_root)
    return EvaluationResult(report=report, pairs=pairs, embeddings=embeddings, distances=distances,
                            wall_s=wall, scoring=scoring, info=info)


def quality_reject_curve(pipeline, pairs: PairSet, embeddings: EmbeddingSet, distances: np.ndarray,
                         cache_root=None) -> list[dict]:
    """Accuracy once the worst pairs by face quality are set aside (:func:`reject_curve`)."""
    faces = cached_faces(pipeline, embeddings.paths, cache_root=cache_root)
    quality = np.array([pipeline.quality_model.score(face, crop) for face, crop in faces])
    first, second = pairs.index_pairs(embeddings.paths)
    return reject_curve(distances, pairs.same, pairs.folds, np.minimum(quality[first], quality[second]))


def _occluded_distances(pipeline, pairs: PairSet, plain: EmbeddingSet, occlusion: "Occlusion", scoring: ScoringRule,
                        **embed):
    """Pair distances with the first image of each pair occluded, and the second too when
    ``occlusion.which == "both"`` (occluded embeddings are cached under their own key)."""
    both = occlusion.which == "both"
    occluded = embed_paths(pipeline, pairs.paths() if both else list(dict.fromkeys(pairs.first)),
                           occlusion=occlusion.kind, **embed)
    first = _vectors_of(occluded, pairs.first, scoring)
    second = _vectors_of(occluded if both else plain, pairs.second, scoring)
    return vector_distances(first, second, pairs.folds, scoring.subtract_mean)


def _vectors_of(embeddings: EmbeddingSet, paths, scoring: ScoringRule) -> np.ndarray:
    """The scoring rule's vector of each of ``paths`` (all in ``embeddings``)."""
    vectors, where = image_vectors(embeddings, scoring), embeddings.index()
    return vectors[[where[p] for p in paths]]


@dataclass
class CrossModelResult:
    """Two models' embeddings in a compatibility map's common space, each pair scored in both orders:
    ``old_first`` (first image by ``against``, second by ``model``) and ``new_first`` (the reverse)."""

    reports: dict[str, PairsReport]
    pairs: PairSet
    embeddings: dict[str, EmbeddingSet]  # by model name
    model: str
    against: str
    compat: dict  # name, kind, source, target, space_id, fingerprint
    wall_s: float
    scoring: ScoringRule = ScoringRule()

    @property
    def far_target(self) -> float:
        return self.reports[CROSS_ORDERS[0]].far_target

    @property
    def mean(self) -> dict:
        """Accuracy, VAL, AUC, EER and thresholds averaged over the two orders."""
        keys = ("accuracy", "val", "far", "auc", "eer", "threshold", "eer_threshold")
        return {k: float(np.mean([getattr(r, k) for r in self.reports.values()])) for k in keys}

    def order_models(self, order: str) -> tuple[str, str]:
        """(first image's model, second image's model) of ``order``."""
        return (self.against, self.model) if order == "old_first" else (self.model, self.against)

    def to_dict(self, include_roc: bool = False) -> dict:
        orders = {}
        for order, report in self.reports.items():
            first, second = self.order_models(order)
            orders[order] = {"first": first, "second": second, "metrics": report.to_dict(include_roc=include_roc)}
        sets = self.embeddings
        return {
            "model": self.model, "against": self.against,
            "pairs": _pairs_info(self.pairs),
            "preprocessing": {m: e.preprocessing for m, e in sets.items()},
            "scoring": self.scoring.to_dict(),
            "images": len(next(iter(sets.values()))),
            "missed_detections": {m: len(e.missed) if e.detection_used else None for m, e in sets.items()},
            "pairs_with_missed_detection": {m: _missed_pairs(e, self.pairs) if e.detection_used else None
                                            for m, e in sets.items()},
            "wall_s": round(self.wall_s, 3),
            "embedding_stats": {m: e.stats for m, e in sets.items()},
            "cross_model": {"model": self.model, "against": self.against, "map": self.compat,
                            "orders": orders, "mean": self.mean},
        }

    def roc_curves(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return {f"{' / '.join(self.order_models(o))} ({o.replace('_', ' ')})": (r.roc.fpr, r.roc.tpr)
                for o, r in self.reports.items() if r.roc is not None}

    def summary(self) -> str:
        lines = [f"cross-model {self.model} vs {self.against} through map {self.compat['name']}: "
                 f"{len(self.pairs)} pairs, {self.pairs.n_folds} folds"]
        for order, report in self.reports.items():
            first, second = self.order_models(order)
            lines.append(f"  {order} ({first} | {second}): {report.summary()}")
        m = self.mean
        lines.append(f"  mean of both orders: accuracy {100 * m['accuracy']:.2f}%, VAL {100 * m['val']:.2f}% "
                     f"@ FAR={self.far_target:g}, AUC {m['auc']:.4f} (threshold {m['threshold']:.4f})")
        lines.append(f"  {self.wall_s:.1f} s")
        return "\n".join(lines)


def _map_info(compat) -> dict:
    return {"name": compat.name, "kind": compat.kind, "source": compat.source, "target": compat.target,
            "space_id": compat.space_id, "fingerprint": compat.fingerprint}


def run_cross_pairs(pipeline, against, compat, pairs: PairSet, far_target: float = 1e-3, progress: bool = True,
                    cache: bool = True, cache_root: str | os.PathLike | None = None,
                    scoring: ScoringRule = ScoringRule()) -> CrossModelResult:
    """Embed every image of ``pairs`` with ``pipeline`` (the new model) and ``against`` (the old one),
    take both into ``compat``'s common space and run the fold protocol in both orders."""
    if scoring.flip == "concat":
        raise ValueError("the concat flip rule has no meaning in a compatibility map's common space")
    start = time.perf_counter()
    sets, sides = {}, {}
    for pipe in (against, pipeline):
        emb = embed_paths(pipe, pairs.paths(), progress=progress, cache=cache, cache_root=cache_root)
        first, second = pair_vectors(emb, pairs)
        sides[pipe.model_name] = [compat.to_common(v, pipe.model_name, pipe.preprocessing_id)
                                  for v in (first, second)]
        sets[pipe.model_name] = emb
    old, new = sides[against.model_name], sides[pipeline.model_name]
    reports = {}
    for order, (a, b) in zip(CROSS_ORDERS, ((old[0], new[1]), (new[0], old[1]))):
        distances, fold_distances = vector_distances(a, b, pairs.folds, scoring.subtract_mean)
        reports[order] = evaluate_pairs(distances, pairs.same, pairs.folds, far_target=far_target,
                                        fold_distances=fold_distances)
    return CrossModelResult(reports=reports, pairs=pairs, embeddings=sets, model=pipeline.model_name,
                            against=against.model_name, compat=_map_info(compat),
                            wall_s=time.perf_counter() - start, scoring=scoring)


def machine_info() -> dict:
    """The machine a run was timed on, and how busy it was (timings on a loaded machine mislead)."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    try:
        info["load_average"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        pass
    info["date"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return info


def plot_roc(
    path: str | os.PathLike,
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    title: str = "ROC",
    far_target: float | None = 1e-3,
    styles: Mapping[str, dict] | None = None,
) -> Path | None:
    """Plot TAR against FAR (log scale) for each ``label: (fpr, tpr)``; None without matplotlib.

    ``styles`` may give matplotlib line options per label (colour, linestyle). Points
    at FAR = 0 are drawn at the left edge of the axis.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    lowest = min([far_target or 1.0] + [float(np.min(np.asarray(f)[np.asarray(f) > 0]))
                                        for f, _ in curves.values() if np.any(np.asarray(f) > 0)])
    left = max(lowest / 2, 1e-6)
    fig, ax = plt.subplots(figsize=(7.2, 5.0), dpi=110)
    for label, (fpr, tpr) in curves.items():
        fpr = np.maximum(np.asarray(fpr, dtype=np.float64), left)
        ax.step(fpr, tpr, where="post", label=label, linewidth=1.2, **(styles or {}).get(label, {}))
    ax.set_xscale("log")
    ax.set_xlim(left, 1.0)
    ax.set_ylim(0.0, 1.005)
    if far_target:
        ax.axvline(far_target, color="grey", linestyle=":", linewidth=1, label=f"FAR = {far_target:g}")
    ax.set_xlabel("false accept rate (log scale)")
    ax.set_ylabel("true accept rate")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    path = Path(path)
    try:
        with atomic_path(path) as part:
            fig.savefig(part, format=path.suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
    return path


def write_report(result: "EvaluationResult | CrossModelResult", out_dir: str | os.PathLike, name: str = "report") -> dict[str, Path]:
    """Write ``<name>.json`` (with ``machine``) and ``<name>_roc.png`` into ``out_dir``, each
    atomically (a failure leaves an earlier report whole)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = result.to_dict(include_roc=False)
    data["machine"] = machine_info()
    written: dict[str, Path] = {}
    curves = result.roc_curves()
    if curves:
        png = plot_roc(out / f"{name}_roc.png", curves, title=f"ROC on {Path(result.pairs.source).name}",
                       far_target=result.far_target)
        if png is not None:
            written["roc"] = png
        else:
            data["roc_plot"] = "skipped: matplotlib is not installed (pip install 'facespace[eval]')"
    path = out / f"{name}.json"
    atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode())
    written["json"] = path
    return written
