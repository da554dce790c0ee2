"""``facespace detect | embed | verify``: the inference pipeline from the shell."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from ..errors import FacespaceError
from ..files import atomic_write_bytes
from ..imageio import describe
from ..quantized import INT8_CODES, QUANTIZATIONS, quantize_int8
from .common import (_positive_int, add_pipeline_options, add_quiet_option, check_output, output_file,
                     pipeline_from_args, pipeline_options, threshold_type)


def register(sub: argparse._SubParsersAction) -> None:
    detect = sub.add_parser("detect", help="find faces and landmarks in images")
    detect.add_argument("images", nargs="+", metavar="IMG")
    detect.add_argument("--json", action="store_true", help="print JSON lines instead of text")
    detect.add_argument("--draw", metavar="OUT_DIR", help="write copies of the images with boxes drawn")
    add_pipeline_options(detect, detection_only=True)
    detect.set_defaults(handler=run_detect)

    from ..batch import ENGINES

    embed = sub.add_parser("embed", help="embed every face of images into a file or a Parquet dataset",
                           description="With --out FILE.npz or FILE.jsonl the images are embedded into one file. "
                                       "With any other --out (a folder) IMG may also be folders and .txt lists, "
                                       "and every face is written to a resumable Parquet dataset there (a rerun "
                                       "skips finished images; unreadable ones are listed in OUT/errors.jsonl), "
                                       "by this process (--engine local) or a Ray cluster (--engine ray).")
    embed.add_argument("images", nargs="+", metavar="IMG", help="images (for a dataset also folders and .txt lists)")
    embed.add_argument("--out", required=True, metavar="OUT",
                       help="output: .npz (NumPy), .jsonl (JSON lines), or a folder for a Parquet dataset")
    embed.add_argument("--quantize", choices=QUANTIZATIONS, default=None,
                       help="store int8 codes (one byte a dimension; facespace.quantized.dequantize_int8 "
                            "reads them back) instead of float32 (.npz and .jsonl only)")
    scale = embed.add_argument_group("dataset")
    scale.add_argument("--engine", choices=ENGINES, default="local",
                       help="where a Parquet dataset is made: this process (default) or Ray")
    scale.add_argument("--address", default=None, metavar="ADDR",
                       help="Ray cluster to join (e.g. ray://head:10001 or auto); default: start a local Ray")
    scale.add_argument("--workers", type=_positive_int, default=2,
                       help="Ray actors, one CPU and one pipeline each (default 2; a local Ray gets as many CPUs)")
    add_quiet_option(embed)
    add_pipeline_options(embed)
    embed.set_defaults(handler=run_embed)

    verify = sub.add_parser("verify", help="decide whether two photos show the same person")
    verify.add_argument("first", metavar="A")
    verify.add_argument("second", metavar="B")
    verify.add_argument("--threshold", type=threshold_type, default=None,
                        help="squared-distance threshold (default: the model's calibrated one)")
    verify.add_argument("--json", action="store_true")
    add_pipeline_options(verify)
    verify.set_defaults(handler=run_verify)


def _report_failure(source: str, error: str) -> None:
    print(f"facespace: error: {error}" if source in error else f"facespace: error: {source}: {error}",
          file=sys.stderr)


def run_detect(args: argparse.Namespace) -> int:
    if args.draw:
        check_output(args.draw, "--draw", folder=True)
    pipeline = pipeline_from_args(args)
    failures = 0
    for path in args.images:
        name = describe(path)
        try:
            image = pipeline.load(path)
            faces = pipeline.detect_arrays([image])[0]
        except FacespaceError as exc:
            _report_failure(name, str(exc))
            failures += 1
            continue
        if args.json:
            print(json.dumps({"source": name, "width": image.shape[1], "height": image.shape[0],
                              "faces": [f.to_dict() for f in faces]}))
        else:
            print(f"{name}: {len(faces)} face(s)")
            for i, face in enumerate(faces):
                x1, y1, x2, y2 = (int(round(v)) for v in face.box)
                print(f"  [{i}] box=({x1},{y1},{x2},{y2}) score={face.score:.3f}")
        if args.draw and not _write_drawing(Path(args.draw) / (Path(path).stem + "_faces.jpg"), image, faces):
            failures += 1
    return 1 if failures else 0


def _write_drawing(out: Path, image: np.ndarray, faces) -> bool:
    """Write ``image`` with ``faces`` drawn to ``out``; see :func:`write_image`."""
    return write_image(out, draw_faces(image, faces))


def write_image(out: Path, canvas: np.ndarray) -> bool:
    """Write the RGB ``canvas`` to ``out`` (encoded here by its suffix, .jpg or .png, written as bytes,
    atomically: OpenCV never sees the file name); a failure is reported and False returned."""
    ok, data = cv2.imencode(out.suffix or ".jpg", cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    try:
        if not ok:
            raise OSError("image encoding failed")
        atomic_write_bytes(out, data.tobytes())
    except OSError as exc:
        _report_failure(describe(out), f"could not be written ({exc.strerror or exc})")
        return False
    return True


def draw_faces(image: np.ndarray, faces, labels: list[str] | None = None) -> np.ndarray:
    """A copy of ``image`` with each face's box, landmarks and optional label drawn."""
    canvas = image.copy()
    thickness = max(1, round(max(image.shape[:2]) / 400))
    for i, face in enumerate(faces):
        x1, y1, x2, y2 = (int(round(v)) for v in face.box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), (0, 220, 0), thickness)
        if face.landmarks is not None:
            for x, y in face.landmarks:
                cv2.circle(canvas, (int(round(x)), int(round(y))), thickness + 1, (255, 40, 40), -1)
        if labels:
            cv2.putText(canvas, labels[i], (x1, max(y1 - 4, 10)), cv2.FONT_HERSHEY_SIMPLEX,
                        0.4 * thickness, (0, 220, 0), thickness)
    return canvas


#: ``embed --out`` suffixes written as one file; any other ``--out`` is a Parquet dataset folder.
FILE_SUFFIXES = (".npz", ".jsonl")


def run_embed(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.suffix not in FILE_SUFFIXES:
        return run_embed_dataset(args)
    if args.engine != "local" or args.address:
        raise FacespaceError(f"--engine ray writes a Parquet dataset: give --out a folder, not {out.name!r}")
    check_output(out, "--out")
    pipeline = pipeline_from_args(args)
    progress = not args.quiet and len(args.images) > 1
    results = pipeline.embed_images(args.images, on_error="report", progress=progress)
    rows = []
    failures = 0
    for result in results:
        if not result.ok:
            _report_failure(result.source, result.error)
            failures += 1
            continue
        if not result.faces:
            print(f"facespace: warning: {result.source}: no face found", file=sys.stderr)
        for index, face in enumerate(result.faces):
            rows.append((result.source, index, face))
    meta = {"model": pipeline.model_name, "preprocessing": pipeline.preprocessing}
    if args.quantize:
        meta.update(quantization=args.quantize, codes=INT8_CODES)
    vectors = _stored_vectors(rows, pipeline.dim, args.quantize)
    with output_file(out) as tmp:
        if out.suffix == ".npz":
            _write_npz(tmp, rows, meta, vectors)
        else:
            with open(tmp, "w", encoding="utf-8") as handle:
                for (source, index, face), vector in zip(rows, vectors):
                    handle.write(json.dumps({"source": source, "face_index": index, **meta, **face.to_dict(),
                                             "embedding": vector.tolist()}) + "\n")
    print(f"wrote {len(rows)} embedding(s) of {len(results) - failures} image(s) to {describe(out)}",
          file=sys.stderr)
    return 1 if failures else 0


def run_embed_dataset(args: argparse.Namespace) -> int:
    """``embed --out FOLDER``: every face into a resumable Parquet dataset (:mod:`facespace.batch`)."""
    from ..batch import embed_dataset

    if args.quantize:
        raise FacespaceError("--quantize applies to .npz and .jsonl outputs; a Parquet dataset stores float32")
    out = check_output(args.out, "--out", folder=True)
    pipeline_from_args(args)  # options and the weight cache checked before any work
    report = embed_dataset(args.images, out, pipeline_options(args), engine=args.engine, address=args.address,
                           workers=args.workers, progress=not args.quiet)
    for error in report.errors[report.previous_errors:]:
        _report_failure(error["path"], error["error"])
    summary = report.to_dict()
    print(f"{describe(out)}: {summary['embedded']} image(s) embedded now ({summary['faces']} face(s), "
          f"{summary['no_face']} without a face), {summary['skipped']} done before, {summary['errors']} unreadable "
          f"(listed in errors.jsonl)", file=sys.stderr)
    return 1 if report.errors else 0


def _stored_vectors(rows: list, dim: int, quantize: str | None) -> np.ndarray:
    """The embeddings as written: float32, or int8 codes with ``quantize="int8"``."""
    vectors = np.stack([f.embedding for *_, f in rows]).astype(np.float32) if rows else np.zeros((0, dim), np.float32)
    return quantize_int8(vectors) if quantize == "int8" else vectors


def _write_npz(path: Path, rows: list, meta: dict, vectors: np.ndarray) -> None:
    np.savez(
        path,
        embeddings=vectors,
        sources=np.array([s for s, *_ in rows], dtype=str),
        face_index=np.array([i for _, i, _ in rows], dtype=np.int32),
        boxes=np.array([f.face.box for *_, f in rows], dtype=np.float32).reshape(-1, 4),
        scores=np.array([f.face.score for *_, f in rows], dtype=np.float32),
        metadata=np.array(json.dumps(meta)),
    )


def run_verify(args: argparse.Namespace) -> int:
    pipeline = pipeline_from_args(args, threshold=args.threshold)
    verdict = pipeline.verify(args.first, args.second)
    if args.json:
        print(json.dumps({"a": describe(args.first), "b": describe(args.second), "model": pipeline.model_name, **verdict.to_dict()}))
    elif verdict.same is None:
        worse = min(verdict.quality)
        print(f"low quality: face quality {worse:.2f} < --min-quality {verdict.min_quality:.2f}, no verdict "
              f"(distance {verdict.distance:.4f}, threshold {verdict.threshold:.4f}, {pipeline.model_name})")
    else:
        print(f"{verdict.decision}: distance {verdict.distance:.4f} {'<=' if verdict.same else '>'} "
              f"threshold {verdict.threshold:.4f} ({pipeline.model_name})")
    return 0
