"""Issue-2 acceptance: verification on LFW fold 1 with the registered threshold.

The threshold stored in ``pretrained.toml`` was calibrated once on LFW view 1
(pairsDevTrain.txt, ``benchmarks/calibrate.py``); here it is applied unchanged
to the 600 pairs of fold 1 of view 2, embedded from scratch with the default
pipeline (a fresh cache, so nothing precomputed is trusted).
"""

from __future__ import annotations

import numpy as np

from facespace.comparison import squared_distance
from facespace.evaluation.cache import embed_paths
from facespace.evaluation.pairs import read_lfw_pairs

from conftest import DATA, LFW


def test_fold1_accuracy_with_registered_threshold(pipeline, tmp_path):
    pairs = read_lfw_pairs(DATA / "lfw" / "pairs.txt", LFW)
    fold1 = pairs.subset(pairs.folds == pairs.folds.min())
    assert len(fold1) == 600 and fold1.same.sum() == 300
    found = embed_paths(pipeline, fold1.paths(), progress=False, cache_root=tmp_path)
    index = {path: i for i, path in enumerate(found.paths)}
    first = found.embeddings[[index[p] for p in fold1.first]]
    second = found.embeddings[[index[p] for p in fold1.second]]
    distances = squared_distance(first, second)
    accuracy = float(np.mean((distances <= pipeline.threshold) == fold1.same))
    print(f"LFW fold 1: accuracy {accuracy:.4f} at registered threshold {pipeline.threshold}, "
          f"{int((~found.detected).sum())} missed detections")
    assert accuracy >= 0.97
    assert int((~found.detected).sum()) <= 3
