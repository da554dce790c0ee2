"""``facespace attend SOURCE -g GALLERY --log LOG``: attendance from a video, a stream or a camera;
``facespace attendance export|list LOG``: the log's events as CSV or a table.

``attend`` exits 0 when the source ended normally (the end of a file, ``--max-frames``), 3 when
it stopped early (a file shorter than its header says, or a stream that stayed down through
every reconnection; the message says which, and every event logged so far is kept), 1 on an
error (a bad SOURCE, gallery or log), 2 on bad options and 130 on Ctrl-C (the run is recorded as
interrupted).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys

from ..imageio import describe
from .common import (_finite_float, _positive_int, add_group, add_pipeline_options, check_output, fraction_type,
                     output_file, threshold_type)
from .identify import far_type

#: ``attend``'s exit status when the source stopped before its end (truncated file, lost stream).
EXIT_STOPPED = 3


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


def _positive(text: str) -> float:
    """A finite number above 0 (seconds, degrees)."""
    value = _finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def _iso_time(text: str) -> float:
    """``--start-time``: ISO 8601 (local time when it has no offset) as epoch seconds."""
    try:
        stamp = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time (e.g. 2026-12-01T08:58:00)") from None
    return stamp.astimezone().timestamp()


def register(sub: argparse._SubParsersAction) -> None:
    _register_attend(sub)
    actions = add_group(sub, "attendance", help="read an attendance log: export CSV, list events",
                        dest="attendance_command", metavar="ACTION")
    export = actions.add_parser("export", help="write the events as CSV")
    export.add_argument("log", metavar="LOG", help="attendance log (opened read-only)")
    export.add_argument("--csv", required=True, metavar="OUT", help="CSV file to write ('-': stdout)")
    listing = actions.add_parser("list", help="print the events (or the anonymous tracks)")
    listing.add_argument("log", metavar="LOG", help="attendance log (opened read-only)")
    listing.add_argument("--tracks", action="store_true", help="list the anonymous tracks instead")
    listing.add_argument("--json", action="store_true", help="print JSON")
    for parser in (export, listing):
        parser.add_argument("--person", help="only this person's events")
        parser.add_argument("--day", metavar="YYYY-MM-DD", help="only events that began on this (local) day")
    export.set_defaults(handler=run_export)
    listing.set_defaults(handler=run_list)


def _register_attend(sub: argparse._SubParsersAction) -> None:
    from ..attendance.runner import AttendSettings

    d = AttendSettings()
    p = sub.add_parser("attend", help="log who is seen in a video, stream or camera (attendance)",
                       description="Track and identify the faces of SOURCE (a video file, a stream URL such as "
                                   "rtsp://... or http://..., or a camera index such as 0) and log one event per "
                                   "person per stay in LOG; unknown faces are kept as anonymous tracks.")
    p.add_argument("source", metavar="SOURCE", help="video file, stream URL or camera index")
    p.add_argument("--gallery", "-g", required=True, metavar="GALLERY", help="gallery of the people to recognise")
    p.add_argument("--log", required=True, metavar="LOG", help="attendance log (SQLite; created if missing)")
    p.add_argument("--interval", type=_positive, default=d.interval, metavar="SECONDS",
                   help=f"seeing a person again within this many seconds extends their event (default {d.interval:g})")
    p.add_argument("--every", type=_positive_int, default=d.every, metavar="N",
                   help=f"detect on every n-th frame (default {d.every})")
    p.add_argument("--max-frames", type=_positive_int, default=None, metavar="N", help="stop after N frames")
    p.add_argument("--start-time", type=_iso_time, default=None, metavar="ISO",
                   help="log time of a file's first frame (default: the file's modification time)")
    p.add_argument("--json", action="store_true", help="print the run's summary as JSON")
    q = p.add_argument_group("identification")
    q.add_argument("--min-good", type=_positive_int, default=d.min_good, metavar="N",
                   help=f"good sightings a track needs before it is identified (default {d.min_good})")
    q.add_argument("--min-score", type=fraction_type, default=d.min_score,
                   help=f"least detection score of a good sighting (default {d.min_score})")
    q.add_argument("--max-yaw", type=_positive, default=d.max_yaw, metavar="DEGREES",
                   help=f"largest estimated yaw of a good sighting (default {d.max_yaw:g})")
    q.add_argument("--threshold", type=threshold_type, default=None,
                   help="squared distance above which a track is unknown (default: calibrated for --far)")
    q.add_argument("--far", type=far_type, default=0.01, help="false-accept rate of a search (default 0.01)")
    r = p.add_argument_group("live sources")
    r.add_argument("--reconnect", type=_non_negative_int, default=5, metavar="N",
                   help="reconnection attempts after a stream fails, in a row (default 5)")
    r.add_argument("--backoff", type=_positive, default=1.0, metavar="SECONDS",
                   help="wait before the first reconnection, doubled for each next one up to 30 s (default 1)")
    r.add_argument("--stall-timeout", type=_positive, default=10.0, metavar="SECONDS",
                   help="a stream that sends nothing for this long has failed (default 10)")
    add_pipeline_options(p)
    p.set_defaults(handler=run_attend)


def run_attend(args: argparse.Namespace) -> int:
    from ..attendance import AttendanceLog, AttendSettings, FrameSource, Reconnect, attend, parse_source
    from ..errors import OptionError
    from ..gallery import Identifier
    from .gallery import open_gallery, pipeline_for_gallery

    source = parse_source(args.source)
    if source.live and args.start_time is not None:
        raise OptionError("--start-time is for a video file; a live source is logged on the wall clock")
    start = args.start_time
    if source.kind == "file" and start is None:
        start = os.stat(source.target).st_mtime
    check_output(args.log, "--log")
    settings = AttendSettings(every=args.every, interval=args.interval, min_good=args.min_good,
                              min_score=args.min_score, max_yaw=args.max_yaw)
    with AttendanceLog(args.log, mode="create") as log:  # a bad log is refused before the model loads
        with open_gallery(args.gallery, mode="read") as gallery:
            pipeline = pipeline_for_gallery(args, gallery)
            identifier = Identifier.for_pipeline(gallery, pipeline, threshold=args.threshold, far=args.far,
                                                 allow_map=True)
        summary = attend(pipeline, identifier, FrameSource(source, args.stall_timeout), log, start=start,
                         settings=settings, max_frames=args.max_frames,
                         reconnect=Reconnect(args.reconnect, args.backoff), report=_report)
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2))
    people = sorted({n.person for n in summary.notes})
    print(f"facespace: {summary.frames} frames ({summary.sampled} analysed) in {summary.seconds:.1f} s; "
          f"{summary.events} new events ({', '.join(people) or 'nobody known'}), {summary.anonymous} anonymous "
          f"tracks; logged in {describe(args.log)} (run {summary.run})", file=sys.stderr)
    if summary.status != "ended":
        print(f"facespace: warning: {summary.message}", file=sys.stderr)
        return EXIT_STOPPED
    return 0


def _report(message: str) -> None:
    print(f"facespace: {message}", file=sys.stderr, flush=True)


def run_export(args: argparse.Namespace) -> int:
    from ..attendance import AttendanceLog

    if args.csv != "-":
        check_output(args.csv, "--csv")
    with AttendanceLog(args.log, mode="read") as log:
        text = log.to_csv(log.events(person=args.person, day=args.day))
    if args.csv == "-":
        sys.stdout.write(text)
        return 0
    with output_file(args.csv) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="")
    print(f"wrote {text.count(chr(10)) - 1} events to {describe(args.csv)}", file=sys.stderr)
    return 0


def run_list(args: argparse.Namespace) -> int:
    from ..attendance import AttendanceLog

    with AttendanceLog(args.log, mode="read") as log:
        rows = ([t.to_dict() for t in log.tracks()] if args.tracks else
                [e.to_dict() for e in log.events(person=args.person, day=args.day)])
    if args.json:
        print(json.dumps({"tracks" if args.tracks else "events": rows}, indent=2))
        return 0
    for row in rows:
        who = f"track {row['id']}" if args.tracks else row["person"]
        print(f"{row['id']}\t{who}\t{row['first_seen']}\t{row['last_seen']}\t{row['source']}")
    return 0
