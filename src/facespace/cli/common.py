"""Options and parser helpers shared by the commands."""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from ..alignment import ALIGN_MODES
from ..detection.types import DETECTOR_BACKENDS, DETECTOR_MODELS, DETECTOR_NAMES, SECOND_PASSES
from ..embedding import BACKENDS
from ..errors import FacespaceError, OptionError
from ..files import atomic_path
from ..imageio import describe
from ..presets import PRESETS

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
        group.add_argument("--preset", default=None, choices=PRESETS,
                           help="fast (int8), balanced (the default pipeline) or accurate (several views fused); "
                                "sets model, crop, flip, runtime and threshold")
        group.add_argument("--model", default=None, help="embedding model (see `facespace models list`)")
        group.add_argument("--align", default=None, choices=ALIGN_MODES,
                           help="face crop (default: the model's registered one, chosen on development data)")
        group.add_argument("--flip", action="store_true", help="average with the mirrored face's embedding")
        group.add_argument("--min-quality", type=fraction_type, default=None,
                           help="refuse a verdict on faces below this quality (0..1): 'low_quality' instead")
        group.add_argument("--batch-size", type=_positive_int, default=32, help="faces per network batch")
        group.add_argument("--backend", default=None, choices=BACKENDS,
                           help="embedding runtime: onnx (ONNX Runtime, the default on the CPU), torch (the same "
                                "embeddings within 1e-4; the default on other devices), or "
                                "onnx-int8 (int8-quantised, ~3x faster on CPU) or torch-bf16 (bfloat16 matrix products, ~2x "
                                "faster on CPUs with AVX512-BF16/AMX)")
    group.add_argument("--min-face-size", type=_positive_int, default=20, help="smallest face to detect, in pixels")
    group.add_argument("--second-pass", default="relaxed", choices=SECOND_PASSES,
                       help="look again with relaxed detector settings where no face was found (default) or not")
    group.add_argument("--detector", default=None, choices=DETECTOR_NAMES,
                       help="face detector: mtcnn (the default), blazeface (MediaPipe short range, fast), "
                            "blazeface-full (full range: smaller faces) or blazeface-onet (short range's faces, "
                            "MTCNN's O-Net landmarks; the default of --preset fast); see README 'Fast detector'")
    group.add_argument("--detector-backend", default=None, choices=DETECTOR_BACKENDS,
                       help="MTCNN runtime: onnx (ONNX Runtime, the default on the CPU) or torch (the same "
                            "detections; the default on other devices)")
    group.add_argument("--device", type=_device, default="cpu", help="torch device, e.g. cpu or cuda")


def pipeline_from_args(args: argparse.Namespace, **settings: Any) -> "FacePipeline":
    """The pipeline the pipeline options ask for. ``settings`` are further :class:`FacePipeline`
    arguments (``threshold=``, ``max_pixels=``, ...); they win over the options (``model=`` a gallery's)."""
    from ..pipeline import FacePipeline  # torch loads only for commands that need it

    pipeline = FacePipeline(**pipeline_options(args, **settings))
    check_weight_cache(pipeline)
    return pipeline


def pipeline_options(args: argparse.Namespace, **settings: Any) -> dict[str, Any]:
    """The :class:`FacePipeline` arguments of the pipeline options (plain values: a Ray worker
    builds its own pipeline from them); ``settings`` win, as in :func:`pipeline_from_args`."""
    from ..pipeline import DetectorSettings

    options: dict[str, Any] = dict(
        model=getattr(args, "model", None),
        align=getattr(args, "align", None),
        flip=getattr(args, "flip", False),
        device=args.device,
        batch_size=getattr(args, "batch_size", 32),
        detector=DetectorSettings(min_face_size=args.min_face_size, backend=getattr(args, "detector_backend", None),
                                  name=getattr(args, "detector", None)),
        backend=getattr(args, "backend", None),
        second_pass=getattr(args, "second_pass", "relaxed"),
        min_quality=getattr(args, "min_quality", None),
        preset=getattr(args, "preset", None),
    )
    return {**options, **settings}


def check_weight_cache(pipeline: "FacePipeline") -> None:
    """Refuse, before any work, a weight cache (``$FACESPACE_HOME``) that is not a folder, or
    that cannot be written while weights the pipeline needs are not in it yet."""
    from ..pretrained.registry import resolve_config
    from ..pretrained.weights import cache_dir, is_cached

    root = cache_dir()
    what = "weight cache ($FACESPACE_HOME)"
    try:
        if root.exists() and not root.is_dir():
            raise FacespaceError(f"{what} {describe(root)}: is not a folder")
    except OSError as exc:
        raise FacespaceError(f"{what} {describe(root)}: {exc.strerror or exc}") from None
    detectors = [resolve_config(name, "detector") for name in DETECTOR_MODELS[pipeline.detector_settings.name]]
    configs = [e.config for e in pipeline.embedders.values()] + detectors
    if not all(is_cached(c) for c in configs):
        check_output(root, what, folder=True)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


def _device(text: str) -> str:
    """``--device``: a torch device that exists on this machine (checked before any work)."""
    if text == "cpu":
        return text  # the default: no need to import torch while parsing
    from ..runtime.device import resolve_device

    try:
        resolve_device(text)
    except OptionError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def threshold_type(text: str) -> float:
    """A ``--threshold``: a finite squared distance between unit vectors, in [0, 4]."""
    value = _finite_float(text)
    if not 0 <= value <= 4:
        raise argparse.ArgumentTypeError(f"a threshold is a squared distance in [0, 4], got {text!r}")
    return value


def fraction_type(text: str) -> float:
    """A finite number in [0, 1] (an overlap, a rate)."""
    value = _finite_float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} must lie in [0, 1]")
    return value


def check_output(path: str | os.PathLike, what: str, folder: bool = False) -> Path:
    """``path`` when an output (a file, or with ``folder`` a folder) can be written there: the
    target is not a folder (or, with ``folder``, is one), and its nearest existing ancestor is a
    folder we can create files in (missing folders are made when writing). Checked before the
    work starts, so a bad ``--out`` fails at once instead of after it; :class:`FacespaceError`."""
    path = Path(path)
    name = f"{what} {describe(path)}"
    try:
        if path.is_dir() != folder and path.exists():
            raise FacespaceError(f"{name}: is a folder" if not folder else f"{name}: is not a folder")
        place = path if folder else path.parent
        while not place.exists() and place != place.parent:
            place = place.parent
        if not place.is_dir():
            raise FacespaceError(f"{name}: {describe(place)} is not a folder")
        handle, probe = tempfile.mkstemp(prefix=".facespace-probe-", dir=place)
    except OSError as exc:
        raise FacespaceError(f"{name}: cannot be written ({exc.strerror or exc})") from None
    os.close(handle)
    os.unlink(probe)
    return path


@contextmanager
def write_errors(path: str | os.PathLike) -> Iterator[None]:
    """An ``OSError`` while writing ``path`` (disk full, a folder gone) becomes one
    :class:`FacespaceError` naming it, not a traceback."""
    try:
        yield
    except OSError as exc:
        raise FacespaceError(f"{describe(path)}: could not be written ({exc.strerror or exc})") from None


@contextmanager
def output_file(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path to write ``path``'s content to; it replaces ``path`` only when the block
    succeeds, so a failure never destroys an earlier result (:func:`facespace.files.atomic_path`)."""
    with write_errors(path), atomic_path(path) as tmp:
        yield tmp
