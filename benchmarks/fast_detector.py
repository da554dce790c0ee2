"""Which detector the ``fast`` preset uses: MTCNN, BlazeFace or BlazeFace full range, each with the
pipeline's relaxed MTCNN second pass where it finds nothing.

    python benchmarks/fast_detector.py [--images 200] [--threads 1]
    python benchmarks/fast_detector.py --fit-proposals     # blazeface.PROPOSAL_SHIFT / _SCALE

For each detector, with the ``fast`` preset's crop and int8 network:

* cost on the first ``--images`` LFW images (those ``speed.py`` runs end to end): CPU ms per image
  of decoding, of detection (with the second pass where nothing was found) and of the int8
  embedding of the chosen face, and end-to-end images per CPU second (``embed_images``), all on
  one thread, measured with ``time.process_time`` so other sessions' load counts less;
* accuracy on development data only: LFW view 1 (``pairsDevTrain.txt``, ``pairsDevTest.txt``,
  10 folds) and the Pointing'04 pose-matched and frontal-versus-turned pairs. LFW view 2
  (``pairs.txt``) is never read here.

Writes benchmarks/results/fast_detector.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from _paths import DATA, RESULTS
from _recognition_common import machine, machine_note, write_result

DETECTORS = ("mtcnn", "blazeface", "blazeface-full", "blazeface-onet")


def _pipeline(detector: str):
    from facespace import FacePipeline
    from facespace.pipeline import DetectorSettings

    return FacePipeline(preset="fast", detector=DetectorSettings(name=detector))


def _cpu(fn, repeats: int = 2):
    """The smallest CPU time of ``repeats`` calls of ``fn`` and its last result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.process_time()
        out = fn()
        best = min(best, time.process_time() - start)
    return best, out


def cost(detector: str, paths: list[str]) -> dict:
    """CPU ms per LFW image of each step of the fast preset with ``detector``."""
    from facespace.imageio import load_image

    pipe = _pipeline(detector)
    decode, images = _cpu(lambda: [load_image(p) for p in paths])
    pipe.detect_arrays(images[:1])  # load the networks before timing
    detect, faces = _cpu(lambda: [pipe.detect_arrays([im])[0] for im in images])
    crops = [pipe.crop(im, f[0]) for im, f in zip(images, faces) if f]
    embed, _ = _cpu(lambda: [pipe.embedder.embed_crops(c[None]) for c in crops])
    e2e, _ = _cpu(lambda: pipe.embed_images(paths, chunk=16), repeats=1)
    n = len(paths)
    return {"decode_cpu_ms": 1e3 * decode / n, "detect_cpu_ms": 1e3 * detect / n,
            "int8_embed_cpu_ms_per_face": 1e3 * embed / max(len(crops), 1),
            "images_without_face": n - len(crops), "e2e_images_per_cpu_s": n / e2e}


def dev_pairs() -> dict:
    """name -> pair set of every development set (no LFW view 2)."""
    from facespace.evaluation.pairs import read_lfw_pairs
    from facespace.evaluation.pointing04 import cross_pose_pairs, list_images, pose_pairs

    images = list_images(DATA / "pointing04")
    root = DATA / "lfw" / "lfw-deepfunneled"
    out = {name: read_lfw_pairs(DATA / "lfw" / f"{name}.txt", root).with_folds(10)
           for name in ("pairsDevTrain", "pairsDevTest")}
    out["p04-matched"] = pose_pairs(images)[0]
    out["p04-cross"] = cross_pose_pairs(images)[0]
    return out


def accuracy(detector: str, sets: dict) -> dict:
    """Fold accuracy, VAL@1e-3 and images without a face of the fast preset with ``detector``."""
    from facespace.evaluation.cache import embed_paths
    from facespace.evaluation.protocol import evaluate_pairs

    from facespace.evaluation.protocol import accuracy_at, best_accuracy_threshold

    pipe = _pipeline(detector)
    out, distances = {}, {}
    for name, pairs in sets.items():
        paths = sorted(set(pairs.first) | set(pairs.second))
        found = embed_paths(pipe, paths, progress=False)
        index = {str(p): i for i, p in enumerate(found.paths)}
        e = np.asarray(found.embeddings)
        a = e[[index[str(p)] for p in pairs.first]]
        b = e[[index[str(p)] for p in pairs.second]]
        distances[name] = np.sum((a - b) ** 2, axis=1)
        r = evaluate_pairs(distances[name], pairs.same, pairs.folds)
        out[name] = {"accuracy": r.accuracy, "val": r.val, "pairs": r.n_pairs, "missed": len(found.missed),
                     "accuracy_at_preset_threshold": accuracy_at(distances[name], pairs.same, pipe.threshold)}
    threshold, train = best_accuracy_threshold(distances["pairsDevTrain"], sets["pairsDevTrain"].same)
    out["threshold"] = {"preset": pipe.threshold, "best_on_dev_train": float(threshold), "dev_train_accuracy": train,
                        "dev_test_accuracy": accuracy_at(distances["pairsDevTest"], sets["pairsDevTest"].same,
                                                         threshold)}
    return out


def markdown(result: dict) -> str:
    sets = [s for s in next(iter(result["accuracy"].values())) if s != "threshold"]
    lines = ["# The fast preset's detector", "",
             machine_note(result["machine"], result["load_average_before"]) +
             f" Load after: {result['load_average_after']}. CPU times on one thread.", "",
             f"Cost on the first {result['images']} LFW images (CPU ms per image; the embedding per face):", "",
             "| detector | decode | detect (+ second pass) | int8 embedding | end to end, images per CPU s |",
             "|---|---|---|---|---|"]
    for d, c in result["cost"].items():
        lines.append(f"| {d} | {c['decode_cpu_ms']:.2f} | {c['detect_cpu_ms']:.2f} | "
                     f"{c['int8_embed_cpu_ms_per_face']:.2f} | {c['e2e_images_per_cpu_s']:.1f} |")
    lines += ["", "Development accuracy (fold accuracy %, VAL@FAR=1e-3 %, images without a face after both "
              "passes), fast preset (upright crop, int8):", "",
              "| detector | " + " | ".join(sets) + " |", "|---|" + "---|" * len(sets)]
    for d, acc in result["accuracy"].items():
        lines.append(f"| {d} | " + " | ".join(f"{acc[s]['accuracy'] * 100:.2f} / {acc[s]['val'] * 100:.1f} / "
                                              f"{acc[s]['missed']}" for s in sets) + " |")
    lines += ["", "Accuracy at the preset's threshold, and the best-accuracy threshold on pairsDevTrain.txt "
              "(its accuracy there, and on pairsDevTest.txt):", "",
              "| detector | " + " | ".join(sets) + " | best threshold (DevTrain) | DevTrain / DevTest |",
              "|---|" + "---|" * (len(sets) + 2)]
    for d, acc in result["accuracy"].items():
        t = acc["threshold"]
        lines.append(f"| {d} | " + " | ".join(f"{acc[s]['accuracy_at_preset_threshold'] * 100:.2f}" for s in sets)
                     + f" | {t['best_on_dev_train']:.4f} | {t['dev_train_accuracy'] * 100:.2f} / "
                       f"{t['dev_test_accuracy'] * 100:.2f} |")
    lines += ["", f"Command: `{result['command']}`", ""]
    return "\n".join(lines)


def fit_proposals(n: int = 150) -> dict:
    """The shift (fractions of the side) and scale that take BlazeFace's box to MTCNN's final box:
    medians over ``n`` celeba-299 development photos (seeded sample) where both find a face."""
    import random

    from facespace.detection.blazeface import BlazeFace
    from facespace.detection.mtcnn import MTCNN
    from facespace.imageio import load_image

    files = sorted((DATA / "celeba-299").glob("**/*.jpg"))
    random.Random(2).shuffle(files)
    mtcnn, blaze = MTCNN.pretrained(), BlazeFace("short")
    pairs = []
    for path in files[:n]:
        image = load_image(path)
        a, b = mtcnn.detect_one(image), blaze.detect([image])[0]
        if len(a) and len(b):
            pairs.append((a.boxes[0], b.boxes[0]))
    ref, got = (np.array(side) for side in zip(*pairs))
    side = (got[:, 2:] - got[:, :2]).mean(axis=1)
    shift = np.median(((ref[:, :2] + ref[:, 2:]) - (got[:, :2] + got[:, 2:])) / 2 / side[:, None], axis=0)
    scale = np.median((ref[:, 2:] - ref[:, :2]).mean(axis=1) / side)
    return {"photos": len(pairs), "shift": [round(float(v), 3) for v in shift], "scale": round(float(scale), 3)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--detectors", default=",".join(DETECTORS))
    parser.add_argument("--fit-proposals", action="store_true", help="only fit blazeface.PROPOSAL_SHIFT / _SCALE")
    args = parser.parse_args(argv)
    if args.fit_proposals:
        print(fit_proposals())
        return 0
    from facespace.runtime.threads import set_thread_default

    set_thread_default(args.threads)
    before = [round(x, 2) for x in os.getloadavg()]
    lfw = sorted(str(p) for p in (DATA / "lfw" / "lfw-deepfunneled").glob("*/*.jpg"))[: args.images]
    detectors = args.detectors.split(",")
    sets = dev_pairs()
    result = {"benchmark": "fast_detector", "images": len(lfw), "threads": args.threads,
              "load_average_before": before,
              "cost": {d: cost(d, lfw) for d in detectors},
              "accuracy": {d: accuracy(d, sets) for d in detectors},
              "load_average_after": [round(x, 2) for x in os.getloadavg()], "machine": machine(),
              "command": f"OMP_NUM_THREADS={args.threads} python benchmarks/fast_detector.py --images {args.images}"
                         f" --threads {args.threads}"}
    write_result("fast_detector.json", result)
    (RESULTS / "fast_detector.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
