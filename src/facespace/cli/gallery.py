"""``facespace gallery enroll | list | remove | rename | export | import | migrate``.

``list`` and ``export`` open the gallery read-only (nothing in the file changes);
``remove`` and ``rename`` need an existing gallery; only ``enroll`` and ``import``
create one, and only where no file exists; ``migrate`` writes a new gallery of another model
beside the old one (never changing it). A file that is not a facespace gallery
is refused, unchanged. Enrolling or importing what a gallery already has adds
nothing and says how many were skipped as duplicates.

GALLERY is a SQLite file or a ``postgresql://user@host/db`` URL (a PostgreSQL + pgvector
gallery, :mod:`facespace.gallery.pg_store`); every action works on both.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, get_args

from ..errors import OptionError
from ..quantized import QUANTIZATIONS
from .common import add_group, add_pipeline_options, add_quiet_option, pipeline_from_args, pipeline_options


if TYPE_CHECKING:
    from ..gallery.backend import GalleryBackend
    from ..gallery.records import EnrolResult
    from ..gallery.schema import GalleryMode


def register(sub: argparse._SubParsersAction) -> None:
    from ..gallery.backend import OnConflict

    actions = add_group(sub, "gallery", help="manage a gallery of enrolled identities (a SQLite file or a "
                                             "postgresql:// URL)",
                        dest="gallery_command", metavar="ACTION")

    enroll = _add_action(actions, "enroll", run_enroll,
                         help="enrol a folder-per-person tree, or images of one person",
                         description="Enrol identities. Either --tree DIR (one sub-folder of images per "
                                     "person) or IMG... --name NAME. Each person is one transaction.",
                         gallery_help="gallery file or postgresql:// URL (created if it does not exist)")
    enroll.add_argument("images", nargs="*", metavar="IMG")
    enroll.add_argument("--tree", metavar="DIR", help="folder with one sub-folder of images per person")
    enroll.add_argument("--name", help="identity name for the IMG arguments")
    enroll.add_argument("--replace", action="store_true", help="drop an identity's old embeddings first")
    enroll.add_argument("--json", action="store_true", help="print a JSON report")
    enroll.add_argument("--quantize", choices=QUANTIZATIONS, default=None,
                        help="a new gallery stores int8 codes (1 byte a value: 128 bytes a face for the 128-D "
                             "model; facespace.quantized); an existing gallery keeps its own encoding")
    add_quiet_option(enroll)
    add_pipeline_options(enroll)

    listing = _add_action(actions, "list", run_list, help="list identities")
    listing.add_argument("--json", action="store_true")

    remove = _add_action(actions, "remove", run_remove, help="delete identities and their embeddings")
    remove.add_argument("names", nargs="+", metavar="NAME")

    rename = _add_action(actions, "rename", run_rename, help="rename an identity")
    rename.add_argument("old", metavar="OLD")
    rename.add_argument("new", metavar="NEW")

    export = _add_action(actions, "export", run_export, help="write the gallery to .json or .npz")
    export.add_argument("out", metavar="OUT", help="file ending in .json or .npz")

    imp = _add_action(actions, "import", run_import, help="add identities from a .json or .npz export, or from "
                      "a Parquet embeddings folder of `facespace embed` (each image's largest face, named by its folder)")
    imp.add_argument("source", metavar="FILE")
    imp.add_argument("--on-conflict", choices=get_args(OnConflict), default="merge",
                     help="what to do with names already enrolled (default: merge embeddings)")

    migrate = _add_action(actions, "migrate", run_migrate, help="write a copy of the gallery for another model",
                          description="Convert every identity to --to MODEL through a compatibility map, or "
                                      "with --re-embed by embedding its recorded photos again where they are "
                                      "readable. OLD is opened read-only; the new gallery appears complete or "
                                      "not at all.", gallery_help="the gallery to migrate (left unchanged)")
    migrate.add_argument("--to", required=True, metavar="MODEL", dest="target", help="the new model")
    migrate.add_argument("--map", metavar="NAME", help="compatibility map (default: the best stored one)")
    migrate.add_argument("--out", metavar="NEW", help="new gallery file or postgresql:// URL (default OLD.<MODEL>.db "
                                                      "beside a file OLD; must not exist)")
    migrate.add_argument("--re-embed", action="store_true",
                         help="embed the recorded photos again with MODEL where all of an identity's are readable")
    migrate.add_argument("--json", action="store_true", help="print a JSON report")
    add_pipeline_options(migrate, detection_only=True)  # the re-embedding pipeline: MODEL's default crop


def _add_action(actions: argparse._SubParsersAction, name: str, handler, help: str,
                description: str | None = None, gallery_help: str | None = None) -> argparse.ArgumentParser:
    """``facespace gallery NAME GALLERY ...``, run by ``handler``."""
    parser = actions.add_parser(name, help=help, description=description)
    parser.add_argument("gallery", metavar="GALLERY", help=gallery_help or GALLERY_HELP)
    parser.set_defaults(handler=handler)
    return parser


#: What a GALLERY argument may be.
GALLERY_HELP = "gallery: a SQLite file or a postgresql:// URL"


def open_gallery(location: str, mode: "GalleryMode" = "read", **options) -> "GalleryBackend":
    """The gallery at ``location`` (a file or a URL), opened as ``mode`` says (default read-only: it
    stays as it is); ``options`` go to the backend (``encoding=``)."""
    from ..gallery.backend import open_gallery as open_backend

    return open_backend(location, mode=mode, **options)


def pipeline_for_gallery(args: argparse.Namespace, gallery):
    """The pipeline the options ask for; the model defaults to the one the gallery was built with."""
    model = getattr(args, "model", None)
    if getattr(args, "preset", None) is not None:
        return pipeline_from_args(args)  # the preset names its models; the gallery checks them
    if model is None and gallery is not None and gallery.model and "+" in gallery.model:
        raise OptionError(f"the gallery holds fused embeddings of {gallery.model} (a preset's): pass the --preset "
                          "it was built with")
    if model is None and gallery is not None:
        model = gallery.model
    return pipeline_from_args(args, model=model)


def run_enroll(args: argparse.Namespace) -> int:
    if bool(args.tree) == bool(args.images):
        print("facespace: error: give either --tree DIR or images with --name", file=sys.stderr)
        return 2
    if args.images and not args.name:
        print("facespace: error: --name is required when enrolling images", file=sys.stderr)
        return 2
    with open_gallery(args.gallery, mode="create", encoding=args.quantize) as gallery:
        pipeline = pipeline_for_gallery(args, gallery)
        gallery.check_pipeline(pipeline)
        if args.tree:
            results = gallery.enroll_tree(pipeline, args.tree, replace=args.replace, progress=not args.quiet)
        else:
            results = [gallery.enroll_images(pipeline, args.name, args.images, replace=args.replace,
                                             sources=args.images)]
    if args.json:
        print(json.dumps({"gallery": args.gallery, "identities": [r.to_dict() for r in results]}, indent=2))
    else:
        _print_enrolment(results)
    return 0 if all(r.usable for r in results) else 1


def _print_enrolment(results: list["EnrolResult"]) -> None:
    for r in results:
        print(f"{r.name}: {r.added} embedding{'s' if r.added != 1 else ''} enrolled"
              + (f", {r.duplicates} duplicate{'s' if r.duplicates != 1 else ''} skipped (already enrolled)"
                 if r.duplicates else "")
              + (f", {len(r.skipped)} skipped" if r.skipped else ""))
        for source, reason in r.skipped:
            print(f"  skipped {source}: {reason}", file=sys.stderr)
    if len(results) > 1:
        added, duplicates = sum(r.added for r in results), sum(r.duplicates for r in results)
        print(f"# {len(results)} identities: {added} embeddings enrolled, {duplicates} duplicates skipped")


def run_list(args: argparse.Namespace) -> int:
    with open_gallery(args.gallery, mode="read") as gallery:
        infos = gallery.identities()
        if args.json:
            print(json.dumps({"gallery": args.gallery, "model": gallery.model,
                              "preprocessing_id": gallery.preprocessing_id, "encoding": gallery.encoding,
                              "identities": [i.to_dict() for i in infos]}, indent=2))
            return 0
        print(f"# {len(infos)} identities, model {gallery.model or '-'}, {gallery.encoding} vectors")
        for info in infos:
            print(f"{info.name}\t{info.embeddings}")
    return 0


def run_remove(args: argparse.Namespace) -> int:
    with open_gallery(args.gallery, mode="write") as gallery:
        for name in args.names:
            count = gallery.remove(name)
            print(f"removed {name} ({count} embeddings)")
    return 0


def run_rename(args: argparse.Namespace) -> int:
    with open_gallery(args.gallery, mode="write") as gallery:
        gallery.rename(args.old, args.new)
    print(f"renamed {args.old} -> {args.new}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    with open_gallery(args.gallery, mode="read") as gallery:
        count = gallery.export(args.out)
    print(f"exported {count} identities to {args.out}")
    return 0


def run_import(args: argparse.Namespace) -> int:
    from ..gallery.backend import read_import

    loaded = read_import(args.source)  # a bad file is refused before a gallery is opened or made
    with open_gallery(args.gallery, mode="create") as gallery:
        result = gallery.import_file(loaded, on_conflict=args.on_conflict)
    print(f"imported {result.identities} identities from {args.source}: {result.added} embeddings added, "
          f"{result.duplicates} duplicates skipped (already in the gallery)")
    return 0


def run_migrate(args: argparse.Namespace) -> int:
    from ..compat import load_map
    from ..gallery.migrate import migrate_gallery

    compat_map = load_map(args.map) if args.map else None
    from ..pipeline import FacePipeline

    # what will search the new gallery: its preprocessing id chooses the map (no weights needed to map)
    pipeline = pipeline_from_args(args, model=args.target) if args.re_embed else \
        FacePipeline(**pipeline_options(args, model=args.target))
    result = migrate_gallery(args.gallery, args.out, args.target, compat_map=compat_map,
                             pipeline=pipeline if args.re_embed else None,
                             target_preprocessing=pipeline.preprocessing_id)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(f"migrated {result.identities} identities ({result.embeddings} embeddings) from {result.source} "
          f"to {result.path}: model {result.model}")
    print(f"# {result.re_embedded} re-embedded from their photos, {result.mapped} through map {result.map or '-'}"
          + (f", {result.skipped} photos skipped (no face)" if result.skipped else ""))
    return 0
