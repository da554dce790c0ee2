"""N steps straight == N/2 steps, checkpoint, a fresh trainer resuming, N/2 steps."""

import csv

import pytest
import torch

from facespace_train.config import TrainConfig
from facespace_train.trainer import Trainer


def config(data, out, **kw):
    base = dict(data=str(data), arch="nns2", input_size=32, embedding_size=16, p=3, k=3, steps=6,
                optimizer="sgd", lr=0.05, momentum=0.9, schedule="cosine", warmup_steps=2, dropout=0.2,
                mining="random", grad_clip=1.0, checkpoint_every=3, keep_checkpoints=True, log_every=1,
                out_dir=str(out), quiet=True, device="cpu", seed=3)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("optimizer", ["sgd", "adagrad", "adam"])
def test_resume_continues_exactly(tiny_faces, tmp_path, optimizer):
    straight = Trainer(config(tiny_faces, tmp_path / "a", optimizer=optimizer))
    straight.train()
    resumed = Trainer(config(tiny_faces, tmp_path / "b", optimizer=optimizer,
                             resume=str(tmp_path / "a" / "checkpoint_0000003.pt")))
    assert resumed.step == 3
    resumed.train()
    assert resumed.step == 6
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # and the optimiser moved the weights at all
    fresh = Trainer(config(tiny_faces, tmp_path / "c", optimizer=optimizer, steps=0)).model.state_dict()
    assert any(not torch.equal(a[k], fresh[k]) for k in a if a[k].is_floating_point())


def test_auto_resume_truncates_logs(tiny_faces, tmp_path):
    cfg = config(tiny_faces, tmp_path / "run", keep_checkpoints=False, checkpoint_every=2, steps=4)
    Trainer(cfg).train()
    rows = list(csv.DictReader(open(tmp_path / "run" / "train_log.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    # a longer run resuming from checkpoint_last continues at step 4
    longer = Trainer(config(tiny_faces, tmp_path / "run", keep_checkpoints=False, steps=5, resume="auto"))
    assert longer.step == 4
    longer.train()
    rows = list(csv.DictReader(open(tmp_path / "run" / "train_log.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5]
