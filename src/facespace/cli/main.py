"""Entry point of the ``facespace`` command.

Each command group lives in its own module under :mod:`facespace.cli` with a
``register(subparsers)`` function; add it to ``COMMAND_MODULES``. Other packages
add commands through the ``facespace.commands`` entry-point group (the training
package's ``train`` and ``align``), so this package never imports them. Errors that
users cause (:class:`FacespaceError`), and file system failures (``OSError``: a
full disk, a vanished folder), become one line on stderr and exit 1; bad arguments
exit 2 (argparse).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from importlib.metadata import entry_points

from ..errors import FacespaceError

#: Modules under facespace.cli that add sub-commands, in help order.
COMMAND_MODULES = [
    "infer",      # detect, embed, verify
    "landmarks",  # landmarks IMG... (68 points, named parts)
    "models",     # models list | pull | info
    "export",     # export onnx MODEL OUT
    "evaluate",   # evaluate lfw | pairs
    "gallery", "identify", "cluster", "video", "serve",  # gallery enroll|list|..., identify, cluster, video, serve
    "attend",     # attend SOURCE; attendance export|list
]
#: Entry-point group through which other packages add commands (facespace_train: train, align).
PLUGIN_GROUP = "facespace.commands"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facespace", description="FaceNet face detection, embedding and recognition.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__package__}.{name}").register(sub)
    for plugin in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
        try:
            register = plugin.load()
        except ImportError as exc:  # a plugin whose package is broken or half-installed
            _unavailable(sub, plugin.name, exc)
            continue
        register(sub)
    return parser


def _unavailable(sub: argparse._SubParsersAction, name: str, exc: Exception) -> None:
    """A command whose package cannot be imported: it says why instead of vanishing."""
    parser = sub.add_parser(name, help=f"(unavailable: {exc})")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    def fail(args: argparse.Namespace) -> int:
        raise FacespaceError(f"`facespace {name}` is unavailable: {exc}")

    parser.set_defaults(handler=fail)


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
    except BrokenPipeError:  # `facespace ... | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:  # a file system failure no command foresaw (disk full, a folder gone): one line
        print(f"facespace: error: {_os_error(exc)}", file=sys.stderr)
        return 1
    return int(code or 0)


def _os_error(exc: OSError) -> str:
    """``name: reason`` for an OSError, the name made printable."""
    from ..imageio import describe

    if exc.filename is None or not exc.strerror:
        return str(exc)
    return f"{describe(exc.filename)}: {exc.strerror}"


if __name__ == "__main__":
    sys.exit(main())
