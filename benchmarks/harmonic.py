"""Harmonic embeddings: comparing the old and the new model's embeddings (writes results/harmonic.*).

Old model: facenet-casia-512 (512-D, its registered ``margin`` crop); new model:
facenet-msceleb-128 (128-D, its registered ``upright`` crop; each model's crop is the one
``pretrained.toml`` registers today, and every map records the preprocessing ids it was fitted
for). ``--fit`` first fits every compatibility map on celeba-299 (6,283 images, 299 identities;
never LFW) from paired embeddings of the same images by both models
(``facespace_train.compat_fit``), with ``--views`` the augmented views of
``facespace_train.compat_augment`` added as more pairs (chosen by ``harmonic_dev.py``, on
celeba), and stores them in the map store (``$FACESPACE_COMPAT_DIR``, default
``$FACESPACE_HOME/compat``; ``facespace fit-maps DIR`` does the same):

* ``ridge`` (strength by 5-fold cross-validation over identities) and
  ``procrustes`` (PCA of the larger space, then the orthogonal map), old->new and new->old;
* ``harmonic``: a head on the new model and a learned projection of the old
  one, trained with the triplet loss on mixed-version batches
  (``facespace_train.harmonic``), the step kept chosen on held-out celeba identities.

Each map's ``validation.rank_score`` (cross-model pair accuracy on 20% held-out
celeba identities, maps refitted without them) orders ``facespace.compat.find_map``.

Then, on LFW (all maps frozen): view 2 (6,000 pairs, 10 folds, squared L2 of unit
vectors) for old/old, new/new, new/new int8 (``facespace.quantized``: both sides int8
codes), new int8 gallery/new (an int8 gallery searched with float probes), the new
model through the harmonic head, and each map cross-model in both orders; and
identification with an old-model gallery (first image of each of the 1,680
people with 2+ images) and new-model probes (their other images; impostors:
the 4,069 single-image people), rank-1 and DIR at FAR 1% (threshold on the
impostors' best scores), as in ``identify_lfw.py``.

    python benchmarks/harmonic.py --fit --views mirror   # fit and store the maps (mirror: chosen by harmonic_dev.py), evaluate
    python benchmarks/harmonic.py           # evaluate the stored maps
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from _paths import DATA, RESULTS
from _recognition_common import LFW, lfw_embeddings
from facespace_train.compat_fit import NEW, OLD, fit_all

if TYPE_CHECKING:
    from facespace.compat import CompatMap
    from facespace.evaluation import PairsReport

CELEBA = DATA / "celeba-299" / "faces"
FAR_VERIFY, FAR_IDENTIFY = 1e-3, 0.01


# -- LFW: the evaluation ------------------------------------------------------------------------
@dataclass
class Side:
    """Which model's LFW embeddings, and how they are brought into the compared space."""

    model: str
    transform: Callable[[np.ndarray], np.ndarray]


@dataclass
class Setting:
    name: str
    gallery: Side   # first image of a pair in the "old first" order; gallery in identification
    probe: Side
    cross: bool


def build_settings(maps: list[CompatMap]) -> list[Setting]:
    """The grid: old/old, new/new, new/new int8, the harmonic head's new/new, and every map cross-model."""
    from facespace.quantized import dequantize_int8, quantize_int8

    def plain(x: np.ndarray) -> np.ndarray:
        return x

    def int8(x: np.ndarray) -> np.ndarray:
        return dequantize_int8(quantize_int8(x))

    rows = [Setting("old/old", Side(OLD, plain), Side(OLD, plain), False),
            Setting("new/new", Side(NEW, plain), Side(NEW, plain), False),
            Setting("new/new int8", Side(NEW, int8), Side(NEW, int8), False),
            Setting("new int8 gallery/new", Side(NEW, int8), Side(NEW, plain), False)]
    for m in maps:
        old_side = Side(OLD, lambda x, m=m: m.to_common(x, OLD))
        new_side = Side(NEW, lambda x, m=m: m.to_common(x, NEW))
        if m.kind == "harmonic":
            rows.append(Setting("new+head/new+head (harmonic)", new_side, new_side, False))
        direction = "old->new" if m.source == OLD else "new->old"
        rows.append(Setting(f"cross {m.kind} {direction}", old_side, new_side, True))
    return rows


def lfw_data() -> dict:
    """Both models' embeddings of all 13,233 LFW images, labels, and view-2 pairs as row indices."""
    from facespace.evaluation import read_lfw_pairs

    out = {}
    for model in (OLD, NEW):
        paths, labels, emb, detected, pipeline = lfw_embeddings(model)
        out[model] = emb
        out[f"{model}/pre"] = pipeline.preprocessing_id
        out[f"{model}/missed"] = int((~detected).sum())
    where = {p.resolve(): i for i, p in enumerate(paths)}
    pairs = read_lfw_pairs(LFW.parent / "pairs.txt", LFW)
    out.update(labels=labels, pairs=pairs, first=np.array([where[p.resolve()] for p in pairs.first]),
               second=np.array([where[p.resolve()] for p in pairs.second]))
    return out


def verify_pairs(first: np.ndarray, second: np.ndarray, data: dict) -> PairsReport:
    """The view-2 protocol on squared L2 distances of first[pair.first] and second[pair.second]."""
    from facespace.evaluation import evaluate_pairs

    d = np.sum((first[data["first"]] - second[data["second"]]) ** 2, axis=1).astype(np.float64)
    return evaluate_pairs(d, data["pairs"].same, data["pairs"].folds, far_target=FAR_VERIFY)


def _verification_entry(report: PairsReport) -> dict:
    return {"accuracy": report.accuracy, "accuracy_std": report.accuracy_std, "val": report.val,
            "val_std": report.val_std, "far": report.far, "auc": report.auc, "eer": report.eer}


def identify(gallery: np.ndarray, probes: np.ndarray, labels: np.ndarray) -> dict:
    """Rank-1 and DIR@FAR 1% with the gallery and probe rows of identify_lfw.py."""
    from facespace.calibration import threshold_at_far
    from facespace.comparison import distance_matrix

    counts = np.bincount(labels)
    first = np.r_[True, labels[1:] != labels[:-1]]
    multi = counts[labels] >= 2
    g_rows, mated, nonmated = (np.flatnonzero(first & multi), np.flatnonzero(~first & multi),
                               np.flatnonzero(counts[labels] == 1))
    d_mated = distance_matrix(probes[mated], gallery[g_rows])
    best = d_mated.argmin(axis=1)
    rank1 = labels[g_rows][best] == labels[mated]
    mated_d = d_mated[np.arange(len(mated)), best]
    impostor_d = distance_matrix(probes[nonmated], gallery[g_rows]).min(axis=1)
    threshold = threshold_at_far(impostor_d, FAR_IDENTIFY)
    return {"rank1": float(rank1.mean()), "dir_at_far": float(np.mean(rank1 & (mated_d <= threshold))),
            "threshold": float(threshold), "far": float(np.mean(impostor_d <= threshold)),
            "gallery": len(g_rows), "mated_probes": len(mated), "nonmated_probes": len(nonmated)}


def run_setting(setting: Setting, data: dict, curves: dict) -> dict:
    """Verification (both orders for a cross setting) and identification of one grid row."""
    g = setting.gallery.transform(data[setting.gallery.model])
    p = setting.probe.transform(data[setting.probe.model])
    row = {"setting": setting.name, "gallery_model": setting.gallery.model, "probe_model": setting.probe.model}
    orders = {"old_first": (g, p), "new_first": (p, g)} if setting.cross else {"same": (g, p)}
    for order, (a, b) in orders.items():
        report = verify_pairs(a, b, data)
        row[order] = _verification_entry(report)
        label = setting.name + ("" if not setting.cross else f" ({order.replace('_', ' ')})")
        curves[label] = (report.roc.fpr, report.roc.tpr)
    if setting.cross:
        row["mean"] = {k: (row["old_first"][k] + row["new_first"][k]) / 2 for k in ("accuracy", "val", "auc")}
    row["identification"] = identify(g, p, data["labels"])
    return row


def _best_cross(rows: list[dict]) -> dict:
    """Whether the best cross-model setting beats old/old, and what the harmonic head costs the new model."""
    old = next(r for r in rows if r["setting"] == "old/old")
    new = next(r for r in rows if r["setting"] == "new/new")["same"]["accuracy"]
    head = [r["same"]["accuracy"] for r in rows if r["setting"].startswith("new+head")]
    cross = [r for r in rows if "mean" in r]
    best_v = max(cross, key=lambda r: r["mean"]["accuracy"])
    best_i = max(cross, key=lambda r: r["identification"]["dir_at_far"])
    return {"best_cross_verification": best_v["setting"], "beats_old_old_verification":
            best_v["mean"]["accuracy"] > old["same"]["accuracy"],
            "best_cross_identification": best_i["setting"],
            "beats_old_old_identification_dir":
                best_i["identification"]["dir_at_far"] > old["identification"]["dir_at_far"],
            "beats_old_old_identification_rank1": max(r["identification"]["rank1"] for r in cross)
            > old["identification"]["rank1"],
            "new_accuracy": new, "new_accuracy_with_harmonic_head": head[0] if head else None,
            "harmonic_head_accuracy_change_points": 100 * (head[0] - new) if head else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit", action="store_true", help="fit and store the maps on celeba-299 first")
    parser.add_argument("--views", default="", help="with --fit: augmented views added as fitting pairs "
                        "(comma-separated names of facespace_train.compat_augment.DEFAULT_VIEWS)")
    parser.add_argument("--out", default=str(RESULTS), help="folder for harmonic.json/.md/.png")
    args = parser.parse_args(argv)
    from facespace.compat import MAP_KINDS, list_maps, load_map
    from facespace.evaluation.report import machine_info, plot_roc

    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if args.fit:
        from facespace_train.compat_augment import views_named

        fit_all(CELEBA, views=views_named(args.views))
    order = {kind: i for i, kind in enumerate(MAP_KINDS)}
    maps = sorted((load_map(e["name"]) for e in list_maps()), key=lambda m: (m.kind == "harmonic", m.source != OLD,
                                                                           order[m.kind]))
    data = lfw_data()
    curves: dict = {}
    rows = [run_setting(s, data, curves) for s in build_settings(maps)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot_roc(out / "harmonic.png", curves, title="LFW view 2: old, new and cross-model", far_target=FAR_VERIFY,
             styles=_styles(curves))
    result = {"benchmark": "harmonic", "old_model": OLD, "new_model": NEW,
              "preprocessing": {m: data[f"{m}/pre"] for m in (OLD, NEW)},
              "missed_detections_lfw": {m: data[f"{m}/missed"] for m in (OLD, NEW)},
              "pairs": len(data["pairs"]), "rows": rows, "summary": _best_cross(rows), "maps": list_maps(),
              "started": started, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine_info()}
    (out / "harmonic.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "harmonic.md").write_text(markdown(result))
    print(markdown(result))
    return 0


def _styles(curves: dict) -> dict:
    """Solid for one model or the old-first order, dashed for new-first, dotted for int8; a colour a setting."""
    import matplotlib

    colours = matplotlib.colormaps["tab10"].colors
    names = list(dict.fromkeys(label.split(" (")[0] for label in curves))
    return {label: {"color": colours[names.index(label.split(" (")[0]) % 10],
                    "linestyle": "--" if label.endswith("(new first)") else ":" if "int8" in label else "-"}
            for label in curves}


def _pct(mean: float, std: float | None = None) -> str:
    return f"{100 * mean:.2f}" + ("" if std is None else f" ± {100 * std:.2f}")


def _verification_cells(row: dict) -> str:
    if "same" in row:
        v = row["same"]
        return f"{_pct(v['accuracy'], v['accuracy_std'])} | {_pct(v['val'], v['val_std'])} | {v['auc']:.4f} | | |"
    a, b, m = row["old_first"], row["new_first"], row["mean"]
    return (f"{_pct(m['accuracy'])} | {_pct(m['val'])} | {m['auc']:.4f} | "
            f"{_pct(a['accuracy'], a['accuracy_std'])} / {_pct(a['val'])} / {a['auc']:.4f} | "
            f"{_pct(b['accuracy'], b['accuracy_std'])} / {_pct(b['val'])} / {b['auc']:.4f} |")


def markdown(result: dict) -> str:
    """The grid as a Markdown page."""
    m = result["machine"]
    lines = ["# Harmonic embeddings: old and new model compared across versions", "",
             f"Old model `{result['old_model']}`, new model `{result['new_model']}`, each with its registered crop "
             f"(`{result['preprocessing'][result['old_model']]}`; `{result['preprocessing'][result['new_model']]}`). "
             "Maps fitted on celeba-299 only (nothing chosen on LFW). LFW view 2: "
             f"{result['pairs']} pairs, 10 folds, squared L2 of unit vectors; identification: old-model gallery, "
             "new-model probes (same-model rows: one model throughout).", "",
             f"Machine: {m.get('cpu')}, {m.get('cpus_usable')} CPU(s), torch {m.get('torch')}, "
             f"Python {m.get('python')}. Run {result['started']} to {result['finished']}.", "",
             "| setting | acc % (mean) | VAL@1e-3 % (mean) | AUC (mean) | old first: acc / VAL / AUC | "
             "new first: acc / VAL / AUC | rank-1 % | DIR@FAR1% % |",
             "|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        ident = row["identification"]
        lines.append(f"| {row['setting']} | {_verification_cells(row)} {_pct(ident['rank1'])} | "
                     f"{_pct(ident['dir_at_far'])} |")
    lines += ["", "Maps (celeba-299 held-out identities: `rank_score`):", ""]
    for e in result["maps"]:
        v, params = e.get("validation", {}), e.get("params", {})
        head = f" + head {e['target']['dim']}->{e['space_dim']}" if e["kind"] == "harmonic" else ""
        shown = {k: x for k, x in params.items() if k in ("strength", "pca_dim", "steps_kept", "lr", "p", "k",
                                                           "ridge_strength", "hidden", "epochs")}
        fitted = e.get("fitted_on", {})
        pairs = f"{fitted.get('pairs', fitted.get('images'))} pairs ({fitted.get('images')} images"
        pairs += f" + views {', '.join(fitted['augmented_views'])})" if fitted.get("augmented_views") else ")"
        lines.append(f"- `{e['name']}` ({e['kind']}, {e['source']['dim']}->{e['space_dim']}{head}): held-out "
                     f"cross accuracy {_pct(v.get('rank_score', float('nan')))}; {pairs}; {json.dumps(shown)}")
    s = result["summary"]
    lines += ["", f"Best cross setting (verification, mean of both orders): {s['best_cross_verification']}; beats "
              f"old/old: {s['beats_old_old_verification']}. Best cross setting (DIR): {s['best_cross_identification']};"
              f" beats old/old DIR: {s['beats_old_old_identification_dir']}, rank-1: "
              f"{s['beats_old_old_identification_rank1']}."]
    if s["new_accuracy_with_harmonic_head"] is not None:
        lines.append(f"New model through the harmonic head: {_pct(s['new_accuracy_with_harmonic_head'])}% vs "
                     f"{_pct(s['new_accuracy'])}% without ({s['harmonic_head_accuracy_change_points']:+.2f} points).")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
