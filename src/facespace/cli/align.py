"""``facespace align SRC DST``: pre-align a folder-per-identity dataset for training.

Runs the pipeline's MTCNN detector on every image of ``SRC/<identity>/`` and
writes the largest face, aligned (or margin-cropped) as ``FacePipeline`` does,
to ``DST/<identity>/``. Multiprocess, resumable (re-running skips what is done),
images without a face are listed in ``DST/no_face.tsv``.
"""

from __future__ import annotations

import argparse
import json

from ..errors import FacespaceError


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("align", help="pre-align a dataset (detect + align every image, resumable)")
    parser.add_argument("src", metavar="SRC", help="dataset folder: SRC/<identity>/<image>")
    parser.add_argument("dst", metavar="DST", help="output folder (created; re-runs resume)")
    parser.add_argument("--size", type=int, default=160, help="output side in pixels (default 160)")
    parser.add_argument("--mode", choices=("align", "margin"), default="align",
                        help="5-point alignment or Sandberg's margin crop (default: align)")
    parser.add_argument("--margin", type=int, default=32, help="margin in pixels for --mode margin")
    parser.add_argument("--min-face-size", type=int, default=20)
    parser.add_argument("--format", choices=("png", "jpg"), default="png")
    parser.add_argument("--workers", type=int, default=1, help="processes (each with its own detector)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--limit", type=int, default=None, help="align at most this many pending images")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        from facespace_train.align_dataset import AlignSettings, align_dataset
    except ImportError as exc:
        raise FacespaceError(f"`facespace align` needs the facespace_train package ({exc})") from exc
    settings = AlignSettings(size=args.size, mode=args.mode, margin=args.margin,
                             min_face_size=args.min_face_size, extension="." + args.format, device=args.device)
    try:
        counts = align_dataset(args.src, args.dst, settings, workers=args.workers,
                               progress=not args.no_progress, limit=args.limit)
    except FileNotFoundError as exc:
        raise FacespaceError(str(exc)) from exc
    print(json.dumps(counts))
    return 0
