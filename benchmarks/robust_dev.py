"""Choosing the robust defaults on development data: crops, flip, model fusion, quality.

    python benchmarks/robust_dev.py --compute      # embed every view once (cached)
    python benchmarks/robust_dev.py                # evaluate the rules, write results

Sets (nothing is chosen on the test set; LFW view 2 is only reported):

* ``p04-matched``: Pointing'04 pose-matched pairs (``evaluation.pointing04.pose_pairs``);
* ``p04-cross``: Pointing'04 frontal-versus-turned pairs: series-1 frontal (pan 0, tilt 0)
  against series-2 at every pan with tilt 0 (``cross_pose_pairs``), the shape of the
  frontal-profile protocol of in-the-wild benchmarks;
* ``lfw-dev``: LFW view 1, ``pairsDevTrain.txt`` + ``pairsDevTest.txt``;
* ``lfw-test``: LFW view 2 (``pairs.txt``): reported, never used to choose.

Views: each (model, crop) embedded plain and mirrored, from the evaluation cache.
Writes benchmarks/results/robust_dev.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from _paths import DATA, REPO, RESULTS

MODELS = ("facenet-msceleb-128", "facenet-casia-512")
CROPS = ("align", "margin", "upright")
#: The (model, crop) views the rules read: every crop of the default model, the 512-D model's margin crop.
VIEWS = [(MODELS[0], c) for c in CROPS] + [(MODELS[1], "margin")]
#: Views of the test set (LFW view 2): only those of the rules reported there.
TEST_VIEWS = [(MODELS[0], "upright"), (MODELS[0], "align"), (MODELS[1], "margin")]


def dev_image_sets() -> dict[str, list]:
    from facespace.evaluation.pairs import read_lfw_pairs
    from facespace.evaluation.pointing04 import list_images

    lfw = DATA / "lfw"
    images = DATA / "lfw" / "lfw-deepfunneled"
    sets = {"pointing04": [im.path for im in list_images(DATA / "pointing04")]}
    dev = [p for name in ("pairsDevTrain.txt", "pairsDevTest.txt")
           for p in read_lfw_pairs(lfw / name, images).paths()]
    sets["lfw-dev"] = sorted(set(dev))
    sets["lfw-test"] = sorted(set(read_lfw_pairs(lfw / "pairs.txt", images).paths()))
    return sets


def compute(order: list[tuple[str, str, str, bool]]) -> None:
    from facespace import FacePipeline
    from facespace.evaluation.cache import embed_paths

    sets = dev_image_sets()
    for set_name, model, crop, flip in order:
        print(f"== {set_name} {model} {crop} flip={flip}", flush=True)
        embed_paths(FacePipeline(model=model, align=crop, flip=flip), sets[set_name], progress=False)


#: What --compute embeds, cheapest decisions first: (set, model, crop, flip).
COMPUTE_ORDER = [(s, MODELS[0], c, False) for s in ("pointing04", "lfw-dev") for c in CROPS] + \
                [(s, m, c, True) for s in ("pointing04", "lfw-dev") for m, c in VIEWS] + \
                [("lfw-test", m, c, f) for m, c in VIEWS for f in (False, True)]


# -- what each image gives: views, faces -------------------------------------------------------
class SetData:
    """One image set: per-(model, crop) plain and mirror embeddings, and the face of each image."""

    def __init__(self, paths: list, views=tuple(VIEWS), second_pass: str = "relaxed") -> None:
        from facespace import FacePipeline
        from facespace.evaluation.cache import cached_faces, embed_paths

        self.paths = list(paths)
        self.index = {p: i for i, p in enumerate(self.paths)}
        self.views: dict[tuple[str, str], dict] = {}
        self.missed: dict[tuple[str, str], int] = {}
        for model, crop in views:
            pipe = FacePipeline(model=model, align=crop, flip=True, second_pass=second_pass)
            got = embed_paths(pipe, self.paths, progress=False)
            self.views[model, crop] = got.views
            self.missed[model, crop] = len(got.missed)
        default_crop = preset_views("balanced")[0]["align"]
        faces = cached_faces(FacePipeline(align=default_crop, second_pass=second_pass), self.paths)
        self.faces = [f for f, _ in faces]
        from facespace.quality import face_features

        self.features = np.array([face_features(f, c) for f, c in faces])
        self.detected = np.array([f.detected for f in self.faces])
        self.yaw = np.array([abs(f.pose.yaw) if f.pose is not None else 90.0 for f in self.faces])

    def vectors(self, model: str, crop: str, flip: bool) -> np.ndarray:
        v = self.views[model, crop]
        return unit(v["plain"] + v["mirror"]) if flip else v["plain"]


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def sqd(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum((a - b) ** 2, axis=1)


# -- rules: image data -> per-pair squared distances ----------------------------------------
def rule_single(model, crop, flip):
    def run(data, ia, ib):
        v = data.vectors(model, crop, flip)
        return sqd(v[ia], v[ib])
    return run


def rule_switch(limit: float, flip: bool, model=MODELS[0]):
    """Per image: the align crop when |yaw| < limit, else the margin crop."""
    def run(data, ia, ib):
        turned = (data.yaw >= limit)[:, None]
        v = np.where(turned, data.vectors(model, "margin", flip), data.vectors(model, "align", flip))
        return sqd(v[ia], v[ib])
    return run


def rule_crop_mean(flip: bool, model=MODELS[0], crops=("align", "margin")):
    """Mean of the crops' distances (their concatenated embedding)."""
    def run(data, ia, ib):
        return sum(sqd(data.vectors(model, c, flip)[ia], data.vectors(model, c, flip)[ib]) for c in crops) / len(crops)
    return run


def rule_fused(parts: list, weights: list[float]):
    """Weighted mean of other rules' distances (weights sum to 1: a concatenated embedding)."""
    def run(data, ia, ib):
        return sum(w * r(data, ia, ib) for r, w in zip(parts, weights))
    return run


def evaluate(rule, data: SetData, pairs, selections: dict) -> dict:
    from facespace.evaluation.protocol import evaluate_pairs

    ia = np.array([data.index[p] for p in pairs.first])
    ib = np.array([data.index[p] for p in pairs.second])
    d = rule(data, ia, ib)
    out = {}
    for name, sel in selections.items():
        r = evaluate_pairs(d[sel], pairs.same[sel], pairs.folds[sel])
        out[name] = {"accuracy": r.accuracy, "accuracy_std": r.accuracy_std, "val": r.val, "n": r.n_pairs}
    return out


def pair_sets() -> dict:
    """name -> (pairs, {selection name: mask}) of every development set, and the test set."""
    from facespace.evaluation.pairs import PairSet, read_lfw_pairs
    from facespace.evaluation.pointing04 import cross_pose_pairs, list_images, pose_pairs

    images = list_images(DATA / "pointing04")
    out = {}
    for name, build in (("p04-matched", pose_pairs), ("p04-cross", cross_pose_pairs)):
        pairs, _, pans = build(images)
        size = np.abs(pans)
        by_pan = {f"pan{b}": size == b for b in sorted(set(size.tolist()))}
        out[name] = (pairs, {"frontal": size <= 30, "turned": size >= 45, "all": np.ones(len(pairs), bool), **by_pan})
    root = DATA / "lfw" / "lfw-deepfunneled"
    train, test = (read_lfw_pairs(DATA / "lfw" / f, root) for f in ("pairsDevTrain.txt", "pairsDevTest.txt"))
    dev = PairSet(train.first + test.first, train.second + test.second, np.concatenate([train.same, test.same]),
                  np.zeros(len(train) + len(test)), source="LFW view 1").with_folds(10)
    train_mask = np.arange(len(dev)) < len(train)
    out["lfw-dev"] = (dev, {"all": np.ones(len(dev), bool), "train": train_mask, "test": ~train_mask})
    view2 = read_lfw_pairs(DATA / "lfw" / "pairs.txt", root)
    out["lfw-test"] = (view2, {"all": np.ones(len(view2), bool)})
    return out


def rules() -> dict:
    m, c = MODELS
    out = {}
    for flip in (False, True):
        tag = "+flip" if flip else ""
        for crop in ("align", "margin", "upright"):
            out[f"{crop}{tag}"] = rule_single(m, crop, flip)
        for limit in (15, 25, 35, 45):
            out[f"switch{limit}{tag}"] = rule_switch(limit, flip)
        out[f"crop-mean{tag}"] = rule_crop_mean(flip)
        out[f"upright+align{tag}"] = rule_crop_mean(flip, crops=("upright", "align"))
    for lam in (0.2, 0.3, 0.4, 0.5):
        out[f"upright+flip & casia-margin+flip x{lam}"] = rule_fused(
            [rule_single(m, "upright", True), rule_single(c, "margin", True)], [1 - lam, lam])
    for lam in (0.2, 0.3):
        out[f"upright+align+flip & casia-margin+flip x{lam}"] = rule_fused(
            [rule_crop_mean(True, crops=("upright", "align")), rule_single(c, "margin", True)], [1 - lam, lam])
    return out


def load_data(sets: dict) -> dict[str, SetData]:
    """SetData per pair set (the two Pointing'04 sets share one)."""
    p04 = SetData(sorted({*sets["p04-matched"][0].paths(), *sets["p04-cross"][0].paths()}))
    out = {"p04-matched": p04, "p04-cross": p04}
    out["lfw-dev"] = SetData(sets["lfw-dev"][0].paths())
    if "lfw-test" in sets:
        out["lfw-test"] = SetData(sets["lfw-test"][0].paths(), tuple(TEST_VIEWS))
    return out


def evaluate_all(sets: dict, datas: dict, chosen: dict) -> dict:
    out: dict = {"rules": {}, "missed": {name: {f"{m}/{c}": n for (m, c), n in d.missed.items()}
                                         for name, d in datas.items()}}
    for name, (pairs, selections) in sets.items():
        for rule_name, rule in {**rules(), **chosen}.items():
            try:
                out["rules"].setdefault(rule_name, {})[name] = evaluate(rule, datas[name], pairs, selections)
            except KeyError:  # a view this set was not embedded with (the test set has only the presets')
                continue
    return out


def plot(result: dict, path) -> None:
    """Accuracy and VAL against |pan| on both Pointing'04 sets for the crops and the presets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = ["align", "margin", result["chosen"]["balanced"], result["chosen"]["accurate"]]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    for row, name in enumerate(("p04-matched", "p04-cross")):
        for col, key in enumerate(("accuracy", "val")):
            ax = axes[row][col]
            for rule in dict.fromkeys(shown):
                cells = result["rules"][rule][name]
                pans = sorted(int(k[3:]) for k in cells if k.startswith("pan"))
                label = rule + (" (balanced)" if rule == shown[2] else " (accurate)" if rule == shown[3] else "")
                ax.plot(pans, [100 * (cells[f"pan{b}"][key] or np.nan) for b in pans], "o-", label=label)
            ax.set_title(f"{name}: {'accuracy' if key == 'accuracy' else 'VAL @ FAR=1e-3'} %")
            ax.set_xlabel("|pan| (degrees)"), ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def markdown(result: dict) -> list[str]:
    cols = [("p04-matched", "frontal"), ("p04-matched", "turned"), ("p04-cross", "frontal"),
            ("p04-cross", "turned"), ("lfw-dev", "all"), ("lfw-test", "all")]
    lines = ["# Robust defaults, chosen on development data", "",
             "Accuracy % / VAL % at FAR=1e-3 (fold protocol). p04 = Pointing'04 (5 identity-disjoint folds; "
             "frontal |pan| <= 30, turned |pan| >= 45; matched = both images at one pose, cross = frontal "
             "against each pose); lfw-dev = LFW view 1 (10 folds); lfw-test = LFW view 2, reported only. "
             "Run: `python benchmarks/robust_dev.py --compute && python benchmarks/robust_dev.py --write-presets`.", "",
             "| rule | " + " | ".join(f"{s} {k}" for s, k in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, by_set in result["rules"].items():
        cells = [by_set.get(s, {}).get(k) for s, k in cols]
        lines.append(f"| {name} | " + " | ".join(
            "-" if c is None else f"{100 * c['accuracy']:.2f} / {100 * (c['val'] or 0):.0f}" for c in cells) + " |")
    lines += ["", "## Missed faces (MTCNN, the face embed_paths embeds)", "", "| set | images | first pass only | with the second pass |",
              "|---|---|---|---|"]
    for name, row in result.get("second_pass", {}).items():
        lines.append(f"| {name} | {row['images']} | {row['missed_first_pass_only']} | {row['missed_with_second_pass']} |")
    fallback = result.get("fallback", {})
    if fallback:
        lines += ["", "Pairs with an image still missed after both passes (LFW view 1 + Pointing'04 matched), right at "
                  "the registered threshold: " + ", ".join(
                      f"{k} fallback {v['accuracy'] * 100:.1f}% of {v['pairs']}" for k, v in fallback.items()
                      if v["accuracy"] is not None)]
    lines += ["", "## Quality: error against reject (accuracy % when the worst pairs by quality are set aside)", "",
              "| set | " + " | ".join(f"{100 * f:g}%" for f in (0.0, 0.01, 0.02, 0.05, 0.1, 0.2)) + " |", "|---" * 7 + "|"]
    for name, curve in result.get("reject_curves", {}).items():
        lines.append(f"| {name} | " + " | ".join(f"{100 * c['accuracy']:.2f}" for c in curve) + " |")
    for name, preset in result.get("presets", {}).get("presets", {}).items():
        if name == PRESETS_FIRST:
            lines += ["", "## Presets", "", "| preset | views | runtime | threshold | ms per face | source |", "|---|---|---|---|---|---|"]
        views = " + ".join(f"{v['model']}/{v['align']}{'+flip' if v.get('flip') else ''}"
                           + (f" x{v['weight']}" if len(preset['views']) > 1 else "") for v in preset["views"])
        lines.append(f"| {name} | {views} | {preset['backend'] or 'default'} | {preset['threshold']} | {preset['ms_per_face']} | "
                     f"{preset['source']} |")
    load = result.get("machine", {}).get("load_average")
    if load:
        lines += ["", f"Load average while timing: {load} (a shared 2-core machine: times are indicative)."]
    return lines


PRESETS_FIRST = "fast"


# -- face quality: fitted on development pairs ------------------------------------------------
#: Per feature (facespace.quality.FEATURES), which end is worse: -1 low is worse, +1 high is worse.
WORSE = np.array([-1, +1, +1, -1, -1])


def pair_features(data: SetData, pairs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(worse face's features per pair, pair index a, pair index b)."""
    ia = np.array([data.index[p] for p in pairs.first])
    ib = np.array([data.index[p] for p in pairs.second])
    fa, fb = data.features[ia], data.features[ib]
    worse = np.where(WORSE > 0, np.maximum(fa, fb), np.minimum(fa, fb))
    return worse, ia, ib


def logistic_fit(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, steps: int = 50) -> tuple[np.ndarray, float]:
    """Weights and bias of p(y=1 | x) by Newton's method (x standardised, a small ridge)."""
    X = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(X.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-X @ w))
        grad = X.T @ (p - y) + l2 * np.r_[w[:-1], 0]
        hess = (X * (p * (1 - p))[:, None]).T @ X + l2 * np.diag(np.r_[np.ones(len(w) - 1), 0])
        w -= np.linalg.solve(hess, grad)
    return w[:-1], float(w[-1])


def signed_fit(z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Logistic weights in each feature's known direction (:data:`WORSE`: quality never rises as a
    face gets blurrier, smaller, more turned or less certain); a feature whose fitted weight goes
    the other way on the development pairs is left out (weight 0) and the rest refitted."""
    keep = np.ones(z.shape[1], bool)
    while True:
        w_kept, b = logistic_fit(z[:, keep], y)
        w = np.zeros(z.shape[1])
        w[keep] = w_kept
        wrong = keep & (w * WORSE > 0)
        if not wrong.any():
            return w, b
        keep &= ~wrong


def fit_quality(sets: dict, datas: dict, rule) -> dict:
    """Fit the quality model: does the default rule verify a pair right, from its worse face?"""
    from facespace.evaluation.protocol import best_accuracy_threshold
    from facespace.quality import QualityModel

    xs, ys = [], []
    for name in ("p04-matched", "p04-cross", "lfw-dev"):
        pairs, _ = sets[name]
        data = datas[name]
        x, ia, ib = pair_features(data, pairs)
        detected = data.detected[ia] & data.detected[ib]
        d = rule(data, ia, ib)
        threshold, _ = best_accuracy_threshold(d, pairs.same)
        xs.append(x[detected]), ys.append(((d <= threshold) == pairs.same)[detected])
    x, y = np.concatenate(xs), np.concatenate(ys).astype(float)
    mean, scale = x.mean(0), x.std(0) + 1e-9
    w, b = signed_fit((x - mean) / scale, y)
    model = QualityModel(tuple(map(float, w)), b, tuple(map(float, mean)), tuple(map(float, scale)),
                         source=f"benchmarks/robust_dev.py: logistic fit of 'pair verified right' on {len(y)} "
                                "development pairs (Pointing'04 matched + frontal-vs-pose, LFW view 1), "
                                "features of the pair's worse face")
    return model.to_dict()


# -- missed faces: the second pass and the fallback ------------------------------------------------
def second_pass_misses(sets: dict) -> dict:
    """Images with no face found (the face embed_paths would embed), without and with the second pass."""
    from facespace import FacePipeline
    from facespace.evaluation.cache import cached_faces

    images = {"pointing04": sets["p04-matched"][0].paths(), "lfw-dev": sets["lfw-dev"][0].paths(),
              "celeba-299": sorted((DATA / "celeba-299" / "faces").glob("*/*.jpg"))}
    if "lfw-test" in sets:
        images["lfw-test"] = sets["lfw-test"][0].paths()
    out = {}
    for name, paths in images.items():
        counts = {mode: sum(not face.detected for face, _ in cached_faces(FacePipeline(second_pass=mode), paths))
                  for mode in ("off", "relaxed")}
        out[name] = {"images": len(paths), "missed_first_pass_only": counts["off"],
                     "missed_with_second_pass": counts["relaxed"]}
    return out


def fallback_check(sets: dict, datas: dict) -> dict:
    """For pairs with an image still missed after both passes: accuracy at the calibrated threshold
    with the centre-crop fallback and with the whole image (LFW view 1 and Pointing'04)."""
    from facespace import FacePipeline
    from facespace.imageio import load_image
    from facespace.pipeline import centre_face, whole_face

    out = {}
    for fallback in ("centre", "whole"):
        pipe = FacePipeline(align="margin", fallback=fallback)
        right = total = 0
        for name in ("lfw-dev", "p04-matched"):
            pairs, _ = sets[name]
            data = datas[name]
            missed = {i for i, ok in enumerate(data.detected) if not ok}
            vectors = data.vectors(MODELS[0], "margin", False).copy()
            for i in missed:
                image = load_image(data.paths[i])
                face = whole_face(image.shape) if fallback == "whole" else centre_face(image.shape, 0.64)
                vectors[i] = pipe.embed_faces([image], [face])[0][0]
            for a, b, same in zip(pairs.first, pairs.second, pairs.same):
                ia, ib = data.index[a], data.index[b]
                if ia in missed or ib in missed:
                    total += 1
                    right += int((np.sum((vectors[ia] - vectors[ib]) ** 2) <= pipe.threshold) == same)
        out[fallback] = {"pairs": total, "accuracy": right / total if total else None}
    return out


# -- presets: the views each holds and its threshold ----------------------------------------------
#: The rules behind the presets (names of :func:`rules`). ``fast`` and ``balanced`` take the
#: single-view crop with the best mean over the development columns (:data:`DEV_COLUMNS`);
#: ``accurate`` is set by :func:`choose_accurate` to the best fused rule by the same mean.
PRESET_RULES = {"fast": "upright", "balanced": "upright", "accurate": "upright+align+flip & casia-margin+flip x0.3"}
#: A preset's own detector (the others: MTCNN) and why: chosen by benchmarks/fast_detector.py on development data.
PRESET_DETECTORS = {"fast": ("blazeface-onet", (
    "; detector 'blazeface-onet': BlazeFace short range finds the faces, MTCNN's O-Net measures each "
    'box and its five landmarks again, the relaxed MTCNN pass where it finds none '
    '(benchmarks/results/fast_detector.md, development data only: detection 3.8 against 13.0 CPU ms '
    'an LFW image, 2.4x the images per CPU second end to end; 10-fold accuracy against MTCNN: LFW '
    "pairsDevTrain 99.41/99.00, pairsDevTest 98.80/98.90, Pointing'04 matched 97.47/96.77, frontal-"
    'vs-turned 97.75/96.77; BlazeFace alone lost a point on turned faces, 95.72)'))}
#: The single-view crops a default may be: those that frame a face alike at any resolution. The
#: ``margin`` crop's absolute 32 px margin frames a 40 px video face and a 400 px portrait face very
#: differently (the Hamilton clip's genuine distances 1.45 against 0.65-0.8 with ``upright``); the
#: development sets, whose faces are all about one size, cannot show that.
SCALE_FREE_CROPS = ("align", "upright")
#: The development columns a rule is chosen by (LFW view 2 is never one).
DEV_COLUMNS = [("p04-matched", "frontal"), ("p04-matched", "turned"), ("p04-cross", "frontal"),
               ("p04-cross", "turned"), ("lfw-dev", "all")]


def dev_mean(by_set: dict) -> float:
    return float(np.mean([by_set[s][k]["accuracy"] for s, k in DEV_COLUMNS]))


def choose_rules(result: dict) -> dict:
    """The preset rules by the development mean: the best single view, and the best fused rule."""
    table = result["rules"]
    single = max(SCALE_FREE_CROPS, key=lambda r: dev_mean(table[r]))
    fused = max((r for r in table if "&" in r), key=lambda r: dev_mean(table[r]))
    return {"fast": single, "balanced": single, "accurate": fused,
            "dev_means": {r: round(100 * dev_mean(t), 3) for r, t in table.items()}}


def preset_views(name: str) -> list[dict]:
    m, c = MODELS
    rule = PRESET_RULES[name]
    if rule in ("align", "margin", "upright"):
        return [{"model": m, "align": rule}]
    lam = float(rule.rsplit("x", 1)[1])
    crops = ("upright", "align") if rule.startswith("upright+align") else ("upright",)
    return [{"model": m, "align": crop, "flip": True, "weight": round((1 - lam) / len(crops), 4)} for crop in crops] + \
        [{"model": c, "align": "margin", "flip": True, "weight": lam}]


def calibrate(rule, data: SetData, sets: dict) -> dict:
    """Best-accuracy threshold on LFW pairsDevTrain.txt, checked on pairsDevTest.txt."""
    from facespace.evaluation.protocol import accuracy_at, best_accuracy_threshold

    pairs, selections = sets["lfw-dev"]
    ia = np.array([data.index[p] for p in pairs.first])
    ib = np.array([data.index[p] for p in pairs.second])
    d = rule(data, ia, ib)
    train, test = selections["train"], selections["test"]
    threshold, train_acc = best_accuracy_threshold(d[train], pairs.same[train])
    return {"threshold": round(float(threshold), 4), "train_accuracy": train_acc,
            "test_accuracy": accuracy_at(d[test], pairs.same[test], threshold)}


def time_presets(n: int = 24) -> dict:
    """Milliseconds per face of each preset's embedding (crops made, networks run), one process."""
    import time

    from facespace import FacePipeline
    from facespace.imageio import load_image

    images = [load_image(p) for p in sorted((DATA / "lfw" / "lfw-deepfunneled").glob("A*/*.jpg"))[:n]]
    out = {}
    for name in PRESET_RULES:
        pipe = FacePipeline(preset=name)
        faces = [pipe.detect_arrays([img])[0][0] for img in images]
        pipe.embed_faces(images[:2], faces[:2])  # load the networks
        start = time.perf_counter()
        pipe.embed_faces(images, faces)
        out[name] = round(1000 * (time.perf_counter() - start) / n, 1)
    return out


def write_presets(sets: dict, datas: dict, timing: dict) -> dict:
    from facespace.presets import PRESETS

    presets = {}
    for name in PRESETS:
        rule = rules()[PRESET_RULES[name]]
        cal = calibrate(rule, datas["lfw-dev"], sets)
        backend = "onnx-int8" if name == "fast" else None  # None: the float default runtime of the device
        presets[name] = {"views": preset_views(name), "backend": backend, "threshold": cal["threshold"],
                         **({"detector": PRESET_DETECTORS[name][0]} if name in PRESET_DETECTORS else {}),
                         "ms_per_face": timing.get(name),
                         "source": f"rule {PRESET_RULES[name]!r} chosen on Pointing'04 + LFW view 1 "
                                   f"(benchmarks/results/robust_dev.md); threshold: best accuracy on LFW "
                                   f"pairsDevTrain.txt ({100 * cal['train_accuracy']:.2f}%), "
                                   f"{100 * cal['test_accuracy']:.2f}% on pairsDevTest.txt"
                                   + (" (float embeddings; int8 differ by cosine ~0.998)" if name == "fast" else "")
                                   + (PRESET_DETECTORS[name][1] if name in PRESET_DETECTORS else "")}
    return {"about": "Written by `python benchmarks/robust_dev.py --write-presets` from development data only.",
            "presets": presets}


def reject_curves(sets: dict, datas: dict, rule, model_dict: dict) -> dict:
    from facespace.evaluation.protocol import reject_curve
    from facespace.quality import QualityModel

    model = QualityModel.from_dict(model_dict)
    out = {}
    for name, (pairs, _) in sets.items():
        data = datas[name]
        q = np.where(data.detected, model.score_features(data.features), 0.0)
        _, ia, ib = pair_features(data, pairs)
        out[name] = reject_curve(rule(data, ia, ib), pairs.same, pairs.folds, np.minimum(q[ia], q[ib]))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--compute", action="store_true", help="only embed every view into the cache")
    p.add_argument("--write-presets", action="store_true",
                   help="also time the presets and write src/facespace/data/{quality,presets}.json")
    args = p.parse_args(argv)
    if args.compute:
        compute(COMPUTE_ORDER)
        return 0
    sets = pair_sets()
    datas = load_data(sets)
    result = evaluate_all(sets, datas, {})
    result["chosen"] = chosen = choose_rules(result)
    if (chosen["balanced"], chosen["accurate"]) != (PRESET_RULES["balanced"], PRESET_RULES["accurate"]):
        print(f"note: the development mean now chooses {chosen['balanced']!r} and {chosen['accurate']!r}; "
              "update PRESET_RULES (and preset_views) to match", flush=True)
    default_rule = rules()[PRESET_RULES["balanced"]]
    quality = fit_quality(sets, datas, default_rule)
    result["quality_model"] = quality
    result["reject_curves"] = reject_curves(sets, datas, default_rule, quality)
    result["second_pass"] = second_pass_misses(sets)
    result["fallback"] = fallback_check(sets, datas)
    if args.write_presets:
        result["ms_per_face"] = timing = time_presets()
        presets = write_presets(sets, datas, timing)
        result["presets"] = presets
        data_dir = REPO / "src" / "facespace" / "data"
        (data_dir / "quality.json").write_text(json.dumps(quality, indent=1) + "\n")
        (data_dir / "presets.json").write_text(json.dumps(presets, indent=1) + "\n")
    result["machine"] = __import__("facespace.evaluation.report", fromlist=["machine_info"]).machine_info()
    (RESULTS / "robust_dev.json").write_text(json.dumps(result, indent=1, default=float))
    text = "\n".join(markdown(result))
    (RESULTS / "robust_dev.md").write_text(text + "\n")
    plot(result, RESULTS / "robust_dev.png")
    print(text)
    return 0

if __name__ == "__main__":
    sys.exit(main())
