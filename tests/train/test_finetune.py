"""Fine-tuning a pretrained embedder: BN statistics frozen, parts frozen, fine-tune defaults."""

import types

import pytest
import torch
from torch import nn

from facespace_train.config import FINETUNE_DEFAULTS, SCRATCH_DEFAULTS, TrainConfig, make_config
from facespace_train.trainer import Trainer, freeze_prefixes


@pytest.fixture
def fake_pretrained(monkeypatch):
    """``pretrained="fake"`` loads a small-input Inception-ResNet-v1 with non-trivial BN statistics."""
    import facespace.pretrained.loader
    import facespace.pretrained.registry
    from facespace.networks.inception_resnet_v1 import InceptionResnetV1

    def get_config(name, kind):
        return types.SimpleNamespace(name=name, input_size=96, normalisation="prewhiten")

    def load_embedder(name, device="cpu"):
        torch.manual_seed(0)
        model = InceptionResnetV1(embedding_size=16, dropout=0.2)
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
        return model.to(device).eval()

    monkeypatch.setattr(facespace.pretrained.registry, "get_config", get_config)
    monkeypatch.setattr(facespace.pretrained.loader, "load_embedder", load_embedder)


def finetune_config(data, out, **kw):
    base = dict(data=str(data), pretrained="fake", p=2, k=2, steps=1, mining="random", log_every=1,
                checkpoint_every=0, out_dir=str(out), quiet=True, device="cpu", seed=0, lr=1e-3)
    base.update(kw)
    return TrainConfig(**base)


def bn_buffers(model):
    return {name: buf.clone() for name, buf in model.named_buffers()
            if name.endswith(("running_mean", "running_var", "num_batches_tracked"))}


def test_finetune_defaults():
    scratch, finetune = TrainConfig(), TrainConfig(pretrained="facenet-msceleb-128")
    for name, value in SCRATCH_DEFAULTS.items():
        assert getattr(scratch, name) == value
    for name, value in FINETUNE_DEFAULTS.items():
        assert getattr(finetune, name) == value
    assert finetune.bn_mode == "frozen" and finetune.lr <= 1e-4
    # explicit values win, also through make_config (CLI / TOML)
    cfg = make_config({"pretrained": "facenet-msceleb-128", "lr": 1, "bn_mode": "train", "freeze": ""})
    assert (cfg.lr, cfg.bn_mode, cfg.freeze, cfg.optimizer) == (1.0, "train", "", "adam")
    with pytest.raises(ValueError):
        make_config({"bn_mode": "sometimes"})
    assert freeze_prefixes("stem, block35")[-1] == "repeat_1"


def test_finetune_step_keeps_bn_statistics(tiny_faces, tmp_path, fake_pretrained):
    trainer = Trainer(finetune_config(tiny_faces, tmp_path / "ft", freeze=""))
    assert trainer.cfg.bn_mode == "frozen"
    before_bn = bn_buffers(trainer.model)
    before_w = {k: v.clone() for k, v in trainer.model.state_dict().items() if k.endswith("weight")}
    trainer.train_step()
    after_bn = bn_buffers(trainer.model)
    assert before_bn.keys() == after_bn.keys() and before_bn
    for name in before_bn:
        assert torch.equal(before_bn[name], after_bn[name]), name
    # the step did train: weights moved
    after_w = trainer.model.state_dict()
    assert any(not torch.equal(before_w[k], after_w[k]) for k in before_w)
    # and the pretrained model's dropout was replaced by the configured rate (0.0)
    assert all(m.p == 0.0 for m in trainer.model.modules() if isinstance(m, nn.Dropout))


def test_bn_train_mode_does_update_statistics(tiny_faces, tmp_path, fake_pretrained):
    """The control for the test above: with bn_mode=train one step moves the running statistics."""
    trainer = Trainer(finetune_config(tiny_faces, tmp_path / "tr", bn_mode="train", freeze=""))
    before = bn_buffers(trainer.model)
    trainer.train_step()
    after = bn_buffers(trainer.model)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.endswith("running_mean"))


def test_frozen_affine_and_frozen_blocks(tiny_faces, tmp_path, fake_pretrained):
    trainer = Trainer(finetune_config(tiny_faces, tmp_path / "fa", bn_mode="frozen_affine",
                                      freeze="stem,block35"))
    model = trainer.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.train_step()
    after = model.state_dict()
    for name in before:
        frozen = name.startswith(("conv2d_", "repeat_1.")) or ".bn." in name or name.startswith("bottleneck_bn")
        if frozen:
            assert torch.equal(before[name], after[name]), name
    assert not torch.equal(before["repeat_2.0.conv2d_1x1.weight"], after["repeat_2.0.conv2d_1x1.weight"])
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert all(id(p) in trainable for g in trainer.optimizer.param_groups for p in g["params"])
    assert not model.conv2d_1a_3x3.conv.weight.requires_grad


def test_unknown_freeze_name(tiny_faces, tmp_path, fake_pretrained):
    with pytest.raises(ValueError, match="no module"):
        Trainer(finetune_config(tiny_faces, tmp_path / "x", freeze="nonsense"))
