"""``facespace video IN.mp4``: face tracks in a video, named with a gallery."""

from __future__ import annotations

import argparse
import json
import sys

from ..imageio import describe
from .common import (_positive_int, add_pipeline_options, add_quiet_option, check_output, fraction_type, output_file,
                     pipeline_from_args, write_errors)
from .gallery import open_gallery, pipeline_for_gallery
from .identify import add_search_options, identifier_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("video", help="track faces in a video and identify each track")
    p.add_argument("video", metavar="IN", help="video file (anything OpenCV reads, e.g. .mp4)")
    p.add_argument("--every", type=_positive_int, default=5, help="process every n-th frame (default 5)")
    p.add_argument("--gallery", "-g", metavar="GALLERY", help="gallery (file or postgresql:// URL) to identify the tracks with")
    p.add_argument("--json", metavar="FILE", help="write the tracks as JSON here (default: stdout)")
    p.add_argument("--annotate", metavar="OUT.mp4", help="also write a copy with boxes and names")
    p.add_argument("--max-frames", type=_positive_int, default=None, help="stop after this many frames")
    p.add_argument("--iou", type=fraction_type, default=0.3, help="least box overlap that links detections (0.3)")
    p.add_argument("--min-sightings", type=_positive_int, default=1, help="drop shorter tracks (default 1)")
    add_quiet_option(p)
    add_search_options(p)
    add_pipeline_options(p)
    p.set_defaults(handler=run_video)


def run_video(args: argparse.Namespace) -> int:
    from ..video import IoUTracker, annotate_video, process_video

    for option in ("json", "annotate"):
        if getattr(args, option):
            check_output(getattr(args, option), f"--{option}")
    identifier = None
    if args.gallery:
        with open_gallery(args.gallery) as gallery:
            pipeline = pipeline_for_gallery(args, gallery)
            identifier = identifier_from_args(args, gallery, pipeline)
    else:
        pipeline = pipeline_from_args(args)
    result = process_video(pipeline, args.video, every=args.every, identifier=identifier,
                           tracker=IoUTracker(iou_threshold=args.iou), max_frames=args.max_frames,
                           min_sightings=args.min_sightings, progress=not args.quiet)
    report = result.to_dict()
    if args.annotate:
        with write_errors(args.annotate):
            report["annotated"] = describe(annotate_video(result, args.annotate, max_frames=args.max_frames))
    text = json.dumps(report, indent=2)
    if args.json:
        with output_file(args.json) as tmp:
            tmp.write_text(text, encoding="utf-8")
        names = ", ".join(sorted({t.name for t in result.tracks})) or "none"
        print(f"{len(result.tracks)} tracks ({names}); wrote {describe(args.json)}", file=sys.stderr)
    else:
        print(text)
    return 0
