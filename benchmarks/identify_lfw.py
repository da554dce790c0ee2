"""Open- and closed-set identification on LFW (writes benchmarks/results/identify_lfw.json).

Gallery: the first image of each of the 1,680 people with at least two
images. Mated probes: their other images (rank-1 / rank-5 accuracy).
Non-mated probes: the first image of each of the 4,069 people with a single
image. Open-set: the threshold at which 1% of non-mated probes are accepted
(FAR 1%, set on those probes), and the detection-and-identification rate
(DIR: mated probes ranked first *and* within the threshold) there; also DIR
at the threshold the library's calibration gives for FAR 1%.

``--calibrate`` first fits the library calibration (logistic + impostor-
distance FAR table) on LFW View 1 training pairs (pairsDevTrain.txt) and the
different-person pairs among their images, and stores it in
``src/facespace/data/identify_calibration.json``.

Embeddings come from the evaluation cache (``embed_paths``).

    python benchmarks/identify_lfw.py [--calibrate] [--model NAME] [--index exact]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from _recognition_common import PAIRS_DEV_TRAIN, lfw_embeddings, write_result


def calibrate(paths, embeddings, labels, pipeline, out_path):
    from facespace.evaluation.pairs import read_pairs
    from facespace.calibration import Calibration

    where = {p.resolve(): i for i, p in enumerate(paths)}
    pairs = read_pairs(PAIRS_DEV_TRAIN, paths[0].parents[1])
    a = np.array([where[p.resolve()] for p in pairs.first])
    b = np.array([where[p.resolve()] for p in pairs.second])
    d_pairs = np.sum((embeddings[a] - embeddings[b]) ** 2, axis=1)
    # all different-person pairs among the View-1 training images: a deep impostor tail for the FAR table
    rows = np.unique(np.r_[a, b])
    x, y = embeddings[rows], labels[rows]
    d_all = np.clip(2 - 2 * x @ x.T, 0, 4)
    iu = np.triu_indices(len(rows), 1)
    impostor = d_all[iu][y[iu[0]] != y[iu[1]]]
    fitted = Calibration.fit(d_pairs, pairs.same, model=pipeline.model_name)
    table = Calibration.fit(np.r_[d_pairs[pairs.same], impostor],
                            np.r_[np.ones(int(pairs.same.sum())), np.zeros(len(impostor))], model="x").far_table
    cal = Calibration(model=pipeline.model_name, slope=fitted.slope, midpoint=fitted.midpoint, far_table=table,
                      source=f"LFW pairsDevTrain.txt ({len(d_pairs)} pairs) logistic fit; FAR table from "
                             f"{len(impostor):,} different-person pairs among its {len(rows)} images; "
                             f"preprocessing {pipeline.preprocessing_id}")
    cal.save(out_path)
    print(f"calibration for {cal.model}: slope {cal.slope:.3f}, midpoint {cal.midpoint:.3f}; saved to {out_path}")
    return cal


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--index", default="exact", help="search structure (default exact)")
    parser.add_argument("--calibrate", action="store_true", help="fit and store the calibration first")
    parser.add_argument("--far", type=float, default=0.01)
    parser.add_argument("--limit", type=int, default=None, help="only the first N people (smoke test)")
    args = parser.parse_args()
    if args.limit and args.calibrate:
        parser.error("--calibrate needs all of LFW; drop --limit")

    from facespace.calibration import Calibration, default_calibration_path, threshold_at_far
    from facespace.gallery import Identifier

    paths, labels, emb, detected, pipeline = lfw_embeddings(args.model, limit=args.limit)
    if args.calibrate:
        calibrate(paths, emb, labels, pipeline, default_calibration_path())
    counts = np.bincount(labels)
    first = np.r_[True, labels[1:] != labels[:-1]]
    multi = counts[labels] >= 2
    gallery_rows = np.flatnonzero(first & multi)
    mated_rows = np.flatnonzero(~first & multi)
    nonmated_rows = np.flatnonzero(counts[labels] == 1)
    names = [str(l) for l in labels[gallery_rows]]
    cal = Calibration.load(pipeline.model_name, threshold=pipeline.threshold)
    ident = Identifier(names, np.arange(len(gallery_rows)), emb[gallery_rows], cal, far=args.far, index=args.index)

    start = time.perf_counter()
    mated = ident.search(emb[mated_rows], k=5)
    nonmated = ident.search(emb[nonmated_rows], k=1)
    seconds = time.perf_counter() - start
    truth = [str(l) for l in labels[mated_rows]]
    rank1 = np.array([r.candidates[0].name == t for r, t in zip(mated, truth)])
    rank5 = np.array([t in {c.name for c in r.candidates} for r, t in zip(mated, truth)])
    mated_d = np.array([r.best.distance for r in mated])
    impostor_d = np.array([r.best.distance for r in nonmated])
    t_emp = threshold_at_far(impostor_d, args.far)
    dir_emp = float(np.mean(rank1 & (mated_d <= t_emp)))
    far_lib = float(np.mean(impostor_d <= ident.threshold))
    dir_lib = float(np.mean(rank1 & (mated_d <= ident.threshold)))
    result = {
        "benchmark": "identify_lfw", "model": pipeline.model_name, "preprocessing_id": pipeline.preprocessing_id,
        "gallery_identities": len(gallery_rows), "mated_probes": len(mated_rows), "nonmated_probes": len(nonmated_rows),
        "images_without_detection": int((~detected).sum()),
        "rank1": float(rank1.mean()), "rank5": float(rank5.mean()),
        "open_set": {"target_far": args.far, "threshold_set_on_nonmated": t_emp, "dir_at_far": dir_emp,
                     "calibrated_threshold": ident.threshold, "calibration_source": cal.source,
                     "far_at_calibrated_threshold": far_lib, "dir_at_calibrated_threshold": dir_lib},
        "index": ident.index.kind if hasattr(ident.index, "kind") else args.index,
        "search_seconds": round(seconds, 3),
    }
    print(f"rank-1 {result['rank1']:.4f}  rank-5 {result['rank5']:.4f}  DIR@FAR{args.far:g} {dir_emp:.4f} "
          f"(threshold {t_emp:.3f}); calibrated threshold {ident.threshold:.3f}: FAR {far_lib:.4f} DIR {dir_lib:.4f}")
    write_result("identify_lfw.json" if not args.limit else f"identify_lfw_first{args.limit}.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
