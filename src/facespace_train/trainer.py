"""The training loop: triplet loss with online mining on P x K batches.

* optimisers: AdaGrad (the paper's, lr 0.05), SGD with momentum, Adam;
* LR schedules: constant, step, cosine, each with optional linear warmup;
* mixed precision on CUDA (bfloat16 where supported, else float16 with a grad
  scaler), gradient clipping;
* checkpoints holding model, optimiser, scheduler, grad scaler, sampler and all
  RNG states, so a resumed run continues exactly as an uninterrupted one;
* CSV logs: ``train_log.csv`` (loss, active-triplet fraction, mean distances)
  and ``eval_log.csv`` (LFW best-threshold accuracy on a pairs subset);
* fine-tuning of any registered pretrained embedder
  (``pretrained = "facenet-msceleb-128"``), by default with batch norm frozen
  (eval-mode statistics), the stem frozen and Adam at a low lr (``bn_mode``,
  ``freeze``; :data:`facespace_train.config.FINETUNE_DEFAULTS`);
* DDP under ``torchrun`` with mining over the global batch (see
  :mod:`facespace_train.distributed`).
"""

from __future__ import annotations

import collections
import csv
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facespace.files import atomic_path
from facespace.runtime.device import resolve_device

from . import distributed as dist_utils
from .config import TrainConfig
from .data import AugmentConfig, IdentityFolderDataset, collate
from .losses import triplet_loss
from .sampler import PKSampler

TRAIN_FIELDS = ["step", "epoch", "train_time_s", "lr", "loss", "active_fraction", "mean_pos_dist",
                "mean_neg_dist", "triplets", "pairs_without_semihard"]
EVAL_FIELDS = ["step", "train_time_s", "lfw_best_acc", "lfw_threshold", "lfw_pairs", "lfw_kfold_acc",
               "lfw_kfold_std"]


def default_shared_data() -> Path:
    """``<repo>/../shared/data`` for a source checkout (where the project's datasets live)."""
    return Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def save_atomic(obj, path: Path) -> None:
    """``torch.save`` to ``path`` through :func:`facespace.files.atomic_path` (no half-written file)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


# -- model -----------------------------------------------------------------------
def build_model(cfg: TrainConfig) -> tuple[nn.Module, tuple[int, int], str]:
    """(network, input size (h, w), normalisation) for the configuration."""
    if cfg.pretrained:
        from facespace.pretrained import loader, registry

        config = registry.get_config(cfg.pretrained, "embedder")
        model = loader.load_embedder(config, device="cpu")
        for param in model.parameters():
            param.requires_grad_(True)
        for module in model.modules():  # the configured rate replaces the pretrained model's own
            if isinstance(module, nn.Dropout):
                module.p = cfg.dropout
        return model, (config.input_size, config.input_size), config.normalisation
    from facespace.networks import get_architecture

    spec = get_architecture(cfg.arch)
    options = {"dropout": cfg.dropout}
    if spec.family == "facenet-paper":
        options["batch_norm"] = cfg.batch_norm
    size = spec.input_size if cfg.input_size is None else (cfg.input_size, cfg.input_size)
    return spec.create(cfg.embedding_size, size, **options), size, cfg.normalisation


# -- fine-tuning controls -----------------------------------------------------------
# ``freeze`` names: these aliases (Inception-ResNet-v1 block families), or any module path prefix
# ("repeat_2.3", "features.0", ...) of the network.
FREEZE_ALIASES: dict[str, tuple[str, ...]] = {
    "stem": ("conv2d_1a_3x3", "conv2d_2a_3x3", "conv2d_2b_3x3", "conv2d_3b_1x1", "conv2d_4a_3x3",
             "conv2d_4b_3x3"),
    "block35": ("repeat_1",),
    "mixed6a": ("mixed_6a",),
    "block17": ("repeat_2",),
    "mixed7a": ("mixed_7a",),
    "block8": ("repeat_3", "block8"),
    "bottleneck": ("bottleneck_linear", "bottleneck_bn"),
}


def freeze_prefixes(spec: str | None) -> list[str]:
    """Module path prefixes named by a ``freeze`` option ("stem,block35" or raw prefixes)."""
    out: list[str] = []
    for name in (spec or "").replace(" ", ",").split(","):
        if name:
            out.extend(FREEZE_ALIASES.get(name.lower(), (name,)))
    return out


def freeze_modules(model: nn.Module, spec: str | None) -> list[str]:
    """Set ``requires_grad=False`` on the parameters under the ``freeze`` modules; the module names."""
    prefixes = freeze_prefixes(spec)
    if not prefixes:
        return []
    names = dict(model.named_modules())
    frozen = []
    for prefix in prefixes:
        if prefix not in names:
            raise ValueError(f"freeze: the model has no module {prefix!r} "
                             f"(aliases: {', '.join(FREEZE_ALIASES)}; or a module path)")
        for param in names[prefix].parameters():
            param.requires_grad_(False)
        frozen.append(prefix)
    return frozen


def apply_bn_mode(model: nn.Module, mode: str, frozen: list[str] = ()) -> None:
    """After ``model.train()``: BN layers (and the whole of frozen modules) back to eval mode.

    ``frozen`` / ``frozen_affine``: batch norm normalises with its pretrained running statistics,
    which the step leaves untouched (``frozen_affine`` also fixes gamma and beta, see
    :func:`freeze_bn_affine`). Frozen modules run in eval mode whatever ``mode`` is, so their BN
    statistics and dropout stay fixed too.
    """
    names = dict(model.named_modules())
    for prefix in frozen:
        names[prefix].eval()
    if mode in ("frozen", "frozen_affine"):
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
    elif mode != "train":
        raise ValueError(f"unknown bn_mode {mode!r}")


def freeze_bn_affine(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            for param in module.parameters(recurse=False):
                param.requires_grad_(False)


# -- optimisation ------------------------------------------------------------------
def build_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    if cfg.optimizer == "adagrad":
        return torch.optim.Adagrad(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               nesterov=cfg.momentum > 0)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")


class Schedule:
    """LR multiplier per step: linear warmup, then constant, step or cosine decay (picklable)."""

    def __init__(self, kind: str, total: int, warmup: int = 0, step_size: int = 1000, gamma: float = 0.1,
                 min_ratio: float = 0.0) -> None:
        self.kind, self.total, self.warmup = kind, max(1, total), warmup
        self.step_size, self.gamma, self.min_ratio = step_size, gamma, min_ratio

    def __call__(self, step: int) -> float:
        if self.warmup and step < self.warmup:
            return (step + 1) / self.warmup
        if self.kind == "step":
            return self.gamma ** (step // max(1, self.step_size))
        if self.kind == "cosine":
            t = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
            return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * t))
        return 1.0


# -- RNG state ------------------------------------------------------------------------
def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class _CsvLog:
    def __init__(self, path: Path, fields: list[str], enabled: bool) -> None:
        self.path, self.fields, self.enabled = path, fields, enabled

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after ``step`` (a resumed run rewrites them)."""
        if not self.enabled or not self.path.exists():
            return
        with open(self.path, newline="") as handle:
            rows = [r for r in csv.DictReader(handle) if int(float(r["step"])) <= step]
        with open(self.path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, self.fields)
            writer.writeheader()
            writer.writerows(rows)

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        new = not self.path.exists()
        with open(self.path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, self.fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


class Trainer:
    """Builds everything from a :class:`TrainConfig`; :meth:`train` runs to the end."""

    def __init__(self, cfg: TrainConfig, dataset: IdentityFolderDataset | None = None) -> None:
        self.cfg = cfg
        self.dist = dist_utils.init_distributed()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = resolve_device(cfg.device)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        seed_everything(cfg.seed)
        self.model, self.input_size, self.normalisation = build_model(cfg)
        self.frozen = freeze_modules(self.model, cfg.freeze)
        if cfg.bn_mode == "frozen_affine":
            freeze_bn_affine(self.model)
        self.model.to(self.device)
        if self.dist.enabled and cfg.sync_bn:
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.net: nn.Module = self.model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        augment = AugmentConfig(**cfg.augment_kwargs())
        if dataset is None:
            if not cfg.data:
                raise ValueError("no training data: set `data` to a folder of identity folders")
            dataset = IdentityFolderDataset(cfg.data, self.input_size, cfg.crop_fraction, augment,
                                            self.normalisation, min_images=1,
                                            max_identities=cfg.max_identities, cache=cfg.cache)
        self.dataset = dataset
        self.sampler = PKSampler(dataset.labels, cfg.p, cfg.k, seed=cfg.seed, min_images=cfg.min_images,
                                 small=cfg.small_identities, rank=self.dist.rank,
                                 world_size=self.dist.world_size)
        self.optimizer = build_optimizer(cfg, [p for p in self.model.parameters() if p.requires_grad])
        self.schedule = Schedule(cfg.schedule, cfg.steps, cfg.warmup_steps, cfg.step_size, cfg.gamma,
                                 cfg.min_lr_ratio)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.schedule)
        self.amp = cfg.amp and self.device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if self.amp and torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)
        self.mining_rng = torch.Generator().manual_seed(cfg.seed + 1)
        self.step = 0
        self.train_time = 0.0
        self.out_dir = Path(cfg.out_dir)
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self.train_log = _CsvLog(self.out_dir / "train_log.csv", TRAIN_FIELDS, self.dist.is_main)
        self.eval_log = _CsvLog(self.out_dir / "eval_log.csv", EVAL_FIELDS, self.dist.is_main)
        self._lfw = None
        self._pending_states: collections.deque = collections.deque()
        self._loader_iter = None
        if cfg.resume:
            path = self.out_dir / "checkpoint_last.pt" if cfg.resume == "auto" else Path(cfg.resume)
            if path.exists():
                self.load_checkpoint(path)
            elif cfg.resume != "auto":
                raise FileNotFoundError(f"checkpoint {path} does not exist")

    # -- data -----------------------------------------------------------------------
    def _batches(self):
        """Local batches, remembering the sampler state before each so checkpoints are exact."""
        while True:
            self._pending_states.append(self.sampler.state_dict())
            yield next(iter(self.sampler))

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._loader_iter is None:
            self._pending_states.clear()
            if self.cfg.workers > 0:
                loader = torch.utils.data.DataLoader(self.dataset, batch_sampler=self._batches(),
                                                     num_workers=self.cfg.workers, collate_fn=collate,
                                                     persistent_workers=True)
                self._loader_iter = iter(loader)
            else:
                self._loader_iter = (collate([self.dataset[item] for item in b]) for b in self._batches())
        batch = next(self._loader_iter)
        self._pending_states.popleft()
        return batch

    def sampler_state(self) -> dict:
        """Sampler state as of the batches consumed so far (prefetched batches excluded)."""
        return self._pending_states[0] if self._pending_states else self.sampler.state_dict()

    # -- one step ---------------------------------------------------------------------
    def train_step(self) -> dict:
        cfg = self.cfg
        images, labels = self.next_batch()
        images, labels = images.to(self.device, non_blocking=True), labels.to(self.device)
        self.net.train()
        apply_bn_mode(self.model, cfg.bn_mode, self.frozen)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
            embeddings = self.net(images)
        embeddings = embeddings.float()
        if self.dist.enabled:
            embeddings = dist_utils.gather_with_grad(embeddings)
            labels = dist_utils.gather_labels(labels)
        out = triplet_loss(embeddings, labels, cfg.margin, cfg.mining, cfg.fallback, cfg.reduction,
                           generator=self.mining_rng)
        loss = out.loss * dist_utils.global_loss_scale() if self.dist.enabled else out.loss
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        self.step += 1
        return {"loss": float(out.loss.detach()), "lr": lr, **out.stats}

    # -- evaluation ---------------------------------------------------------------------
    @property
    def lfw(self):
        if self._lfw is None and self.cfg.lfw_dir:
            from .lfw import LFWPairs

            self._lfw = LFWPairs(self.cfg.lfw_dir, input_size=self.input_size, crop_fraction=self.cfg.crop_fraction,
                                 n_pairs=self.cfg.eval_pairs, normalisation=self.normalisation)
        return self._lfw

    def evaluate(self) -> dict | None:
        if not self.dist.is_main or self.lfw is None:
            return None
        result = self.lfw.evaluate(self.model, self.device, kfold=self.cfg.eval_kfold)
        row = {"step": self.step, "train_time_s": round(self.train_time, 3), **result}
        self.eval_log.write(row)
        return row

    # -- checkpoints ------------------------------------------------------------------------
    def checkpoint(self) -> dict:
        return {
            "step": self.step,
            "train_time": self.train_time,
            "config": self.cfg.to_dict(),
            "input_size": list(self.input_size),
            "normalisation": self.normalisation,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "sampler": self.sampler_state(),
            "mining_rng": self.mining_rng.get_state(),
            "rng": rng_state(),
        }

    def save_checkpoint(self, path: Path | None = None) -> Path | None:
        if not self.dist.is_main:
            return None
        path = Path(path) if path else self.out_dir / "checkpoint_last.pt"
        state = self.checkpoint()
        save_atomic(state, path)
        if self.cfg.keep_checkpoints:
            save_atomic(state, self.out_dir / f"checkpoint_{self.step:07d}.pt")
        return path

    def load_checkpoint(self, path: Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=False)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.sampler.load_state_dict(state["sampler"])
        self.mining_rng.set_state(state["mining_rng"])
        set_rng_state(state["rng"])
        self.step, self.train_time = int(state["step"]), float(state["train_time"])
        self._loader_iter = None
        self.train_log.truncate_after(self.step)
        self.eval_log.truncate_after(self.step)

    # -- the loop ------------------------------------------------------------------------------
    def train(self) -> dict:
        cfg = self.cfg
        window: list[dict] = []
        last: dict = {}
        epoch_len = len(self.sampler)
        while self.step < cfg.steps and not (cfg.time_budget_s and self.train_time >= cfg.time_budget_s):
            start = time.perf_counter()
            stats = self.train_step()
            self.train_time += time.perf_counter() - start
            window.append(stats)
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                row = {"step": self.step, "epoch": round(self.step / epoch_len, 3),
                       "train_time_s": round(self.train_time, 3)}
                for key in TRAIN_FIELDS[3:]:
                    values = [w[key] for w in window if not (isinstance(w[key], float) and math.isnan(w[key]))]
                    row[key] = float(np.mean(values)) if values else float("nan")
                self.train_log.write(row)
                if not cfg.quiet and self.dist.is_main:
                    print(f"step {self.step:6d}  loss {row['loss']:.4f}  active {row['active_fraction']:.3f}  "
                          f"d+ {row['mean_pos_dist']:.3f}  d- {row['mean_neg_dist']:.3f}  lr {row['lr']:.4g}  "
                          f"{self.train_time:7.1f}s", flush=True)
                last, window = row, []
            if cfg.eval_every and self.step % cfg.eval_every == 0:
                result = self.evaluate()
                if result and not cfg.quiet:
                    print(f"step {self.step:6d}  LFW best-threshold accuracy {result['lfw_best_acc']:.4f} "
                          f"({result['lfw_pairs']} pairs)", flush=True)
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                self.save_checkpoint()
        final_eval = self.evaluate() if cfg.lfw_dir and (not cfg.eval_every or self.step % cfg.eval_every) else None
        self.save_checkpoint()
        if self.dist.is_main:
            save_atomic({"model": self.model.state_dict(), "config": cfg.to_dict(),
                         "input_size": list(self.input_size), "normalisation": self.normalisation},
                        self.out_dir / "model_final.pt")
        return {"step": self.step, "train_time_s": self.train_time, "last_log": last, "final_eval": final_eval}


def train(cfg: TrainConfig) -> dict:
    """Run a whole training job described by ``cfg``; returns a summary dict."""
    trainer = Trainer(cfg)
    try:
        summary = trainer.train()
    except BaseException:
        dist_utils.cleanup()
        raise
    dist_utils.cleanup(wait=True)
    return summary
