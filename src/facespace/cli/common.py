"""Options and parser helpers shared by the commands."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from ..alignment import ALIGN_MODES
from ..detection.types import DETECTOR_BACKENDS
from ..embedding import BACKENDS

if TYPE_CHECKING:
    from ..pipeline import FacePipeline


def add_group(sub: argparse._SubParsersAction, name: str, help: str, dest: str,
              metavar: str) -> argparse._SubParsersAction:
    """A command whose actions are sub-commands (``facespace NAME ACTION ...``); returns their subparsers."""
    return sub.add_parser(name, help=help).add_subparsers(dest=dest, metavar=metavar, required=True)


def add_quiet_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def add_pipeline_options(parser: argparse.ArgumentParser, detection_only: bool = False) -> None:
    group = parser.add_argument_group("pipeline")
    if not detection_only:
        group.add_argument("--model", default=None, help="embedding model (see `facespace models list`)")
        group.add_argument("--align", default=None, choices=ALIGN_MODES,
                           help="face crop (default: the model's registered one, best measured on LFW)")
        group.add_argument("--flip", action="store_true", help="average with the mirrored face's embedding")
        group.add_argument("--batch-size", type=_positive_int, default=32, help="faces per network batch")
        group.add_argument("--backend", default="torch", choices=BACKENDS,
                           help="embedding runtime: torch (default), onnx (ONNX Runtime, same embeddings) or "
                                "onnx-int8 (int8-quantised, ~3x faster on CPU)")
    group.add_argument("--min-face-size", type=_positive_int, default=20, help="smallest face to detect, in pixels")
    group.add_argument("--detector-backend", default="torch", choices=DETECTOR_BACKENDS,
                       help="MTCNN runtime: torch (default) or onnx (ONNX Runtime, CPU)")
    group.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")


def pipeline_from_args(args: argparse.Namespace, **settings: Any) -> "FacePipeline":
    """The pipeline the pipeline options ask for. ``settings`` are further :class:`FacePipeline`
    arguments (``threshold=``, ``max_pixels=``, ...); they win over the options (``model=`` a gallery's)."""
    from ..pipeline import DetectorSettings, FacePipeline  # torch loads only for commands that need it

    options: dict[str, Any] = dict(
        model=getattr(args, "model", None),
        align=getattr(args, "align", None),
        flip=getattr(args, "flip", False),
        device=args.device,
        batch_size=getattr(args, "batch_size", 32),
        detector=DetectorSettings(min_face_size=args.min_face_size, backend=getattr(args, "detector_backend", "torch")),
        backend=getattr(args, "backend", "torch"),
    )
    return FacePipeline(**{**options, **settings})


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value
