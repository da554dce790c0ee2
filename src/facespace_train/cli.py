"""The training package's commands, ``facespace train`` and ``facespace align``.

They reach the ``facespace`` command through the ``facespace.commands`` entry-point
group (``pyproject.toml``), so the inference library never imports its training
package. Each ``register_*`` adds one sub-command to the CLI's sub-parsers.
"""

from __future__ import annotations

import argparse
import json

from facespace.errors import FacespaceError

from .align_dataset import ALIGN_MODES

MISSING = ("training needs the facespace_train package and its extras; install them with "
           "`pip install 'facespace[train]'`")


def register_train(sub: argparse._SubParsersAction) -> None:
    """``facespace train --config FILE [--option VALUE ...]``: train an embedder with triplet loss.

    The option list comes from :mod:`facespace_train.config` (torch-free); the trainer is
    imported only when the command runs. Every option of the TOML file is also a flag,
    which wins over the file.
    """
    from .config import add_arguments

    parser = sub.add_parser("train", help="train or fine-tune an embedder with triplet loss",
                            description="Train a FaceNet embedder (triplet loss, online mining) from a TOML "
                                        "config; every config key is also an option below.")
    add_arguments(parser)
    parser.add_argument("--print-config", action="store_true", help="print the merged options as JSON and exit")
    parser.set_defaults(handler=run_train)


def run_train(args: argparse.Namespace) -> int:
    from .config import from_args

    try:
        cfg = from_args(args)
    except (OSError, ValueError) as exc:
        raise FacespaceError(str(exc)) from exc
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    if not cfg.data:
        raise FacespaceError("no training data: give --data DIR or `data = \"DIR\"` in the config")
    try:
        from .trainer import train
    except ImportError as exc:
        raise FacespaceError(f"{MISSING} ({exc})") from exc
    try:
        summary = train(cfg)
    except (FileNotFoundError, ValueError) as exc:
        raise FacespaceError(str(exc)) from exc
    print(json.dumps(summary, default=str, indent=2))
    return 0


def register_align(sub: argparse._SubParsersAction) -> None:
    """``facespace align SRC DST``: pre-align a folder-per-identity dataset for training.

    Runs MTCNN on every image of ``SRC/<identity>/`` and writes the largest face, aligned
    (or margin-cropped) as ``FacePipeline`` does, to ``DST/<identity>/``. Multiprocess,
    resumable (re-running skips what is done); images without a face are listed in
    ``DST/no_face.tsv``.
    """
    parser = sub.add_parser("align", help="pre-align a dataset (detect + align every image, resumable)")
    parser.add_argument("src", metavar="SRC", help="dataset folder: SRC/<identity>/<image>")
    parser.add_argument("dst", metavar="DST", help="output folder (created; re-runs resume)")
    parser.add_argument("--size", type=int, default=160, help="output side in pixels (default 160)")
    parser.add_argument("--mode", choices=ALIGN_MODES, default="align",
                        help="5-point alignment or Sandberg's margin crop (default: align)")
    parser.add_argument("--margin", type=int, default=32, help="margin in pixels for --mode margin")
    parser.add_argument("--min-face-size", type=int, default=20)
    parser.add_argument("--format", choices=("png", "jpg"), default="png")
    parser.add_argument("--workers", type=int, default=1, help="processes (each with its own detector)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--limit", type=int, default=None, help="align at most this many pending images")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(handler=run_align)


def run_align(args: argparse.Namespace) -> int:
    from .align_dataset import AlignSettings, align_dataset

    settings = AlignSettings(size=args.size, mode=args.mode, margin=args.margin,
                             min_face_size=args.min_face_size, extension="." + args.format, device=args.device)
    try:
        counts = align_dataset(args.src, args.dst, settings, workers=args.workers,
                               progress=not args.no_progress, limit=args.limit)
    except FileNotFoundError as exc:
        raise FacespaceError(str(exc)) from exc
    print(json.dumps(counts))
    return 0


def register_fit_maps(sub: argparse._SubParsersAction) -> None:
    """``facespace fit-maps DIR``: fit the compatibility maps between the registered embedders."""
    parser = sub.add_parser("fit-maps", help="fit the maps between model versions on DIR/<identity>/ photos",
                            description="Embed every photo of DIR/<identity>/ with both registered embedders and "
                                        "fit the compatibility maps (ridge, Procrustes, harmonic) into the map "
                                        "store ($FACESPACE_COMPAT_DIR, default $FACESPACE_HOME/compat).")
    parser.add_argument("faces", metavar="DIR", help="photos, one folder per identity (never your test set)")
    parser.add_argument("--identities", type=int, default=None, help="use only the first N identity folders")
    parser.add_argument("--out", metavar="FOLDER", default=None, help="map store to write (default: the store)")
    parser.add_argument("--views", default="", metavar="NAMES",
                        help="augmented views added as fitting pairs, comma-separated (mirror, jitter1, jitter2, "
                             "jitter3: facespace_train.compat_augment; default none)")
    parser.set_defaults(handler=run_fit_maps)


def run_fit_maps(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .compat_augment import views_named
    from .compat_fit import fit_all

    views = views_named(args.views)
    if not Path(args.faces).is_dir():
        raise FacespaceError(f"{args.faces}: not a folder of identity folders")
    print(json.dumps({"maps": fit_all(args.faces, args.identities, args.out, views=views)}))
    return 0
