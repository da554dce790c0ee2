"""The LFW comparison matrix: every registered embedder x {align, margin, centre} x {flip off, on}.

Runs the 10-fold protocol of LFW view 2 (``pairs.txt``) for each setting and
writes ``results/lfw.json`` and ``results/lfw.md`` (accuracy, VAL@FAR=1e-3,
AUC, EER, missed detections, wall time, images/s and the machine) plus
``results/lfw_roc.png``.

Embeddings are cached (``facespace.evaluation.cache``): the detector runs once
for all models and for both the ``align`` and ``margin`` crops, and flip on
reuses the flip-off pass, adding only the mirrored crops. So a setting's wall
time is what it added to the run; "img/s" is the stand-alone throughput of the
setting (load + detect + embed, each measured per image wherever this run
computed it; "cached" where a stage came from an earlier run -- use a fresh
``--cache-dir`` for complete timings).

    python benchmarks/lfw.py                      # the full matrix (hours on 2 CPU cores)
    python benchmarks/lfw.py --limit-pairs 60 --out /tmp/lfw-smoke   # a quick check
    python benchmarks/lfw.py --resume --settings facenet-casia-512/margin/on/centred

A setting is MODEL/CROP/FLIP[/SCORING]. SCORING is ``l2`` (the library's
squared L2 of unit embeddings, the default) or ``centred`` (the training
folds' mean removed, and with flip the two views concatenated: how
Sandberg's published numbers were measured; see
``facespace.evaluation.scoring``).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from _paths import DATA, RESULTS

DEFAULT_LFW = DATA / "lfw"


def parse_args(argv=None) -> argparse.Namespace:
    from facespace.alignment import ALIGN_MODES
    from facespace.pretrained.registry import list_models

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=str(DEFAULT_LFW), help="LFW folder (images and pairs.txt)")
    p.add_argument("--pairs", help="pairs file (default: pairs.txt under --root)")
    p.add_argument("--models", default=",".join(list_models("embedder")), help="comma-separated embedders")
    p.add_argument("--aligns", default=",".join(ALIGN_MODES), help="comma-separated crops")
    p.add_argument("--flips", default="off,on", help="comma-separated: off, on")
    p.add_argument("--settings", help="explicit comma-separated MODEL/ALIGN/FLIP[/SCORING] settings, run in "
                                      "this order (e.g. facenet-msceleb-128/margin/off); overrides "
                                      "--models/--aligns/--flips")
    p.add_argument("--resume", action="store_true",
                   help="keep the runs already in OUT/lfw.json and skip those settings")
    p.add_argument("--limit-pairs", type=int, help="only this many pairs (a quick check)")
    p.add_argument("--far", type=float, default=1e-3)
    p.add_argument("--out", default=str(RESULTS), help="folder for lfw.json / lfw.md / lfw_roc.png")
    p.add_argument("--cache-dir", help="embedding cache (default: $FACESPACE_HOME/embeddings)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from facespace.evaluation.pairs import find_lfw_layout, read_lfw_pairs
    from facespace.evaluation.report import machine_info, plot_roc

    images_dir, pairs_file = find_lfw_layout(args.root, args.pairs)
    pairs = read_lfw_pairs(pairs_file, images_dir)
    if args.limit_pairs:
        pairs = pairs.limit(args.limit_pairs)
    n_images = len(pairs.paths())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {
        "benchmark": "LFW view 2, 10-fold protocol",
        "pairs": {"file": str(pairs_file), "n": len(pairs), "folds": pairs.n_folds, "images": n_images,
                  "limited": bool(args.limit_pairs)},
        "far_target": args.far,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "runs": [],
    }
    settings = _settings(args)
    if args.resume and (out / "lfw.json").exists():
        previous = json.loads((out / "lfw.json").read_text())
        if previous["pairs"]["n"] == len(pairs):  # only runs on the same pairs can be kept
            results["runs"] = previous["runs"]
    done = {_setting(r) for r in results["runs"]}
    known = settings + [_setting(r) for r in results["runs"]]
    models, aligns = list(dict.fromkeys(s[0] for s in known)), list(dict.fromkeys(s[1] for s in known))
    curves, styles = {}, {}
    for run in results["runs"]:  # curves of kept runs, from their stored ROC points
        if "roc_points" not in run:
            continue
        label = _label(*_setting(run))
        curves[label] = (np.array(run["roc_points"]["fpr"]), np.array(run["roc_points"]["tpr"]))
        styles[label] = _style(_setting(run), models, aligns)
    cost: dict[tuple, float] = {}  # seconds per image of each stage, measured where this run computed it
    for setting in settings:
        if setting in done:
            continue
        row, result = _run_setting(args, pairs, setting, cost)
        results["runs"].append(row)
        label = _label(*setting)
        curves[label] = (result.report.roc.fpr, result.report.roc.tpr)
        styles[label] = _style(setting, models, aligns)
        missed = "n/a" if row["missed_detections"] is None else row["missed_detections"]
        print(f"{label}: {result.report.summary()}; missed detections {missed}; "
              f"{result.wall_s:.1f} s", flush=True)
        results["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        _write(out, results)
    png = plot_roc(out / "lfw_roc.png", curves, title=f"LFW view 2 ({len(pairs)} pairs)", far_target=args.far,
                   styles=styles)
    _write(out, results)
    print(f"wrote {out / 'lfw.json'}, {out / 'lfw.md'}" + (f", {png}" if png else ""))
    return 0


#: Named scoring rules of a setting (see the module notes).
SCORINGS = ("l2", "centred")
#: ROC curve colours (by crop and flip) and line styles (by model).
PALETTE = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink"]
DASHES = ["-", "--", ":", "-."]


def _settings(args: argparse.Namespace) -> list[tuple[str, str, bool, str]]:
    """(model, crop, flip, scoring) of each setting to run, in order."""
    if args.settings:
        fields = [t.strip().split("/") for t in args.settings.split(",") if t.strip()]
        bad = [f for f in fields if len(f) not in (3, 4) or (len(f) == 4 and f[3] not in SCORINGS)]
        if bad:
            raise SystemExit(f"lfw.py: bad setting {'/'.join(bad[0])!r}: expected MODEL/CROP/on|off[/l2|centred]")
        return [(f[0], f[1], f[2] == "on", f[3] if len(f) == 4 else "l2") for f in fields]
    flips = [f.strip() == "on" for f in args.flips.split(",") if f.strip()]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    aligns = [a.strip() for a in args.aligns.split(",") if a.strip()]
    return [(m, a, f, "l2") for m in models for a in aligns for f in flips]


def _run_setting(args: argparse.Namespace, pairs, setting: tuple[str, str, bool, str], cost: dict):
    """(row of lfw.json, run result) of one setting; learns the stage costs it measured into ``cost``."""
    from facespace.evaluation.report import run_pairs
    from facespace.pipeline import FacePipeline

    model, align, flip, scoring = setting
    pipeline = FacePipeline(model=model, align=align, flip=flip, device=args.device, batch_size=args.batch_size)
    result = run_pairs(pipeline, pairs, far_target=args.far, progress=not args.quiet,
                       cache_root=args.cache_dir, scoring=_scoring_rule(scoring, flip))
    _learn_costs(cost, result.embeddings.stats, model, align)
    row = result.to_dict()
    row.pop("missed_images")
    row["missed_images"] = result.embeddings.missed
    row["align"], row["flip"], row["scoring_name"] = align, flip, scoring
    row["images_per_s_standalone"] = _standalone_rate(cost, model, align, flip)
    row["roc_points"] = _thin_roc(result.report.roc)
    return row, result


def _style(setting: tuple, models: list[str], aligns: list[str]) -> dict:
    model, align, flip = setting[:3]
    return {"color": PALETTE[(2 * aligns.index(align) + flip) % len(PALETTE)],
            "linestyle": DASHES[models.index(model) % len(DASHES)]}


def _scoring_rule(name: str, flip: bool):
    from facespace.evaluation.scoring import ScoringRule

    if name == "centred":
        return ScoringRule(flip="concat" if flip else "mean", subtract_mean=True)
    return ScoringRule()


def _setting(run: dict) -> tuple[str, str, bool, str]:
    return run["preprocessing"]["model"], run["align"], bool(run["flip"]), run.get("scoring_name", "l2")


def _label(model: str, align: str, flip: bool, scoring: str) -> str:
    return f"{model} {align}{' +flip' if flip else ''}{'' if scoring == 'l2' else ' ' + scoring}"


def _thin_roc(roc, points: int = 400) -> dict:
    """At most ``points`` ROC points (log-spaced in FAR), enough to redraw the curve."""
    keep = np.unique(np.searchsorted(roc.fpr, np.concatenate([[0], np.logspace(-5, 0, points)])).clip(0, len(roc.fpr) - 1))
    return {"fpr": roc.fpr[keep].round(6).tolist(), "tpr": roc.tpr[keep].round(6).tolist()}


def _learn_costs(cost: dict, stats: dict, model: str, align: str) -> None:
    seconds, computed = stats["seconds"], stats["computed"]
    n_loaded = max(computed.values(), default=0)
    if n_loaded:
        cost.setdefault(("load",), seconds["load"] / n_loaded)
    if stats.get("detections_computed"):
        cost.setdefault(("detect",), seconds["detect"] / stats["detections_computed"])
    for view, n in computed.items():
        if n:
            cost.setdefault((model, align, view), seconds[f"embed_{view}"] / n)


def _standalone_rate(cost: dict, model: str, align: str, flip: bool) -> float | None:
    needed = [("load",), (model, align, "plain")]
    if align != "centre":
        needed.append(("detect",))
    if flip:
        needed.append((model, align, "mirror"))
    if not all(k in cost for k in needed):
        return None
    per_image = sum(cost[k] for k in needed)
    return round(1.0 / per_image, 2) if per_image > 0 else None


def _write(out: Path, results: dict) -> None:
    (out / "lfw.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "lfw.md").write_text(_markdown(results))


def _pct(mean, std) -> str:
    if mean is None:
        return "n/a"
    return f"{100 * mean:.2f} ± {100 * (std or 0):.2f}"


def _markdown(results: dict) -> str:
    m = results["machine"]
    p = results["pairs"]
    lines = [
        "# LFW verification benchmark",
        "",
        f"{p['n']} pairs of `{Path(p['file']).name}` ({p['folds']} folds, {p['images']} images)"
        + (" — **a subset, not the full protocol**" if p["limited"] else "")
        + f"; accuracy and VAL@FAR={results['far_target']:g} are mean ± std over the folds "
        "(threshold chosen on the other folds). Scoring per row (see notes).",
        "",
        f"Machine: {m['cpu']}, {m.get('cpus_usable', m['cpu_count'])} CPU core(s) usable, "
        f"torch {m['torch']} ({m['torch_threads']} threads){', GPU ' + m['cuda'] if m.get('cuda') else ''}, "
        f"Python {m['python']}, {m['platform']}. Started {results['started']}"
        + (f", finished {results['finished']}" if results.get("finished") else "") + ".",
        "",
        "| model | crop | flip | scoring | accuracy % | VAL@FAR % | AUC | EER % | threshold | missed det. | wall s "
        "| img/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        x = r["metrics"]
        missed = "—" if r["missed_detections"] is None else str(r["missed_detections"])
        rate = r.get("images_per_s_standalone")
        lines.append(
            f"| {r['model']} | {r['align']} | {'on' if r['flip'] else 'off'} | {r.get('scoring_name', 'l2')} | "
            f"{_pct(x['accuracy'], x['accuracy_std'])} | {_pct(x['val'], x['val_std'])} | "
            f"{x['auc']:.4f} | {100 * x['eer']:.2f} | {x['threshold_mean']:.3f} | {missed} | "
            f"{r['wall_s']:.1f} | {rate if rate is not None else 'cached'} |"
        )
    lines += [
        "",
        "Notes:",
        "- crop: `align` = 5-point similarity warp, `margin` = detector box + 32 px (Sandberg), "
        "`centre` = fixed central crop, no detector.",
        "- The face nearest the image centre is used; where the detector finds none the centre crop is "
        "used instead (counted as *missed det.*; the images are listed in `lfw.json`).",
        "- wall s: what the setting added to this run (detections and flip-off embeddings are shared "
        "through the cache). img/s: the setting's stand-alone throughput from per-image stage times "
        "(image decode + detection + embedding, + mirrored embedding with flip); 'cached' where a stage "
        "was computed in an earlier run.",
        "- scoring: `l2` = squared L2 of the unit embeddings (what the library does); `centred` = the "
        "training folds' mean embedding removed and, with flip, the two views concatenated (the rule behind "
        "Sandberg's published figures; needs a dataset mean, so it is an evaluation rule, not the default).",
        "- FaceNet paper (Schroff et al. 2015): 99.63% ± 0.09 aligned, 98.87% ± 0.15 centre crop.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
