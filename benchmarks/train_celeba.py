"""Train FaceNet embedders on celeba-299 and evaluate on LFW; compare mining rules.

From scratch (``--mode scratch``): one run per mining rule (semi-hard, hard,
random) with the same architecture, batch and training-time budget. During
training a fixed 600-pair LFW subset is evaluated periodically (best-threshold
accuracy, for the accuracy-vs-time curve); at the end every run is evaluated on
the full LFW ``pairs.txt`` (6000 pairs, standard 10-fold protocol: threshold
chosen on nine folds, accuracy on the tenth). LFW images are the 250x250
deep-funneled faces with a fixed centre crop (``--crop-fraction`` of the side,
the same crop the training images get) resized to the network input.

Fine-tuning (``--mode finetune``): LFW accuracy of a registered pretrained
model (``--pretrained``) before and after fine-tuning on celeba-299, both on the
full 6000 pairs (10-fold) unless ``--finetune-eval-pairs`` asks for fewer. The
fine-tune uses the training config's fine-tune defaults (BN statistics frozen,
stem frozen, Adam at a low lr; ``facespace_train.config.FINETUNE_DEFAULTS``)
unless ``--finetune-*`` options override them.

Results: ``benchmarks/results/train_celeba.json`` and
``benchmarks/results/train_celeba.png`` (``--out`` names both). Example (the numbers in the docs)::

    python benchmarks/train_celeba.py --mode scratch --arch nns2 --input-size 64 \
        --budget-s 180 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from _paths import DATA, RESULTS


def parse_args(argv=None):
    from facespace_train.config import CHOICES

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=["scratch", "finetune", "all"], default="scratch")
    p.add_argument("--minings", nargs="+", default=["semihard", "hard", "random"])
    p.add_argument("--arch", default="nns2")
    p.add_argument("--input-size", type=int, default=64)
    p.add_argument("--embedding-size", type=int, default=128)
    p.add_argument("--budget-s", type=float, default=180.0, help="training time per run, seconds")
    p.add_argument("--p", type=int, default=16)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--optimizer", default="adagrad")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--crop-fraction", type=float, default=0.64)
    p.add_argument("--eval-every", type=int, default=50, help="steps between LFW-subset evaluations")
    p.add_argument("--eval-pairs", type=int, default=600)
    p.add_argument("--pretrained", default="facenet-msceleb-128")
    p.add_argument("--finetune-optimizer", default=None, help="default: the config's fine-tune default")
    p.add_argument("--finetune-lr", type=float, default=None, help="default: the config's fine-tune default")
    p.add_argument("--finetune-bn-mode", default=None, choices=CHOICES["bn_mode"],
                   help="default: the config's fine-tune default (frozen)")
    p.add_argument("--finetune-freeze", default=None, help='e.g. "stem,block35"; default: the config\'s')
    p.add_argument("--finetune-p", type=int, default=8)
    p.add_argument("--finetune-k", type=int, default=4)
    p.add_argument("--finetune-steps", type=int, default=0, help="fixed step count (0: --finetune-budget-s)")
    p.add_argument("--finetune-budget-s", type=float, default=180.0)
    p.add_argument("--finetune-before-cache", default=str(RESULTS / "runs" / "finetune_lfw_before.json"),
                   help="JSON cache of the pretrained model's LFW result (same model/pairs/crops); '' = no cache")
    p.add_argument("--finetune-eval-pairs", type=int, default=0,
                   help="LFW pairs (taken evenly from the 10 folds) for before/after; 0 = all 6000")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=str(DATA / "celeba-299" / "faces"))
    p.add_argument("--lfw", default=str(DATA / "lfw"))
    p.add_argument("--out", default=str(RESULTS / "train_celeba.json"))
    return p.parse_args(argv)


def run_one(args, name: str, full, subset, before_cache: dict | None = None, **overrides) -> dict:
    from facespace_train.config import TrainConfig
    from facespace_train.trainer import Trainer

    values = dict(data=args.data, arch=args.arch, input_size=args.input_size,
                  embedding_size=args.embedding_size, p=args.p, k=args.k, optimizer=args.optimizer,
                  lr=args.lr, crop_fraction=args.crop_fraction, steps=10**9, time_budget_s=args.budget_s,
                  eval_every=args.eval_every, eval_pairs=args.eval_pairs, lfw_dir=args.lfw,
                  checkpoint_every=0, log_every=10, out_dir=str(RESULTS / "runs" / name),
                  device=args.device, seed=args.seed, quiet=True)
    values.update(overrides)  # before construction: None values take the config's (fine-tune) defaults
    cfg = TrainConfig(**values)
    for log in ("eval_log.csv", "train_log.csv"):  # a new run: never mix in an earlier run's rows
        (Path(cfg.out_dir) / log).unlink(missing_ok=True)
    trainer = Trainer(cfg)
    before = None
    if subset is not None and subset.normalisation == trainer.normalisation:
        trainer._lfw = subset
    initial = None
    if cfg.pretrained:  # evaluated after training (from a copy of these weights), so a cache can be used
        initial = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    start = time.time()
    summary = trainer.train()
    wall = time.time() - start
    final = full.evaluate(trainer.model, trainer.device, kfold=True)
    if initial is not None:
        before = _before_finetuning(trainer, full, initial, before_cache)
    curve, losses = _read_logs(Path(cfg.out_dir))
    result = {"name": name, "config": cfg.to_dict(), "steps": summary["step"],
              "train_time_s": round(summary["train_time_s"], 1), "wall_s": round(wall, 1),
              "images_seen": summary["step"] * cfg.p * cfg.k,
              "lfw_full_kfold_acc": final["lfw_kfold_acc"], "lfw_full_kfold_std": final["lfw_kfold_std"],
              "lfw_full_best_acc": final["lfw_best_acc"], "curve": curve,
              "first_log": losses[0] if losses else None, "last_log": losses[-1] if losses else None}
    if before is not None:
        result["lfw_before"] = before
    print(f"{name}: {summary['step']} steps in {summary['train_time_s']:.0f}s, "
          f"LFW 10-fold {final['lfw_kfold_acc']:.4f} +- {final['lfw_kfold_std']:.4f}", flush=True)
    return result


def _before_finetuning(trainer, full, initial: dict, before_cache: dict | None) -> dict:
    """LFW result of the pretrained weights ``initial`` (loaded into ``trainer.model``).

    It depends only on the model and the pairs/crops, so it may come from a cache written by an
    earlier run of this same evaluation (--finetune-before-cache)."""
    cache_path, key = (before_cache or {}).get("path"), (before_cache or {}).get("key")
    if cache_path and Path(cache_path).exists() and json.loads(Path(cache_path).read_text())["key"] == key:
        before = dict(json.loads(Path(cache_path).read_text())["result"], cached=str(cache_path))
    else:
        trainer.model.load_state_dict(initial)
        before = full.evaluate(trainer.model, trainer.device, kfold=True)
        if cache_path:
            Path(cache_path).parent.mkdir(parents=True, exist_ok=True)
            Path(cache_path).write_text(json.dumps({"key": key, "result": before}, indent=1, default=float))
    print(f"before fine-tuning: LFW 10-fold {before['lfw_kfold_acc']:.4f} on {before['lfw_pairs']} pairs",
          flush=True)
    return before


def _read_logs(out_dir: Path) -> tuple[list[dict], list[dict]]:
    """(LFW-subset accuracy curve, training log rows) of a run, from its CSV logs."""
    import csv

    curve, losses = [], []
    eval_csv = out_dir / "eval_log.csv"
    if eval_csv.exists():
        curve = [{"step": int(r["step"]), "train_time_s": float(r["train_time_s"]),
                  "lfw_subset_best_acc": float(r["lfw_best_acc"])} for r in csv.DictReader(open(eval_csv))]
    train_csv = out_dir / "train_log.csv"
    if train_csv.exists():
        losses = [{k: float(v) for k, v in r.items() if v not in ("", None)} for r in csv.DictReader(open(train_csv))]
    return curve, losses


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        if not r.get("curve"):
            continue
        t = [c["train_time_s"] for c in r["curve"]]
        a = [c["lfw_subset_best_acc"] for c in r["curve"]]
        ax.plot(t, a, marker="o", ms=3, label=f"{r['name']} (full LFW 10-fold {r['lfw_full_kfold_acc']:.3f})")
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("LFW subset best-threshold accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("celeba-299 from scratch: mining rules under one time budget")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from facespace_train.lfw import LFWPairs

    RESULTS.mkdir(parents=True, exist_ok=True)
    out_path = Path(args.out)
    report = json.loads(out_path.read_text()) if out_path.exists() else {}
    hardware = {"cpu_count": os.cpu_count(), "torch_threads": args.threads,
                "device": args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"),
                "platform": platform.platform(), "torch": torch.__version__,
                "load_average_at_start": os.getloadavg()}
    command = "python " + " ".join([sys.argv[0]] + (argv if argv is not None else sys.argv[1:]))
    if args.mode in ("scratch", "all"):
        # the top-level hardware/command describe the scratch runs; the fine-tune section has its own
        report["hardware"], report["command"] = hardware, command
        size = (args.input_size, args.input_size)
        t0 = time.time()
        full = LFWPairs(args.lfw, input_size=size, crop_fraction=args.crop_fraction, n_pairs=0)
        subset = LFWPairs(args.lfw, input_size=size, crop_fraction=args.crop_fraction, n_pairs=args.eval_pairs)
        print(f"LFW loaded ({len(full.pairs)} pairs) in {time.time() - t0:.0f}s", flush=True)
        runs = [run_one(args, f"{args.arch}-{args.input_size}px-{m}-{args.budget_s:g}s", full, subset, mining=m)
                for m in args.minings]
        report["scratch"] = {"budget_s_per_run": args.budget_s, "runs": runs}
        plot(runs, out_path.with_suffix(".png"))
    if args.mode in ("finetune", "all"):
        report["finetune"] = {"command": command, "hardware": hardware, **finetune(args)}
    out_path.write_text(json.dumps(report, indent=1, default=float))
    print(f"wrote {out_path}")
    return 0


def finetune(args) -> dict:
    from facespace.pretrained.registry import get_config
    from facespace_train.lfw import LFWPairs

    try:
        config = get_config(args.pretrained, "embedder")
        from facespace.pretrained.loader import load_embedder  # noqa: F401 - availability check

        size = (config.input_size, config.input_size)
        # a 1.4 GFLOP network: on a CPU, before/after use a fold-balanced subset unless asked otherwise
        full = LFWPairs(args.lfw, input_size=size, crop_fraction=args.crop_fraction,
                        n_pairs=args.finetune_eval_pairs, normalisation=config.normalisation)
        subset = full
        # the crops (celeba-299 and LFW alike) get the model's registered input size and normalisation
        # (Trainer takes both from the registry); BN statistics, frozen parts, optimiser and lr are
        # the config's fine-tune defaults unless given here
        key = {"pretrained": args.pretrained, "lfw": str(Path(args.lfw).resolve()), "pairs": len(full.pairs),
               "eval_pairs": args.finetune_eval_pairs, "input_size": list(size),
               "normalisation": config.normalisation, "crop_fraction": args.crop_fraction}
        before_cache = {"path": args.finetune_before_cache, "key": key} if args.finetune_before_cache else None
        result = run_one(args, f"finetune-{args.pretrained}", full, subset, before_cache=before_cache,
                         pretrained=args.pretrained,
                         input_size=None, optimizer=args.finetune_optimizer, lr=args.finetune_lr,
                         bn_mode=args.finetune_bn_mode, freeze=args.finetune_freeze, eval_every=0,
                         lfw_dir=None,  # no evaluation inside the trainer: before/after are done here
                         steps=args.finetune_steps or 10**9,
                         time_budget_s=0.0 if args.finetune_steps else args.finetune_budget_s,
                         p=args.finetune_p, k=args.finetune_k)
        cfg = result["config"]
        before, after = result["lfw_before"]["lfw_kfold_acc"], result["lfw_full_kfold_acc"]
        return {"pretrained": args.pretrained, "lfw_pairs": len(full.pairs),
                "lfw_folds": full.folds, "input_size": list(size), "normalisation": config.normalisation,
                "crop_fraction": args.crop_fraction,
                "settings": {k: cfg[k] for k in ("optimizer", "lr", "bn_mode", "freeze", "dropout", "p", "k",
                                                 "mining", "margin", "steps", "time_budget_s")},
                "steps_done": result["steps"], "train_time_s": result["train_time_s"],
                "lfw_before_kfold": before, "lfw_before_kfold_std": result["lfw_before"]["lfw_kfold_std"],
                "lfw_after_kfold": after, "lfw_after_kfold_std": result["lfw_full_kfold_std"],
                "delta_points": round(100 * (after - before), 3), "run": result}
    except Exception as exc:  # noqa: BLE001 - report why fine-tuning could not run
        print(f"fine-tuning not run: {type(exc).__name__}: {exc}", flush=True)
        return {"pretrained": args.pretrained, "error": f"{type(exc).__name__}: {exc}"}


if __name__ == "__main__":
    sys.exit(main())
