"""``facespace train --config FILE [--option VALUE ...]``: train an embedder with triplet loss.

The training code is the separate ``facespace_train`` package; its option list
(:mod:`facespace_train.config`, torch-free) builds this command's options, and
the trainer itself is imported only when the command runs. Every option of the
TOML file is also a command-line option, which wins over the file.
"""

from __future__ import annotations

import argparse
import json

from ..errors import FacespaceError

MISSING = ("training needs the facespace_train package and its extras; install them with "
           "`pip install 'facespace[train]'`")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("train", help="train or fine-tune an embedder with triplet loss",
                            description="Train a FaceNet embedder (triplet loss, online mining) from a TOML "
                                        "config; every config key is also an option below.")
    try:
        from facespace_train.config import add_arguments
    except ImportError as exc:
        reason = exc  # the name "exc" is cleared when the except block ends
        parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        parser.set_defaults(handler=lambda args: _missing(reason))
        return
    add_arguments(parser)
    parser.add_argument("--print-config", action="store_true", help="print the merged options as JSON and exit")
    parser.set_defaults(handler=run)


def _missing(exc: Exception) -> int:
    raise FacespaceError(f"{MISSING} ({exc})")


def run(args: argparse.Namespace) -> int:
    from facespace_train.config import from_args

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
        from facespace_train.trainer import train
    except ImportError as exc:
        raise FacespaceError(f"{MISSING} ({exc})") from exc
    try:
        summary = train(cfg)
    except (FileNotFoundError, ValueError) as exc:
        raise FacespaceError(str(exc)) from exc
    print(json.dumps(summary, default=str, indent=2))
    return 0
