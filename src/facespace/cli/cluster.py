"""``facespace cluster PHOTOS_DIR --out OUT``: group the faces of a photo collection by person.

Writes ``OUT/clusters.json``, ``OUT/thumbs/*.jpg`` (one thumbnail per face)
and ``OUT/index.html``: one grid of face thumbnails per cluster, largest
first, each linked to its source photo.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import sys
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np
from PIL import Image

from ..clustering import GRAPHS, KNN_MIN_FACES, LINKAGES, METHODS, cluster, default_threshold
from ..embeddings_io import is_embedding_dataset
from ..errors import FacespaceError
from ..files import image_files
from ..imageio import describe
from ..thumbnails import face_thumbnail
from .common import (_positive_int, add_pipeline_options, add_quiet_option, check_output, output_file,
                     pipeline_from_args, threshold_type, write_errors)

THUMB = 112


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cluster", help="group the faces in a folder of photos by person (JSON + HTML)")
    p.add_argument("photos", metavar="PHOTOS_DIR", help="folder of photos (searched recursively), or a Parquet "
                   "embeddings folder written by `facespace embed --out FOLDER` (its faces are clustered as they are)")
    p.add_argument("--out", required=True, metavar="OUT", help="output folder for clusters.json and index.html")
    p.add_argument("--method", choices=METHODS, default="agglomerative", help="default: agglomerative")
    p.add_argument("--threshold", type=threshold_type, default=None,
                   help="squared-distance threshold (default: chosen for the number of faces and the method "
                        "from the model's calibration, at most its verification threshold)")
    p.add_argument("--k", type=_positive_int, default=None, help="clusters for k-means (default: estimated)")
    p.add_argument("--linkage", choices=LINKAGES, default="average", help="agglomerative linkage")
    p.add_argument("--graph", choices=GRAPHS, default="auto",
                   help="pair graph: all pairs, or the FAISS k-nearest-neighbour graph (memory n*k; "
                        f"default auto: knn from {KNN_MIN_FACES:,} faces)")
    add_quiet_option(p)
    add_pipeline_options(p)
    p.set_defaults(handler=run_cluster)


def find_images(root: Path) -> list[Path]:
    try:
        if root.is_file():
            return [root]
        if not root.is_dir():
            raise FacespaceError(f"{describe(root)}: no such folder")
        return image_files(root)
    except OSError as exc:
        raise FacespaceError(f"{describe(root)}: cannot be read ({exc.strerror or exc})") from None


def run_cluster(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    out = check_output(args.out, "--out", folder=True)
    if is_embedding_dataset(args.photos):
        images, model, preprocessing_id, verification, faces, errors, vectors = _dataset_faces(args.photos, out)
    else:
        paths = find_images(Path(args.photos))
        if not paths:
            raise FacespaceError(f"{describe(args.photos)}: no images found")
        pipeline = pipeline_from_args(args)
        faces, errors, embeddings = _embed_faces(pipeline, paths, out, progress=not args.quiet)
        vectors = np.stack(embeddings) if embeddings else np.zeros((0, pipeline.dim), np.float32)
        images, model, preprocessing_id = len(paths), pipeline.model_name, pipeline.preprocessing_id
        verification = pipeline.threshold
    threshold = args.threshold if args.threshold is not None else \
        default_threshold(model, args.method, len(vectors), verification)
    result = cluster(vectors, args.method, threshold=threshold, k=args.k, linkage=args.linkage, graph=args.graph)
    clusters = [{"cluster": i, "size": int(len(members)), "faces": [faces[j] for j in members]}
                for i, members in enumerate(result.clusters())]
    report = {
        "photos": describe(args.photos), "images": images, "faces": len(faces), "errors": errors,
        "model": model, "preprocessing_id": preprocessing_id,
        "method": result.method, "params": result.params, "threshold": threshold,
        "clusters": clusters, "seconds": round(time.perf_counter() - started, 2),
    }
    for name, text in (("clusters.json", json.dumps(report, indent=2)), ("index.html", render_html(report))):
        with output_file(out / name) as tmp:
            tmp.write_text(text, encoding="utf-8")
    print(f"{len(faces)} faces in {images} images -> {len(clusters)} clusters; wrote "
          f"{describe(out / 'clusters.json')} and {describe(out / 'index.html')}")
    return 1 if errors else 0


def _embed_faces(pipeline, paths: list[Path], out: Path, progress: bool) -> tuple[list, list, list]:
    """(face records, unreadable images, embeddings) of every face in ``paths``; writes each
    face's thumbnail into ``out/thumbs``. An unreadable photo is reported and skipped."""
    faces, errors, embeddings = [], [], []
    with write_errors(out / "thumbs"):
        (out / "thumbs").mkdir(parents=True, exist_ok=True)
    for path, result in zip(paths, pipeline.iter_embed_images(paths, progress=progress, total=len(paths))):
        if result.ok and result.faces:
            try:
                image = Image.fromarray(pipeline.load(path))
            except FacespaceError as exc:  # readable a moment ago: changed or removed since
                result.error = str(exc)
        if not result.ok:
            errors.append({"image": describe(path), "error": result.error})
            print(f"facespace: warning: {result.error}", file=sys.stderr)
            continue
        for face in result.faces:
            number = len(faces)
            thumb = f"thumbs/face_{number:05d}.jpg"
            with write_errors(out / thumb):
                face_thumbnail(image, face.face.box, THUMB).save(out / thumb, quality=88)
            faces.append({"face": number, "image": describe(path), "href": _href(path, out), "thumbnail": thumb,
                          **face.face.to_dict()})
            embeddings.append(face.embedding)
    return faces, errors, embeddings


def _dataset_faces(source: str, out: Path) -> tuple:
    """(images, model, preprocessing id, verification threshold, face records, unreadable images, vectors)
    of a Parquet embeddings dataset (``facespace embed --out FOLDER``); thumbnails come from the
    recorded images where they are still readable."""
    from ..embeddings_io import read_embeddings
    from ..imageio import load_image
    from ..pretrained.registry import resolve_config

    table = read_embeddings(source)
    threshold = resolve_config(table.model, "embedder").threshold
    faces: list[dict | None] = [None] * len(table)
    errors: list[dict] = []
    with write_errors(out / "thumbs"):
        (out / "thumbs").mkdir(parents=True, exist_ok=True)
    for image_path, rows in table.by_image().items():
        try:
            image = Image.fromarray(load_image(image_path))
        except FacespaceError as exc:
            errors.append({"image": image_path, "error": f"{exc} (its faces are clustered without thumbnails)"})
            image = None
        for row in rows:
            thumb = f"thumbs/face_{row:05d}.jpg"
            if image is not None:
                with write_errors(out / thumb):
                    face_thumbnail(image, table.boxes[row], THUMB).save(out / thumb, quality=88)
            faces[row] = {"face": row, "image": image_path, "href": _href(Path(image_path), out),
                          "thumbnail": thumb if image is not None else "", "box": table.boxes[row].round(2).tolist(),
                          "score": round(float(table.scores[row]), 5), "detected": bool(table.detected[row])}
    return (len(table.by_image()), table.model, table.preprocessing_id, threshold, faces, errors,
            table.embeddings)


def _href(path: Path, out: Path) -> str:
    """A link from ``out/index.html`` to ``path``: percent-encoded bytes, so any file name works."""
    try:
        rel = os.path.relpath(path.resolve(), out.resolve())
    except ValueError:  # another drive on Windows
        return path.resolve().as_uri()
    return quote(os.fsencode(rel.replace(os.sep, "/")))


def render_html(report: dict) -> str:
    e = html.escape
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Face clusters: {e(str(report['photos']))}</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:1.5em;background:#fafafa}"
        "section{margin-bottom:1.5em}h2{font-size:1.05em;margin:.4em 0}"
        ".grid{display:flex;flex-wrap:wrap;gap:6px}.grid a{display:block;line-height:0}"
        f".grid img{{width:{THUMB}px;height:{THUMB}px;border-radius:4px;border:1px solid #ccc}}"
        ".meta{color:#555}</style></head><body>",
        f"<h1>{len(report['clusters'])} clusters of {report['faces']} faces</h1>",
        f"<p class='meta'>{report['images']} photos in {e(str(report['photos']))}; model "
        f"{e(report['model'])}; {e(report['method'])} {e(json.dumps(report['params']))}</p>",
    ]
    for c in report["clusters"]:
        parts.append(f"<section id='cluster-{c['cluster']}'><h2>Cluster {c['cluster'] + 1} "
                     f"({c['size']} face{'s' if c['size'] != 1 else ''})</h2><div class='grid'>")
        for f in c["faces"]:
            title = e(f"{f['image']} (score {f['score']:.3f})")
            parts.append(f"<a href='{e(f['href'])}' title='{title}'><img src='{e(f['thumbnail'])}' "
                         f"alt='face {f['face']}' loading='lazy'></a>")
        parts.append("</div></section>")
    if report["errors"]:
        parts.append("<h2>Unreadable photos</h2><ul>")
        parts += [f"<li>{e(x['image'])}: {e(x['error'])}</li>" for x in report["errors"]]
        parts.append("</ul>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
