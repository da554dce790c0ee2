"""int8 quantisation of an embedder: calibrate, then check LFW accuracy and speed against float.

    python benchmarks/int8.py --calibrate        # measure ranges, write src/facespace/data/int8/<model>.json
    python benchmarks/int8.py [--no-cache]       # LFW view 1 + 2 and speed, write benchmarks/results/int8.json

Calibration: the registered crop of every ``--stride``-th image of
``../shared/data/celeba-299`` (identities disjoint from LFW), min/max
activation ranges (``facespace.runtime.quantize.measure_ranges``).

Check: the 10-fold protocol with the torch backend (float) and the ``onnx-int8``
backend, same detections and crops (the evaluation cache, or all detected now with
``--no-cache``), on LFW view 1
``pairsDevTrain.txt`` and ``pairsDevTest.txt`` (development: they decide) and on view 2
``pairs.txt`` (the test: reported only); the largest embedding difference and the smallest
cosine between the two on the view-2 crops; faces/s at batch 32 and batch 1 for torch,
ONNX float and ONNX int8 at ``--threads``. The library's rule: int8 is adopted only where
development accuracy drops by at most 0.1 points on each view-1 file.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from _paths import DATA, REPO, RESULTS

RANGES_DIR = REPO / "src" / "facespace" / "data" / "int8"
#: The development pairs that decide adoption (LFW view 1).
DEV_PAIRS = ("pairsDevTrain.txt", "pairsDevTest.txt")


def face_crops(pipeline, paths) -> np.ndarray:
    """The pipeline's crop of the face nearest each image's centre (images without a face skipped)."""
    from facespace.face_choice import choose_index
    from facespace.types import Face

    crops = []
    for path in paths:
        image = pipeline.load(path)
        found = pipeline.detector.detect([image])[0]
        i = choose_index(found.boxes, image.shape, "central")
        if i is not None:
            face = Face(box=found.boxes[i], score=float(found.scores[i]), landmarks=found.landmarks[i])
            crops.append(pipeline.crop(image, face))
    return np.stack(crops)


def calibrate(model: str, stride: int, batch: int) -> Path:
    from facespace import FacePipeline
    from facespace.runtime.onnx_backend import export_embedder
    from facespace.runtime.preprocess import normalise
    from facespace.runtime.quantize import measure_ranges
    import tempfile

    pipeline = FacePipeline(model=model)
    images = sorted((DATA / "celeba-299" / "faces").rglob("*.jpg"))[::stride]
    crops = face_crops(pipeline, images)
    crops = crops[: len(crops) // batch * batch]
    x = normalise(crops, pipeline.embedder.config.normalisation).numpy()
    RANGES_DIR.mkdir(parents=True, exist_ok=True)
    out = RANGES_DIR / f"{pipeline.model_name}.json"
    with tempfile.TemporaryDirectory() as tmp:
        float_path = export_embedder(pipeline.model_name, Path(tmp) / "float.onnx")
        measure_ranges(float_path, (x[i:i + batch] for i in range(0, len(x), batch)), out)
    print(f"calibrated on {len(crops)} celeba-299 crops -> {out}")
    return out


def rate(embedder, crops: np.ndarray, batch: int, repeats: int) -> float:
    """Median faces/s over ``repeats`` timed passes (after one warm-up) of ``crops`` in batches."""
    embedder.batch_size = batch
    embedder.embed_crops(crops[:batch])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        embedder.embed_crops(crops)
        times.append(time.perf_counter() - start)
    return round(len(crops) / float(np.median(times)), 2)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="facenet-msceleb-128")
    p.add_argument("--calibrate", action="store_true", help="measure and store the activation ranges first")
    p.add_argument("--stride", type=int, default=24, help="calibrate on every N-th celeba-299 image")
    p.add_argument("--threads", type=int, default=1, help="torch / ONNX Runtime threads for the speed check")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(RESULTS / "int8.json"))
    p.add_argument("--no-cache", action="store_true",
                   help="detect and embed every image now (the evaluation cache may hold another detector's boxes)")
    args = p.parse_args(argv)

    import torch

    from facespace import FacePipeline
    from facespace.embedding import Embedder
    from facespace.evaluation.pairs import find_lfw_layout, read_lfw_pairs
    from facespace.evaluation.report import machine_info, run_pairs

    if args.calibrate:
        calibrate(args.model, args.stride, batch=16)
    torch.set_num_threads(args.threads)
    images_dir, pairs_file = find_lfw_layout(DATA / "lfw")
    sets = {name: read_lfw_pairs(DATA / "lfw" / name, images_dir).with_folds(10, 0) for name in DEV_PAIRS}
    sets["pairs.txt (test)"] = read_lfw_pairs(pairs_file, images_dir)
    result = {"benchmark": "int8 quantisation", "model": args.model, "machine": machine_info(),
              "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "lfw": {}, "drops": {}}
    for name, pairs in sets.items():
        embedded = {}
        for backend in ("torch", "onnx-int8"):
            pipeline = FacePipeline(model=args.model, backend=backend)
            run = run_pairs(pipeline, pairs, progress=False, cache=not args.no_cache)
            embedded[backend] = run.embeddings.embeddings
            m = run.report
            result["lfw"].setdefault(name, {})[backend] = {
                "accuracy": m.accuracy, "accuracy_std": m.accuracy_std, "val": m.val, "auc": m.auc,
                "preprocessing_id": pipeline.preprocessing_id}
            print(f"{name} {backend}: {m.summary()}", flush=True)
        rows = result["lfw"][name]
        result["drops"][name] = round(100 * (rows["torch"]["accuracy"] - rows["onnx-int8"]["accuracy"]), 3)
    a, b = embedded["torch"], embedded["onnx-int8"]
    cos = np.sum(a * b, axis=1)
    drop = result["drops"]["pairs.txt (test)"]
    result["agreement"] = {"images": len(a), "max_abs_diff": float(np.abs(a - b).max()),
                           "min_cosine": float(cos.min()), "median_cosine": float(np.median(cos))}
    result["adoptable"] = bool(all(result["drops"][n] <= 0.1 for n in DEV_PAIRS))

    pipeline = FacePipeline(model=args.model)
    crops = face_crops(pipeline, pairs.paths()[:64])
    result["speed"] = {"threads": args.threads, "faces": len(crops)}
    for backend in ("torch", "onnx", "onnx-int8"):
        embedder = Embedder(args.model, backend=backend)
        result["speed"][backend] = {f"batch{bs}": rate(embedder, crops, bs, args.repeats) for bs in (32, 1)}
        print(backend, result["speed"][backend], flush=True)
    result["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"accuracy drops (points) {result['drops']}; min cosine {cos.min():.4f}; "
          f"adoptable on development pairs: {result['adoptable']}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
