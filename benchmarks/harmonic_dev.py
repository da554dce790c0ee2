"""Which compatibility map for identification across versions, on celeba-299 only (writes results/harmonic_dev.*).

LFW view 2 is the test of ``harmonic.py``; every choice of map (kind, direction, extra
training pairs from augmented views, ridge strength) is made here instead, on celeba-299's
6,283 images of 299 identities. Five folds by identity: each variant is fitted on four
fifths of the identities and scored on the fifth, with the protocol of ``harmonic.py``'s
identification scaled down: an old-model gallery of the first image of 70% of the fold's
identities, new-model probes of their other images (mated) and of the other 30%
identities' images (impostors); rank-1 and DIR at FAR 1% (threshold on the impostors'
best scores), pooled over the folds. old/old and new/new on the same rows are the bar.

Variants: ``ridge`` (strength by 5-fold cross-validation over the training identities),
``procrustes``, both old->new and new->old; ``mlp`` old->new (ridge plus a small
residual network trained on the cosine, ``facespace_train.compat_mlp``); the harmonic head
(``facespace_train.harmonic``, steps chosen on inner held-out identities). Each with the image's own pair only, or with the
augmented views of ``facespace_train.compat_augment`` (the mirror image and jittered crops,
embedded once and cached).

    OMP_NUM_THREADS=1 python benchmarks/harmonic_dev.py --views mirror,jitter1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from _paths import DATA, RESULTS

CELEBA = DATA / "celeba-299" / "faces"
FAR = 0.01
Transform = Callable[[np.ndarray], np.ndarray]


def load(views: tuple) -> dict:
    """Paired plain embeddings of celeba, and every augmented view's (both models)."""
    from facespace import FacePipeline
    from facespace_train.compat_augment import augmented_embeddings
    from facespace_train.compat_fit import NEW, OLD, paired_embeddings

    data = paired_embeddings(CELEBA)
    data["views"] = {}
    for view in views:
        data["views"][view.name] = {side: augmented_embeddings(FacePipeline(model=model), data["paths"], view)
                                    for side, model in (("old", OLD), ("new", NEW))}
    return data


def identify(gallery: np.ndarray, probes: np.ndarray, labels: np.ndarray, seed: int) -> dict:
    """Rank-1 and DIR@FAR 1%: gallery = first image of 70% of the identities, mated probes = their
    other images, impostors = the other identities' images."""
    from facespace.calibration import threshold_at_far
    from facespace.comparison import distance_matrix

    ids = np.unique(labels)
    enrolled = np.isin(labels, np.random.default_rng(seed).permutation(ids)[:int(0.7 * len(ids))])
    first = np.r_[True, labels[1:] != labels[:-1]]
    g, m, n = np.flatnonzero(first & enrolled), np.flatnonzero(~first & enrolled), np.flatnonzero(~enrolled)
    d = distance_matrix(probes[m], gallery[g])
    best = d.argmin(axis=1)
    rank1 = labels[g][best] == labels[m]
    threshold = threshold_at_far(distance_matrix(probes[n], gallery[g]).min(axis=1), FAR)
    return {"rank1": int(rank1.sum()), "dir": int(np.sum(rank1 & (d[np.arange(len(m)), best] <= threshold))),
            "mated": len(m)}


def _rows(data: dict, train: np.ndarray, views: list[str], side: str) -> np.ndarray:
    return np.concatenate([data[side][train]] + [data["views"][v][side][train] for v in views])


def ridge(direction: str) -> Callable:
    from facespace.comparison import unit_rows
    from facespace.compat import choose_ridge_strength, fit_ridge

    def fit(data: dict, train: np.ndarray, views: list[str]) -> tuple[Transform, Transform, dict]:
        x, y = _rows(data, train, views, "old"), _rows(data, train, views, "new")
        groups = np.tile(data["labels"][train], 1 + len(views))
        if direction == "new->old":
            x, y = y, x
        strength = choose_ridge_strength(x, y, groups)[0]
        w, b = fit_ridge(x, y, strength)
        mapped, same = (lambda v: unit_rows(v @ w + b)), (lambda v: v)
        params = {"strength": strength}
        return (mapped, same, params) if direction == "old->new" else (same, mapped, params)
    return fit


def procrustes(data: dict, train: np.ndarray, views: list[str]) -> tuple[Transform, Transform, dict]:
    from facespace.comparison import unit_rows
    from facespace.compat import fit_procrustes

    w, b = fit_procrustes(_rows(data, train, views, "old"), _rows(data, train, views, "new"))
    return (lambda v: unit_rows(v @ w + b)), (lambda v: v), {}


def mlp(data: dict, train: np.ndarray, views: list[str]) -> tuple[Transform, Transform, dict]:
    """The ``mlp`` map as stored (``facespace_train.compat_mlp``): ridge plus a residual network."""
    from facespace.compat import CompatMap
    from facespace_train.compat_mlp import fit_mlp_arrays

    arrays, params = fit_mlp_arrays(_rows(data, train, views, "old"), _rows(data, train, views, "new"),
                                    np.tile(data["labels"][train], 1 + len(views)))
    compat = CompatMap(name="dev", kind="mlp", source="old", target="new", source_preprocessing="",
                       target_preprocessing="", **arrays)
    return compat.apply, (lambda v: v), {k: params[k] for k in ("ridge_strength", "hidden", "epochs")}


def harmonic(data: dict, train: np.ndarray, views: list[str]) -> tuple[Transform, Transform, dict]:
    """The harmonic head and projection, steps chosen on inner held-out identities (as compat_fit does)."""
    from facespace.compat import choose_ridge_strength, fit_ridge
    from facespace_train.harmonic import HarmonicConfig, split_identities, train_harmonic

    rows = np.flatnonzero(train)
    inner = split_identities(data["labels"][rows], held_out=0.2, seed=1)[1]
    fit_rows, check_rows = rows[~inner], rows[inner]
    pick = np.zeros_like(train)
    pick[fit_rows] = True
    new, old = _rows(data, pick, views, "new"), _rows(data, pick, views, "old")
    labels = np.tile(data["labels"][fit_rows], 1 + len(views))
    w, b = fit_ridge(old, new, choose_ridge_strength(old, new, labels)[0])
    result = train_harmonic(new, old, labels, HarmonicConfig(), projection=(w, b),
                            held_out=(data["new"][check_rows], data["old"][check_rows], data["labels"][check_rows]))
    model = result.model
    return (lambda v: model.embed(old=v)), (lambda v: model.embed(new=v)), {"steps_kept": result.kept_step}


def run(data: dict, fit: Callable | None, views: list[str], folds: np.ndarray) -> dict:
    """Pooled rank-1 and DIR over the folds (``fit`` None: old/old; "new": new/new)."""
    totals, params = {"rank1": 0, "dir": 0, "mated": 0}, []
    for k in range(int(folds.max()) + 1):
        train, test = folds != k, folds == k
        if fit in (None, "new"):
            key = "old" if fit is None else "new"
            scores = identify(data[key][test], data[key][test], data["labels"][test], k)
        else:
            to_gallery, to_probe, p = fit(data, train, views)
            params.append(p)
            scores = identify(to_gallery(data["old"][test]), to_probe(data["new"][test]), data["labels"][test], k)
        totals = {key: totals[key] + scores[key] for key in totals}
    return {"rank1": totals["rank1"] / totals["mated"], "dir_at_far": totals["dir"] / totals["mated"],
            "mated_probes": totals["mated"], "per_fold": params}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--only", default=None, help="comma-separated variant names (default: all)")
    parser.add_argument("--views", default=None, help="comma-separated augmented views (default: all)")
    args = parser.parse_args(argv)
    from facespace.compat import identity_folds
    from facespace.evaluation.report import machine_info
    from facespace_train.compat_augment import DEFAULT_VIEWS

    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    views = [v for v in DEFAULT_VIEWS if args.views is None or v.name in args.views.split(",")]
    data = load(tuple(views))
    folds = identity_folds(data["labels"], 5)
    every = [v.name for v in views]
    grid = [("old/old", None, []), ("new/new", "new", [])]
    for name, fit in (("ridge old->new", ridge("old->new")), ("ridge new->old", ridge("new->old")),
                      ("procrustes old->new", procrustes), ("mlp old->new", mlp), ("harmonic", harmonic)):
        grid += [(name, fit, []), (f"{name} +mirror", fit, ["mirror"])]
        grid += [(f"{name} +{'+'.join(every)}", fit, every)] if every not in ([], ["mirror"]) else []
    wanted = None if args.only is None else set(args.only.split(","))
    rows = []
    for name, fit, used in grid:
        if (wanted is not None and name not in wanted and name not in ("old/old", "new/new")) \
                or not set(used) <= set(data["views"]):
            continue
        t = time.perf_counter()
        row = {"variant": name, "views": used, **run(data, fit, used, folds),
               "seconds": round(time.perf_counter() - t, 1)}
        print(f"{name:36s} rank-1 {100 * row['rank1']:.2f}  DIR@FAR1% {100 * row['dir_at_far']:.2f}  "
              f"({row['seconds']} s)", flush=True)
        rows.append(row)
    result = {"benchmark": "harmonic_dev", "data": f"celeba-299 ({len(data['labels'])} images, "
              f"{len(np.unique(data['labels']))} identities), 5 folds by identity",
              "preprocessing": {"old": data["old_pre"], "new": data["new_pre"]},
              "views": [v.__dict__ for v in views], "rows": rows, "started": started,
              "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine_info()}
    out = Path(args.out)
    (out / "harmonic_dev.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "harmonic_dev.md").write_text(markdown(result))
    return 0


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = ["# Compatibility maps for identification, chosen on celeba-299 (development data)", "",
             f"{result['data']}; old-model gallery (first image of 70% of a fold's identities), new-model probes; "
             "impostors: the other 30%. Pooled over the folds. Maps fitted without the fold's identities.", "",
             f"Old: `{result['preprocessing']['old']}`; new: `{result['preprocessing']['new']}`.", "",
             f"Machine: {m.get('cpu')}, {m.get('cpus_usable')} CPU(s), shared. Run {result['started']} to "
             f"{result['finished']}.", "", "| variant | rank-1 % | DIR@FAR1% % |", "|---|---|---|"]
    lines += [f"| {r['variant']} | {100 * r['rank1']:.2f} | {100 * r['dir_at_far']:.2f} |" for r in result["rows"]]
    views = ", ".join(f"{v['name']} (flip {v['flip']}, shift {v['shift']}, scale {v['scale']})"
                      for v in result["views"])
    return "\n".join(lines + ["", f"Augmented views: {views}.", ""])


if __name__ == "__main__":
    sys.exit(main())
