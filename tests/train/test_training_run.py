"""A short real run on celeba-299: the loss falls and the active-triplet fraction changes."""

import csv

import numpy as np
import pytest

from conftest import SHARED
from facespace_train.config import TrainConfig
from facespace_train.trainer import Trainer

FACES = SHARED / "celeba-299" / "faces"
LFW = SHARED / "lfw"


@pytest.mark.skipif(not FACES.is_dir(), reason="celeba-299 not available")
def test_short_celeba_run(tmp_path):
    cfg = TrainConfig(data=str(FACES), max_identities=24, arch="nns2", input_size=40, p=8, k=4, steps=40,
                      optimizer="adagrad", lr=0.05, mining="semihard", log_every=1, checkpoint_every=0,
                      out_dir=str(tmp_path), quiet=True, device="cpu", seed=0,
                      lfw_dir=str(LFW) if (LFW / "pairs.txt").exists() else None, eval_pairs=100)
    summary = Trainer(cfg).train()
    rows = list(csv.DictReader(open(tmp_path / "train_log.csv")))
    loss = np.array([float(r["loss"]) for r in rows])
    active = np.array([float(r["active_fraction"]) for r in rows])
    assert len(rows) == 40
    assert loss[-10:].mean() < loss[:10].mean()
    assert abs(active[-10:].mean() - active[:10].mean()) > 0.02
    assert (tmp_path / "model_final.pt").exists() and (tmp_path / "checkpoint_last.pt").exists()
    if cfg.lfw_dir:
        assert 0.0 <= summary["final_eval"]["lfw_best_acc"] <= 1.0
