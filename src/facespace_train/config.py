"""Training configuration: one flat dataclass, loadable from TOML, every field also a CLI option.

This module imports nothing heavy (no torch), so the ``facespace`` CLI can build
its ``train`` options without importing the trainer.

A TOML file may group keys in tables (``[data]``, ``[model]``, ``[optim]``,
...); the table names are only for readability and are flattened away, and an
unknown key is an error. Command-line options override the file.
"""

import argparse
import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional


@dataclass
class TrainConfig:
    # data
    data: str = ""                      # root/<identity>/<image>
    input_size: Optional[int] = None    # square input side; None: the architecture's own size
    crop_fraction: float = 0.64         # centre crop: fraction of the shorter side (LFW 250px -> 160px)
    max_identities: Optional[int] = None
    min_images: int = 2                 # identities with fewer images are never sampled
    cache: bool = True                  # keep decoded (shrunk) images in memory
    workers: int = 0                    # DataLoader worker processes
    flip: bool = True
    scale_jitter: float = 0.1
    shift_jitter: float = 0.05
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    # model
    arch: str = "nns2"                  # nn1 nn2 nn3 nn4 nns1 nns2 inception_resnet_v1
    pretrained: Optional[str] = None    # registered embedder to fine-tune (facespace.pretrained.loader.load_embedder)
    embedding_size: int = 128
    batch_norm: bool = True             # BN after every conv of the paper networks (not in the paper)
    dropout: float = 0.0                # also replaces a pretrained model's own dropout rate
    normalisation: str = "fixed"        # fixed | prewhiten (a pretrained model's own setting wins)
    # fine-tuning controls (None: FINETUNE_DEFAULTS when `pretrained` is set, else SCRATCH_DEFAULTS)
    bn_mode: Optional[str] = None       # train | frozen (eval-mode BN: running stats fixed) | frozen_affine
    freeze: Optional[str] = None        # comma-separated parts kept fixed, e.g. "stem,block35" (see trainer)
    # loss and batches
    margin: float = 0.2
    mining: str = "semihard"            # semihard hard random batch_all
    fallback: str = "nearest_outside"   # semi-hard pairs with no semi-hard negative: nearest_outside hardest drop
    reduction: str = "mean"             # mean mean_active sum
    p: int = 16                         # identities per (global) batch
    k: int = 4                          # images per identity
    small_identities: str = "repeat"    # repeat | partial (identities with fewer than k images)
    # optimisation
    optimizer: Optional[str] = None     # adagrad (paper) sgd adam; None: adagrad, fine-tuning adam
    lr: Optional[float] = None          # None: 0.05, fine-tuning 1e-5
    momentum: float = 0.9
    weight_decay: float = 0.0
    grad_clip: float = 0.0              # max gradient norm; 0 disables
    schedule: str = "constant"          # constant step cosine
    warmup_steps: int = 0
    step_size: int = 1000               # step schedule: multiply by gamma every step_size steps
    gamma: float = 0.1
    min_lr_ratio: float = 0.0           # cosine floor as a fraction of lr
    steps: int = 1000
    time_budget_s: float = 0.0          # stop after this much training time (0: no limit)
    amp: bool = True                    # mixed precision (CUDA only; ignored on CPU)
    device: str = "auto"
    seed: int = 0
    threads: int = 0                    # torch CPU threads (0: leave torch's default)
    sync_bn: bool = False               # SyncBatchNorm under DDP
    # output
    out_dir: str = "runs/train"
    log_every: int = 10
    checkpoint_every: int = 500
    keep_checkpoints: bool = False      # keep every checkpoint, not only the last
    resume: Optional[str] = None        # checkpoint path, or "auto" for out_dir/checkpoint_last.pt
    # LFW evaluation
    lfw_dir: Optional[str] = None       # folder with pairs.txt and lfw-deepfunneled/
    eval_every: int = 0                 # steps; 0: only at the end
    eval_pairs: int = 600               # pairs in the periodic evaluation (0: all)
    eval_kfold: bool = False            # also report 10-fold accuracy
    quiet: bool = False

    def __post_init__(self) -> None:
        defaults = FINETUNE_DEFAULTS if self.pretrained else SCRATCH_DEFAULTS
        for name, value in defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, value)

    def augment_kwargs(self) -> dict:
        return {name: getattr(self, name) for name in
                ("flip", "scale_jitter", "shift_jitter", "brightness", "contrast", "saturation")}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Options whose default depends on the run kind. From scratch: the paper's AdaGrad at 0.05 with
# batch norm learning its statistics. Fine-tuning a pretrained embedder (``pretrained`` set): the
# pretrained BN statistics are kept (BN layers stay in eval mode; re-estimating them from small
# P x K batches of another dataset is what wrecks a pretrained model within a few steps), the stem
# is frozen, and Adam at 1e-5 (1e-3 loses ~6 LFW points in 4 steps; see benchmarks/train_celeba.py).
SCRATCH_DEFAULTS: dict[str, Any] = {"optimizer": "adagrad", "lr": 0.05, "bn_mode": "train", "freeze": ""}
FINETUNE_DEFAULTS: dict[str, Any] = {"optimizer": "adam", "lr": 1e-5, "bn_mode": "frozen", "freeze": "stem"}

CHOICES: dict[str, tuple[str, ...]] = {
    "mining": ("semihard", "hard", "random", "batch_all"),
    "fallback": ("nearest_outside", "hardest", "drop"),
    "reduction": ("mean", "mean_active", "sum"),
    "optimizer": ("adagrad", "sgd", "adam"),
    "schedule": ("constant", "step", "cosine"),
    "normalisation": ("fixed", "prewhiten"),
    "small_identities": ("repeat", "partial"),
    "bn_mode": ("train", "frozen", "frozen_affine"),
}


def _base_type(annotation: Any) -> type:
    if isinstance(annotation, str):
        annotation = eval(annotation, {"Optional": Optional})  # noqa: S307 - our own annotations
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and args:
        return args[0]
    return annotation


def field_types() -> dict[str, type]:
    return {f.name: _base_type(f.type) for f in dataclasses.fields(TrainConfig)}


def flatten_toml(table: dict, prefix: str = "") -> dict:
    out: dict = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(flatten_toml(value, prefix))
        else:
            out[key] = value
    return out


def load_toml(path: str | Path) -> dict:
    with open(path, "rb") as handle:
        values = flatten_toml(tomllib.load(handle))
    known = field_types()
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"{path}: unknown training option(s): {', '.join(unknown)}")
    return values


def make_config(values: dict) -> TrainConfig:
    types_ = field_types()
    clean = {}
    for key, value in values.items():
        if key not in types_:
            raise ValueError(f"unknown training option {key!r}")
        if value is not None and types_[key] is float and isinstance(value, int):
            value = float(value)
        if value is not None and key in CHOICES and value not in CHOICES[key]:
            raise ValueError(f"{key} must be one of {', '.join(CHOICES[key])}, not {value!r}")
        clean[key] = value
    return TrainConfig(**clean)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``--option`` per config field (``--no-option`` for booleans); defaults are None = not given."""
    parser.add_argument("--config", metavar="FILE", help="TOML file of options (command-line options win)")
    defaults = TrainConfig()
    for name, kind in field_types().items():
        flag = "--" + name.replace("_", "-")
        default = getattr(defaults, name)
        help_ = f"(default: {default!r})" if default == "" else f"(default: {default})"
        if name in FINETUNE_DEFAULTS:
            help_ = f"{help_[:-1]}; fine-tuning: {FINETUNE_DEFAULTS[name] or repr('')})"
        if kind is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_)
        else:
            parser.add_argument(flag, dest=name, type=kind, default=None, choices=CHOICES.get(name),
                                metavar=None if name in CHOICES else name.upper(), help=help_)


def from_args(args: argparse.Namespace) -> TrainConfig:
    values: dict = {}
    if getattr(args, "config", None):
        values.update(load_toml(args.config))
    for name in field_types():
        given = getattr(args, name, None)
        if given is not None:
            values[name] = given
    return make_config(values)
