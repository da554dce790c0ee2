"""Calibrate each embedder's verification threshold on LFW view 1 (pairsDevTrain.txt).

With the default pipeline settings (margin crop, no flip, default detector) the
best-accuracy squared-distance threshold on the 2,200 development training
pairs is printed per model, with its accuracy there and, as a check, on
pairsDevTest.txt. Paste the printed ``threshold = ...`` lines into
``src/facespace/pretrained.toml``.

    python benchmarks/calibrate.py
    python benchmarks/calibrate.py --limit-pairs 60     # a quick check
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _paths import DATA

DEFAULT_LFW = DATA / "lfw"


def main(argv=None) -> int:
    from facespace.pretrained.registry import list_models

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=str(DEFAULT_LFW), help="LFW folder (images, pairsDevTrain.txt)")
    p.add_argument("--train", help="calibration pairs (default: pairsDevTrain.txt under --root)")
    p.add_argument("--test", help="check pairs (default: pairsDevTest.txt under --root, if present)")
    p.add_argument("--models", default=",".join(list_models("embedder")), help="comma-separated embedders")
    p.add_argument("--limit-pairs", type=int, help="only this many pairs of each file (a quick check)")
    p.add_argument("--json", metavar="FILE", help="also write the results here")
    p.add_argument("--cache-dir", help="embedding cache (default: $FACESPACE_HOME/embeddings)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)

    from facespace.evaluation.pairs import find_lfw_layout, read_lfw_pairs
    from facespace.evaluation.protocol import accuracy_at, best_accuracy_threshold
    from facespace.evaluation.scoring import pair_distances
    from facespace.evaluation.cache import embed_paths
    from facespace.pipeline import FacePipeline

    root = Path(args.root)
    images_dir, train_file = find_lfw_layout(root, args.train or root / "pairsDevTrain.txt")
    test_file = Path(args.test) if args.test else root / "pairsDevTest.txt"
    train = read_lfw_pairs(train_file, images_dir)
    test = read_lfw_pairs(test_file, images_dir) if test_file.is_file() else None
    if args.limit_pairs:
        train = train.limit(args.limit_pairs)
        test = test.limit(args.limit_pairs) if test is not None else None

    rows = []
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        pipeline = FacePipeline(model=model, device=args.device)
        emb = embed_paths(pipeline, train.paths(), progress=not args.quiet, cache_root=args.cache_dir)
        distances = pair_distances(emb, train)
        threshold, train_acc = best_accuracy_threshold(distances, train.same)
        row = {"model": model, "preprocessing": pipeline.preprocessing_id, "threshold": round(threshold, 4),
               "train_pairs": len(train), "train_accuracy": train_acc, "train_missed": len(emb.missed),
               "registered_threshold": pipeline.embedder.config.threshold}
        if test is not None:
            emb_test = embed_paths(pipeline, test.paths(), progress=not args.quiet, cache_root=args.cache_dir)
            row["test_pairs"] = len(test)
            row["test_accuracy"] = accuracy_at(pair_distances(emb_test, test), test.same, threshold)
            row["test_accuracy_registered"] = accuracy_at(pair_distances(emb_test, test), test.same,
                                                          pipeline.embedder.config.threshold)
        rows.append(row)
        check = (f", {100 * row['test_accuracy']:.2f}% on {test_file.name} ({len(test)} pairs)"
                 if test is not None else "")
        print(f"{model}: threshold {threshold:.4f} -> {100 * train_acc:.2f}% on {train_file.name} "
              f"({len(train)} pairs, {row['train_missed']} missed detections){check}", flush=True)

    print("\n# for src/facespace/pretrained.toml" + (" (SUBSET: do not store)" if args.limit_pairs else ""))
    for row in rows:
        print(f"[models.{row['model']}]\nthreshold = {row['threshold']}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
