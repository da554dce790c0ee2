"""``facespace identify``: who is in these photos, according to a gallery (opened read-only).

The search options are checked when the arguments are parsed (exit 2, before any
model or gallery is loaded): ``--top`` a positive whole number, ``--far`` strictly
between 0 and 1, ``--threshold`` a squared distance between unit embeddings, 0 to 4.

A gallery of another model than ``--model`` is searched through a stored compatibility map
when one joins the two (:meth:`facespace.gallery.Identifier.for_pipeline` with ``allow_map``),
and the output says which; the threshold is then the pipeline model's calibrated one (an
approximation for mapped vectors; ``--threshold`` overrides). Without a map it is refused.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import FacespaceError
from .common import _finite_float, _positive_int, add_pipeline_options, threshold_type
from .gallery import open_gallery, pipeline_for_gallery


def far_type(text: str) -> float:
    """A ``--far``: a false-accept rate, a finite number strictly between 0 and 1."""
    value = _finite_float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"a false-accept rate lies strictly between 0 and 1, got {text!r}")
    return value


def add_search_options(parser: argparse.ArgumentParser) -> None:
    from ..gallery.search import INDEX_KINDS

    group = parser.add_argument_group("search")
    group.add_argument("--top", "-k", type=_positive_int, default=5, help="candidates to list per face (default 5)")
    group.add_argument("--threshold", type=threshold_type, default=None,
                       help="squared distance (0 to 4) above which a face is 'unknown' "
                            "(default: calibrated for --far)")
    group.add_argument("--far", type=far_type, default=0.01,
                       help="target false-accept rate of a search for the calibrated threshold, between 0 and 1 "
                            "(default 0.01)")
    group.add_argument("--index", choices=INDEX_KINDS, default="auto",
                       help="search structure (default auto: exact for small galleries, FAISS for large)")


def identifier_from_args(args: argparse.Namespace, gallery, pipeline):
    from ..gallery import Identifier

    return Identifier.for_pipeline(gallery, pipeline, threshold=args.threshold, far=args.far, index=args.index,
                                   allow_map=True)


def register(sub: argparse._SubParsersAction) -> None:
    identify = sub.add_parser("identify", help="name the faces in images using a gallery")
    identify.add_argument("images", nargs="*", metavar="IMG")
    identify.add_argument("--embeddings", metavar="FOLDER", default=None,
                          help="identify the faces of a Parquet embeddings folder (`facespace embed --out FOLDER`) "
                               "instead of images: nothing is embedded again")
    identify.add_argument("--gallery", "-g", required=True, metavar="GALLERY", help="gallery file or postgresql:// URL")
    identify.add_argument("--json", action="store_true", help="print JSON lines, one per image")
    add_search_options(identify)
    add_pipeline_options(identify)
    identify.set_defaults(handler=run_identify)


def run_identify(args: argparse.Namespace) -> int:
    if bool(args.images) == bool(args.embeddings):
        raise FacespaceError("give either images or --embeddings FOLDER")
    if args.embeddings:
        from ..embeddings_io import read_embeddings

        table = read_embeddings(args.embeddings)  # a bad folder is refused before the gallery is opened
        args.model = args.model or table.model
    with open_gallery(args.gallery, mode="read") as gallery:
        pipeline = pipeline_for_gallery(args, gallery)
        identifier = identifier_from_args(args, gallery, pipeline)
        if identifier.map_name and not args.json:
            print(f"# gallery of {gallery.model} searched through map {identifier.map_name}")
    mapped = {"map": identifier.map_name} if identifier.map_name else {}
    failures = 0
    results = (pipeline.iter_embed_images(args.images, on_error="report") if not args.embeddings
               else _dataset_results(table, pipeline))
    for result in results:
        if not result.ok:
            print(f"facespace: error: {result.error}", file=sys.stderr)
            failures += 1
            continue
        found = identifier.search([f.embedding for f in result.faces], k=args.top) if result.faces else []
        found = [ident.with_quality(f.quality, pipeline.min_quality) for f, ident in zip(result.faces, found)]
        if args.json:
            print(json.dumps({"image": result.source, **mapped, "faces": [
                {**f.face.to_dict(), **ident.to_dict()} for f, ident in zip(result.faces, found)]}))
            continue
        if not result.faces:
            print(f"{result.source}: no face found")
        for f, ident in zip(result.faces, found):
            box = ",".join(str(int(round(v))) for v in f.face.box)
            best = ident.best
            print(f"{result.source}\t[{box}]\t{ident.identity}\tdistance={best.distance:.3f}\t"
                  f"p={best.probability:.3f}\tquality={f.quality:.2f}")
    return 1 if failures else 0


def _dataset_results(table, pipeline):
    """The faces of an embeddings dataset, image by image, as the pipeline would have made them;
    a dataset of another model or preprocessing than ``pipeline`` is refused."""
    from ..errors import ModelMismatchError
    from ..types import EmbeddedFace, Face, ImageResult

    if (table.model, table.preprocessing_id) != (pipeline.model_name, pipeline.preprocessing_id):
        raise ModelMismatchError(f"the embeddings were made by {table.model} [{table.preprocessing_id}], the search "
                                 f"expects {pipeline.model_name} [{pipeline.preprocessing_id}]")
    for image, rows in table.by_image().items():
        yield ImageResult(source=image, faces=[EmbeddedFace(Face(table.boxes[r], float(table.scores[r]),
                                                                 table.landmarks[r], bool(table.detected[r])),
                                                            table.embeddings[r]) for r in rows])


__all__ = ["register", "add_search_options", "identifier_from_args", "far_type", "FacespaceError"]
