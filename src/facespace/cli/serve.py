"""``facespace serve``: the REST service and its web page under uvicorn.

``--workers N`` runs N uvicorn worker processes on one port (the kernel spreads the connections
among them). Each worker builds its own app, pipelines and gallery connection with
:func:`app_from_environment`, the import-string factory uvicorn calls in every worker: the
command's settings reach it as JSON in ``$FACESPACE_SERVE_ARGS`` (never the API key: each worker
reads that from the variable ``--api-key-env`` names). The workers share the gallery through its
store: a PostgreSQL gallery takes their writes at once; a SQLite file one writer at a time, on
one machine only. A worker sees another's enrolment on its next identify, since its cached
identifier is keyed by the gallery's generation, which is read from the gallery each time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

from .common import _positive_int, add_pipeline_options, pipeline_from_args

#: Where ``--workers`` hands the command's settings to the app factory in each worker process.
SERVE_ARGS_ENV = "FACESPACE_SERVE_ARGS"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the REST service (FastAPI + uvicorn) with a web page at /")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--gallery", "-g", metavar="GALLERY",
                   help="gallery file or postgresql:// URL for identify/enrol (created if missing)")
    p.add_argument("--attendance", metavar="LOG", help="attendance log (of `facespace attend`) served at "
                                                       "/api/attendance (created if missing)")
    p.add_argument("--workers", type=_positive_int, default=1, metavar="N",
                   help="server processes on the port, each with its own inference threads (default 1); they "
                        "share the gallery: use a PostgreSQL one, a SQLite file takes one writer at a time")
    p.add_argument("--api-key-env", metavar="VAR", default="FACESPACE_API_KEY",
                   help="environment variable holding the API key; unset means no key (default FACESPACE_API_KEY)")
    p.add_argument("--max-upload-mb", type=float, default=10.0, help="largest uploaded file (default 10 MB)")
    p.add_argument("--max-megapixels", type=float, default=40.0, help="largest image (default 40 Mpx)")
    p.add_argument("--max-request-megapixels", type=float, default=1000.0,
                   help="decoded pixels of all the images of one request, from their headers (default 1000 Mpx)")
    p.add_argument("--allowed-hosts", type=_comma_list, default=(), metavar="LIST",
                   help="Host header values answered besides localhost, 127.0.0.1, [::1] and --host at --port: "
                        "comma list of name (any port) or name:port; * allows any (default none)")
    p.add_argument("--allowed-origins", type=_comma_list, default=(), metavar="LIST",
                   help="web origins (scheme://host[:port]) besides the server's own that may POST/PUT/PATCH/DELETE: "
                        "comma list; * allows any (default none)")
    p.add_argument("--inference-threads", type=_positive_int, default=None, metavar="N",
                   help="pipelines run at once, each on one torch thread unless FACESPACE_NUM_THREADS says "
                        "otherwise (default: one per usable core, at most 8)")
    p.add_argument("--max-queue", type=_positive_int, default=None, metavar="N",
                   help="requests admitted to inference at once (running, waiting or reading uploads); one more is "
                        "answered 503 with Retry-After at once (default 2 x inference threads + 2)")
    p.add_argument("--queue-timeout", type=float, default=30.0, metavar="S",
                   help="seconds an admitted request may wait for an inference thread before a 503 (default 30)")
    p.add_argument("--batch-window-ms", type=float, default=0.0, metavar="MS",
                   help="embed the faces of concurrent requests together: the inference threads share one "
                        "network and a request waits up to MS ms for others' faces (default 0: each thread "
                        "embeds its own request with its own network)")
    p.add_argument("--far", type=float, default=0.01, help="false-accept rate for identification (default 0.01)")
    p.add_argument("--albums-root", metavar="DIR",
                   help="folder whose sub-folders the web app's Albums page may cluster (nothing outside it; "
                        "default: uploaded photos only)")
    p.add_argument("--demo", nargs=2, metavar="IMG", help="two images served for the page's ?demo= mode")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    add_pipeline_options(p)
    p.set_defaults(handler=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError:
        print("facespace: error: serving needs the server extra: pip install 'facespace[server]'", file=sys.stderr)
        return 1
    from ..gallery import open_gallery
    from ..server.pool import default_workers

    if args.gallery:
        open_gallery(args.gallery, mode="create").close()  # create it now, and fail early on a bad one
    if args.attendance:
        from ..attendance import AttendanceLog

        AttendanceLog(args.attendance).close()  # the same for the attendance log
    if args.albums_root and not os.path.isdir(args.albums_root):
        print(f"facespace: error: --albums-root {args.albums_root}: not a folder", file=sys.stderr)
        return 2
    if not 0 <= args.batch_window_ms <= 1000:
        print(f"facespace: error: --batch-window-ms must lie in [0, 1000], got {args.batch_window_ms:g}",
              file=sys.stderr)
        return 2
    threads = args.inference_threads or default_workers()
    key = "API key required" if os.environ.get(args.api_key_env) else "no API key"
    if args.workers == 1:
        app = app_from_args(args)
        print(f"facespace: serving on http://{args.host}:{args.port}/ ({threads} inference thread(s), {key})",
              file=sys.stderr, flush=True)
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
        return 0
    os.environ[SERVE_ARGS_ENV] = json.dumps({k: v for k, v in vars(args).items() if k != "handler"})
    print(f"facespace: serving on http://{args.host}:{args.port}/ ({args.workers} workers x {threads} inference "
          f"thread(s), {key})", file=sys.stderr, flush=True)
    uvicorn.run(f"{__name__}:app_from_environment", factory=True, workers=args.workers, host=args.host,
                port=args.port, log_level=args.log_level)
    return 0


def app_from_args(args: argparse.Namespace) -> "FastAPI":
    """The app ``facespace serve ARGS`` serves, its pipelines built (one process's)."""
    from ..server import Limits, Security, create_app
    from ..server.app import warm
    from ..server.pool import default_workers, serving_threads

    limits = Limits(max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
                    max_request_bytes=int(args.max_upload_mb * 1024 * 1024) * 4 + 65536,
                    max_pixels=int(args.max_megapixels * 1_000_000),
                    max_request_pixels=int(args.max_request_megapixels * 1_000_000),
                    max_queue=args.max_queue, queue_timeout=args.queue_timeout)
    security = Security.for_server(args.host, args.port, args.allowed_hosts, args.allowed_origins)
    api_key = os.environ.get(args.api_key_env) or None
    factory = lambda **kw: pipeline_from_args(args, max_pixels=limits.max_pixels, **kw)  # noqa: E731
    if args.batch_window_ms > 0:
        from ..server.batching import sharing_embedder

        factory = sharing_embedder(factory, args.batch_window_ms / 1000)
    app = create_app(factory, gallery_path=args.gallery, api_key=api_key, limits=limits,
                     demo_images=args.demo or (), far=args.far, security=security,
                     inference_threads=args.inference_threads or default_workers(),
                     albums_root=args.albums_root, attendance_path=args.attendance)
    serving_threads()
    warm(app)
    return app


def app_from_environment() -> "FastAPI":
    """The app of one ``--workers`` process (uvicorn's factory): the command's settings from
    ``$FACESPACE_SERVE_ARGS``."""
    settings = os.environ.get(SERVE_ARGS_ENV)
    if not settings:
        raise RuntimeError(f"{SERVE_ARGS_ENV} is not set; start the workers with `facespace serve --workers N`")
    return app_from_args(argparse.Namespace(**json.loads(settings)))


def _comma_list(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())

