"""Fitting the compatibility maps between the two registered embedders from paired embeddings.

Every image of a folder-per-identity dataset (``DIR/<identity>/*.jpg``; the project uses
celeba-299, never LFW) is embedded by both models, each with its registered crop (cached by the
evaluation cache). Then:

* ``ridge`` (strength by 5-fold cross-validation over identities) and ``procrustes`` (PCA of the
  larger space, then the orthogonal map), old->new and new->old;
* ``harmonic``: a head on the new model and a learned projection of the old one, trained with the
  triplet loss on mixed-version batches (:mod:`.harmonic`), the step kept chosen on held-out identities;
* ``mlp``: the ridge map plus a residual network, old->new (:mod:`.compat_mlp`).

Augmented views (:mod:`.compat_augment`) add more fitting pairs of the same images (``views``).

Each map's ``validation.rank_score`` (cross-model pair accuracy on 20% held-out identities, maps
refitted without them) orders :func:`facespace.compat.find_map`. The maps are written with
:func:`facespace.compat.save_map` into the map store (``$FACESPACE_COMPAT_DIR``, default
``$FACESPACE_HOME/compat``): fitted data, not files the repository carries.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from facespace.files import image_files

from .compat_augment import AugmentView, augmented_embeddings
from .harmonic import cross_accuracy

if TYPE_CHECKING:
    from facespace.compat import CompatMap
    from .harmonic import HarmonicConfig, HarmonicResult, PairSample

OLD, NEW = "facenet-casia-512", "facenet-msceleb-128"
FITTED_KINDS = ("ridge", "procrustes")
GROUPS_ONLY = "not fitted on; only to keep each identity in one cross-validation fold"


def paired_embeddings(faces: str | os.PathLike, identities: int | None = None,
                      views: Sequence[AugmentView] = ()) -> dict:
    """Paired embeddings of every image of ``faces/<identity>/`` by both models (each with its
    registered crop); ``identities`` keeps only the first N identity folders (sorted). ``views``:
    augmented views (:mod:`.compat_augment`) embedded too, as ``data["views"][name]["old"|"new"]``."""
    from facespace import FacePipeline
    from facespace.evaluation import embed_paths

    folders = sorted(p for p in Path(faces).iterdir() if p.is_dir())[:identities]
    paths = [path for folder in folders for path in image_files(folder)]
    names = sorted({p.parent.name for p in paths})
    labels = np.array([names.index(p.parent.name) for p in paths])
    out = {"paths": paths, "labels": labels, "source": str(faces)}
    out["views"] = {view.name: {} for view in views}
    for key, model in (("old", OLD), ("new", NEW)):
        pipeline = FacePipeline(model=model)
        found = embed_paths(pipeline, paths)
        out[key] = np.asarray(found.embeddings, np.float32)
        out[f"{key}_pre"] = pipeline.preprocessing_id
        out[f"{key}_missed"] = len(found.missed)
        for view in views:
            out["views"][view.name][key] = augmented_embeddings(pipeline, paths, view)
    return out


def training_rows(data: dict, rows: np.ndarray, side: str) -> np.ndarray:
    """``data[side]`` of ``rows`` followed by the same rows of every augmented view: the fitting pairs."""
    return np.concatenate([data[side][rows]] + [data["views"][v][side][rows] for v in data.get("views", {})])


def training_groups(data: dict, rows: np.ndarray) -> np.ndarray:
    """The identity of each row of :func:`training_rows` (a view's rows keep their image's identity)."""
    return np.tile(data["labels"][rows], 1 + len(data.get("views", {})))


def _fitted_on(data: dict, rows: np.ndarray, labels: str) -> dict:
    views = list(data.get("views", {}))
    return {"data": f"{Path(data['source']).name} faces ({data['source']}/<id>/*)", "identity_labels": labels,
            "images": int(rows.sum()), "augmented_views": views,
            "pairs": int(rows.sum()) * (1 + len(views)),
            "identities": int(len(np.unique(data["labels"][rows]))),
            "missed_detections": {OLD: data["old_missed"], NEW: data["new_missed"]}}


def _held_out_score(compat: CompatMap, data: dict, test: np.ndarray, pairs: PairSample) -> float:
    """Cross-model pair accuracy on held-out identities (mean of both orders)."""
    old = compat.to_common(data["old"][test], OLD)
    new = compat.to_common(data["new"][test], NEW)
    return (cross_accuracy(old, new, pairs) + cross_accuracy(new, old, pairs)) / 2


def fit_linear_maps(data: dict, split: tuple[np.ndarray, np.ndarray], pairs: PairSample) -> list[CompatMap]:
    """Ridge and Procrustes in both directions: scored on held-out identities, then refitted on all."""
    from facespace.compat import fit_map

    train, test = split
    everything = np.ones(len(data["labels"]), bool)
    maps = []
    for (src, s), (tgt, t) in (((OLD, "old"), (NEW, "new")), ((NEW, "new"), (OLD, "old"))):
        for kind in FITTED_KINDS:
            def fit(rows: np.ndarray) -> CompatMap:
                return fit_map(kind, training_rows(data, rows, s), training_rows(data, rows, t), source_model=src,
                               target_model=tgt, source_preprocessing=data[f"{s}_pre"],
                               target_preprocessing=data[f"{t}_pre"], groups=training_groups(data, rows),
                               fitted_on=_fitted_on(data, rows, GROUPS_ONLY))
            score = _held_out_score(fit(train), data, test, pairs)
            compat = fit(everything)
            compat.meta["validation"] = _validation(score, train, test, data)
            maps.append(compat)
            print(f"{compat.name}: held-out celeba cross accuracy {score:.4f}")
    return maps


def fit_mlp_map(data: dict, split: tuple[np.ndarray, np.ndarray], pairs: PairSample) -> CompatMap:
    """The ``mlp`` map old->new (:mod:`.compat_mlp`): scored on held-out identities, then refitted on all."""
    from facespace.compat import CompatMap, map_name

    from .compat_mlp import fit_mlp_arrays

    def fit(rows: np.ndarray) -> CompatMap:
        arrays, params = fit_mlp_arrays(training_rows(data, rows, "old"), training_rows(data, rows, "new"),
                                        training_groups(data, rows))
        return CompatMap(name=map_name(OLD, NEW, "mlp"), kind="mlp", source=OLD, target=NEW,
                         source_preprocessing=data["old_pre"], target_preprocessing=data["new_pre"],
                         meta={"params": params, "fitted_on": _fitted_on(data, rows, GROUPS_ONLY)}, **arrays)

    train, test = split
    score = _held_out_score(fit(train), data, test, pairs)
    compat = fit(np.ones_like(train))
    compat.meta["validation"] = _validation(score, train, test, data)
    print(f"{compat.name}: held-out celeba cross accuracy {score:.4f}")
    return compat


def _validation(score: float, train: np.ndarray, test: np.ndarray, data: dict, **extra) -> dict:
    return {"rank_score": score, "metric": "cross-model pair accuracy (best threshold, mean of both orders) "
            "on held-out celeba identities, map fitted without them",
            "held_out_identities": int(len(np.unique(data["labels"][test]))),
            "held_out_images": int(test.sum()), "fit_images": int(train.sum()), **extra}


def _harmonic_run(data: dict, rows: np.ndarray, config: HarmonicConfig,
                  held_out: np.ndarray | None = None) -> HarmonicResult:
    """Train head + projection on ``rows`` (projection started from their ridge map); the step kept
    is chosen on ``held_out`` rows when given."""
    from facespace.compat import fit_map
    from .harmonic import train_harmonic

    old, new, labels = training_rows(data, rows, "old"), training_rows(data, rows, "new"), training_groups(data, rows)
    ridge = fit_map("ridge", old, new, source_model=OLD, target_model=NEW, source_preprocessing=data["old_pre"],
                    target_preprocessing=data["new_pre"], groups=labels)
    valid = None if held_out is None else (data["new"][held_out], data["old"][held_out], data["labels"][held_out])
    return train_harmonic(new, old, labels, config, projection=(ridge.weight, ridge.bias), held_out=valid)


def fit_harmonic_map(data: dict, split: tuple[np.ndarray, np.ndarray], pairs: PairSample,
                     config: HarmonicConfig | None = None) -> CompatMap:
    """The harmonic map: the step count chosen on identities inside the training split, the score
    measured on the held-out split (as for the other maps), the stored map trained on all images."""
    from dataclasses import asdict, replace

    from .harmonic import HarmonicConfig, split_identities, to_compat_map

    config = config or HarmonicConfig()
    train, test = split
    inner = np.zeros_like(train)
    inner[np.flatnonzero(train)] = split_identities(data["labels"][train], held_out=0.2, seed=1)[1]
    probe = _harmonic_run(data, train & ~inner, config, held_out=inner)
    kept = next(h for h in probe.validation if h["step"] == probe.kept_step)
    fixed = replace(config, steps=max(probe.kept_step, 1))
    scored = _harmonic_run(data, train, fixed)
    compat_scored = to_compat_map(scored.model, source_model=OLD, target_model=NEW,
                                  source_preprocessing=data["old_pre"], target_preprocessing=data["new_pre"])
    score = _held_out_score(compat_scored, data, test, pairs)
    n_test = compat_scored.apply_target(data["new"][test])
    new_score = cross_accuracy(n_test, n_test, pairs)
    final = _harmonic_run(data, np.ones_like(train), fixed)
    print(f"harmonic: {probe.kept_step} steps kept (inner validation cross {kept['cross_accuracy']:.4f}); held-out "
          f"cross {score:.4f}, new/new through the head {new_score:.4f}")
    meta = {"fitted_on": _fitted_on(data, np.ones_like(train), "the triplet loss's positives and negatives"),
            "params": {**asdict(config), "steps_kept": probe.kept_step, "head": "linear new_dim->new_dim from identity",
                       "projection": "linear old_dim->new_dim from the ridge map", "loss": "triplet (alpha "
                       f"{config.margin}), semi-hard, mixed-version P x K batches", "train_seconds":
                       round(probe.seconds + scored.seconds + final.seconds, 2),
                       "final_losses": [round(v, 4) for v in final.losses[-5:]]},
            "validation": _validation(score, train, test, data, new_accuracy=new_score,
                                      new_accuracy_without_head=cross_accuracy(data["new"][test], data["new"][test],
                                                                               pairs),
                                      step_choice={"identities": int(len(np.unique(data["labels"][inner]))),
                                                   "curve": probe.validation})}
    return to_compat_map(final.model, source_model=OLD, target_model=NEW, source_preprocessing=data["old_pre"],
                         target_preprocessing=data["new_pre"], meta=meta)


def fit_all(faces: str | os.PathLike, identities: int | None = None,
            folder: str | os.PathLike | None = None, views: Sequence[AugmentView] = (), mlp: bool = True) -> list[str]:
    """Fit every map on the images of ``faces`` and store them in ``folder`` (default: the map
    store); returns their names. ``views``: augmented views whose pairs are added to the fitting
    pairs (:data:`.compat_augment.DEFAULT_VIEWS`; none by default: each image's own pair only);
    ``mlp``: fit the ``mlp`` map too (a minute of CPU; the tests leave it out)."""
    from facespace.compat import save_map

    from .harmonic import sample_pairs, split_identities

    data = paired_embeddings(faces, identities, views)
    split = split_identities(data["labels"], held_out=0.2, seed=0)
    pairs = sample_pairs(data["labels"][split[1]], seed=0)
    maps = fit_linear_maps(data, split, pairs) + [fit_harmonic_map(data, split, pairs)]
    if mlp:
        maps.append(fit_mlp_map(data, split, pairs))
    for compat in maps:
        print(f"stored {save_map(compat, folder)}")
    return [m.name for m in maps]
