"""Entry point of the ``facespace`` command.

Each command group lives in its own module under :mod:`facespace.cli` with a
``register(subparsers)`` function; add it to ``COMMAND_MODULES``. Errors that
users cause (:class:`FacespaceError`) become one line on stderr and exit 1;
bad arguments exit 2 (argparse).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import FacespaceError

#: Modules under facespace.cli that add sub-commands, in help order.
COMMAND_MODULES = [
    "infer",      # detect, embed, verify
    "models",     # models list | pull | info
    "export",     # export onnx MODEL OUT
    "evaluate",   # evaluate lfw | pairs
    "gallery", "identify", "cluster", "video", "serve",  # gallery enroll|list|..., identify, cluster, video, serve
    "train", "align",  # train (facespace_train), align SRC DST (pre-align a dataset)
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facespace", description="FaceNet face detection, embedding and recognition.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__package__}.{name}").register(sub)
    return parser


def _version() -> str:
    from ..version import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.handler(args)
    except FacespaceError as exc:
        print(f"facespace: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("facespace: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
