"""Batch embedding of many photos into a Parquet dataset (:mod:`facespace.embeddings_io`).

``engine="local"`` runs the pipeline in this process; ``engine="ray"`` runs a Ray Data
pipeline: reading files in tasks, then decoding, detection, alignment and embedding in a
pool of actors that each build their :class:`~facespace.pipeline.FacePipeline` once.
Without ``address`` a private local Ray is started (``workers`` CPUs, a small object
store); with it, the run joins that cluster (facespace and the weights must be installed on
every node). Both engines produce the same rows, and both write them from this process in
parts of ``part_images`` images, so a rerun skips every input a finished part covers
(crashes lose at most one part's work). An unreadable input is recorded in the dataset's
``errors.jsonl``, never fatal.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence, get_args

import numpy as np

from .embeddings_io import FaceRows, dataset_header, done_inputs, path_text, write_errors_file, write_part
from .errors import FacespaceError, check_choice
from .files import image_files
from .imageio import describe

#: Where ``facespace embed`` runs the pipeline: in this process, or on a Ray cluster.
EmbedEngine = Literal["local", "ray"]
ENGINES: tuple[str, ...] = get_args(EmbedEngine)
#: Images per Parquet part (the unit a rerun skips).
PART_IMAGES = 256
#: Images per batch handed to one worker (detection and embedding are batched within it).
BATCH_IMAGES = 16
#: Object store of a local Ray started here: small, since the machine is shared.
LOCAL_OBJECT_STORE_BYTES = 1 << 30
#: Suffixes of a file that lists inputs, one path a line.
LIST_SUFFIXES = (".txt", ".lst")


@dataclass
class EmbedReport:
    """What a run did: inputs listed, skipped (done before), embedded now, faces, errors, parts."""

    inputs: int
    skipped: int
    embedded: int = 0
    faces: int = 0
    no_face: int = 0
    errors: list[dict] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)
    #: How many of ``errors`` earlier runs recorded (the rest are this run's).
    previous_errors: int = 0

    def to_dict(self) -> dict:
        return {"inputs": self.inputs, "skipped": self.skipped, "embedded": self.embedded, "faces": self.faces,
                "no_face": self.no_face, "errors": len(self.errors), "parts": len(self.parts)}


def list_inputs(items: Sequence[str | os.PathLike]) -> list[str]:
    """The images named by ``items``: image files, folders (searched recursively) and ``.txt``
    lists (one path a line, relative to the list). A path that does not exist stays in (it
    becomes an error of the run); a folder or list that cannot be read is refused here."""
    out: dict[str, None] = {}
    for item in items:
        path = Path(item)
        try:
            if path.is_dir():
                found = image_files(path)
            elif path.suffix.lower() in LIST_SUFFIXES and path.is_file():
                lines = path.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
                found = [path.parent / line.strip() for line in lines if line.strip() and not line.startswith("#")]
            else:
                found = [path]
        except OSError as exc:
            raise FacespaceError(f"{describe(path)}: cannot be read ({exc.strerror or exc})") from None
        out.update((path_text(p), None) for p in found)
    return list(out)


# -- one batch: the work of a worker --------------------------------------------------
def embed_batch(pipeline, paths: Sequence[str]) -> dict[str, np.ndarray]:
    """Read, decode, detect, align and embed ``paths``; the result as columns (one row per face,
    plus one row per image with ``face_index`` -1 carrying its error, empty when none)."""
    arrays, keys, failed = [], [], {}
    for path in paths:
        try:
            data = Path(path).read_bytes()
            arrays.append(pipeline.load(data))
            keys.append((path, hashlib.sha256(data).hexdigest()))
        except OSError as exc:
            failed[path] = f"{path}: cannot be read ({exc.strerror or exc})"
        except FacespaceError as exc:
            failed[path] = str(exc).replace(describe(data), path, 1)
    results = pipeline.embed_images(arrays, on_error="report", chunk=max(len(arrays), 1)) if arrays else []
    rows = _Columns(pipeline.embedder.dim)
    for (path, digest), result in zip(keys, results):
        rows.image(path, digest, result.error or "")
        for index, face in enumerate(result.faces):
            rows.face(path, digest, index, face)
    for path, error in failed.items():
        rows.image(path, "", error)
    return rows.arrays()


class _Columns:
    """Rows of :func:`embed_batch`, gathered column by column."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.cols: dict[str, list] = {k: [] for k in ("path", "face_index", "box", "landmarks", "has_landmarks",
                                                      "score", "detected", "sha256", "embedding", "error")}

    def _add(self, **values: Any) -> None:
        for key, value in values.items():
            self.cols[key].append(value)

    def image(self, path: str, digest: str, error: str) -> None:
        self._add(path=path, face_index=-1, box=np.zeros(4, np.float32), landmarks=np.zeros(10, np.float32),
                  has_landmarks=False, score=0.0, detected=False, sha256=digest,
                  embedding=np.zeros(self.dim, np.float32), error=error)

    def face(self, path: str, digest: str, index: int, face) -> None:
        marks = face.face.landmarks
        self._add(path=path, face_index=index, box=np.asarray(face.face.box, np.float32),
                  landmarks=np.zeros(10, np.float32) if marks is None else np.asarray(marks, np.float32).ravel(),
                  has_landmarks=marks is not None, score=float(face.face.score), detected=bool(face.face.detected),
                  sha256=digest, embedding=np.asarray(face.embedding, np.float32), error="")

    def arrays(self) -> dict[str, np.ndarray]:
        c = self.cols
        stack = (lambda key, width: np.stack(c[key]).astype(np.float32) if c[key] else np.zeros((0, width), np.float32))
        return {"path": np.array(c["path"], dtype=object), "face_index": np.array(c["face_index"], np.int32),
                "box": stack("box", 4), "landmarks": stack("landmarks", 10),
                "has_landmarks": np.array(c["has_landmarks"], bool), "score": np.array(c["score"], np.float32),
                "detected": np.array(c["detected"], bool), "sha256": np.array(c["sha256"], dtype=object),
                "embedding": stack("embedding", self.dim), "error": np.array(c["error"], dtype=object)}


def _split(batch: dict[str, np.ndarray]) -> tuple[FaceRows, list[str], list[dict], int]:
    """(faces, inputs covered, errors, images without a face) of one batch of columns."""
    faces = FaceRows.empty()
    inputs, errors, with_faces = [], [], set()
    for i, path in enumerate(batch["path"]):
        path = str(path)
        if batch["face_index"][i] < 0:
            inputs.append(path)
            if batch["error"][i]:
                errors.append({"path": path, "error": str(batch["error"][i])})
            continue
        with_faces.add(path)
        faces.extend(FaceRows([path], [int(batch["face_index"][i])], [batch["box"][i]],
                              [batch["landmarks"][i].reshape(5, 2) if batch["has_landmarks"][i] else None],
                              [float(batch["score"][i])], [bool(batch["detected"][i])], [str(batch["sha256"][i])],
                              [batch["embedding"][i]]))
    no_face = sum(1 for i, p in enumerate(batch["path"]) if batch["face_index"][i] < 0 and not batch["error"][i]
                  and str(p) not in with_faces)
    return faces, inputs, errors, no_face


# -- engines ---------------------------------------------------------------------------
def _local_batches(todo: list[str], options: dict, batch_images: int) -> Iterator[dict[str, np.ndarray]]:
    from .pipeline import FacePipeline

    pipeline = FacePipeline(**options)
    for s in range(0, len(todo), batch_images):
        yield embed_batch(pipeline, todo[s:s + batch_images])


class _EmbedActor:
    """A Ray actor: one pipeline (networks loaded once), embedding batches of paths."""

    def __init__(self, options: dict) -> None:
        from .pipeline import FacePipeline

        self.pipeline = FacePipeline(**options)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return embed_batch(self.pipeline, [str(p) for p in batch["path"]])


def start_ray(address: str | None, workers: int, object_store_bytes: int = LOCAL_OBJECT_STORE_BYTES) -> None:
    """Join the cluster at ``address``, or start a private local Ray with ``workers`` CPUs."""
    try:
        import ray
    except ImportError:
        raise FacespaceError("--engine ray needs Ray: pip install 'facespace[scale]'") from None
    if ray.is_initialized():
        return
    if address:
        _check_reachable(address)
    try:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=workers, object_store_memory=object_store_bytes, include_dashboard=False,
                     log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise FacespaceError(f"cannot start or join Ray{f' at {address}' if address else ''}: {exc}") from None


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """Refuse at once a ``host:port`` (or ``ray://host:port``) nothing answers at: Ray itself
    would retry for minutes. ``auto`` and other forms are left to Ray."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise FacespaceError(f"no Ray cluster answers at {address} ({exc.strerror or exc}); start one with "
                             f"`ray start --head` or leave out --address for a local Ray") from None


def _ray_batches(todo: list[str], options: dict, batch_images: int, workers: int,
                 address: str | None) -> Iterator[dict[str, np.ndarray]]:
    import ray

    start_ray(address, workers)
    ds = ray.data.from_items([{"path": p} for p in todo], override_num_blocks=max(1, -(-len(todo) // batch_images)))
    ds = ds.map_batches(_EmbedActor, fn_constructor_kwargs={"options": options}, batch_size=batch_images,
                        batch_format="numpy", concurrency=workers, num_cpus=1,
                        runtime_env={"env_vars": {"FACESPACE_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}})
    yield from ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1)


# -- the run -----------------------------------------------------------------------------
def embed_dataset(items: Sequence[str | os.PathLike], out: str | os.PathLike, options: dict,
                  engine: EmbedEngine = "local", address: str | None = None, workers: int = 2,
                  part_images: int = PART_IMAGES, batch_images: int = BATCH_IMAGES,
                  progress: bool = False) -> EmbedReport:
    """Embed every face of ``items`` into the Parquet dataset ``out`` (made if missing), skipping
    inputs it already covers. ``options`` are the :class:`FacePipeline` arguments (each worker
    builds its own pipeline from them); a dataset made with another model or preprocessing is refused."""
    from .pipeline import FacePipeline

    check_choice(engine, EmbedEngine, "engine")
    out = Path(out)
    describing = FacePipeline(**options)  # networks load lazily: this one only names the model
    model, preprocessing_id, dim = describing.model_name, describing.preprocessing_id, describing.embedder.dim
    header = dataset_header(out) if out.is_dir() else None
    if header is not None and header != {"model": model, "preprocessing_id": preprocessing_id, "dim": dim}:
        raise FacespaceError(f"{describe(out)} holds embeddings of {header['model']} [{header['preprocessing_id']}]; "
                             f"these would be {model} [{preprocessing_id}]: use another --out")
    inputs = list_inputs(items)
    done, errors = done_inputs(out) if out.is_dir() else (set(), [])
    todo = [p for p in inputs if p not in done]
    report = EmbedReport(inputs=len(inputs), skipped=len(inputs) - len(todo), errors=errors,
                          previous_errors=len(errors))
    if not todo:
        return report
    out.mkdir(parents=True, exist_ok=True)
    batches = (_local_batches(todo, options, batch_images) if engine == "local"
               else _ray_batches(todo, options, batch_images, workers, address))
    _write_parts(batches, out, report, part_images, len(todo), progress,
                 dict(model=model, preprocessing_id=preprocessing_id, dim=dim))
    return report


def _write_parts(batches: Iterator[dict[str, np.ndarray]], out: Path, report: EmbedReport, part_images: int,
                 total: int, progress: bool, header: dict) -> None:
    """Gather batches into parts of ``part_images`` images and write each when full (and the last)."""
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="img", dynamic_ncols=True)
    number = len(list(out.glob("part-*.parquet")))
    rows, inputs, errors = FaceRows.empty(), [], []
    for batch in batches:
        faces, covered, failed, no_face = _split(batch)
        rows.extend(faces)
        inputs += covered
        errors += failed
        report.faces, report.no_face, report.embedded = report.faces + len(faces), report.no_face + no_face, \
            report.embedded + len(covered) - len(failed)
        if bar is not None:
            bar.update(len(covered))
        if len(inputs) >= part_images:
            number = _flush(out, number, rows, inputs, errors, report, header)
            rows, inputs, errors = FaceRows.empty(), [], []
    if inputs:
        _flush(out, number, rows, inputs, errors, report, header)
    if bar is not None:
        bar.close()


def _flush(out: Path, number: int, rows: FaceRows, inputs: list[str], errors: list[dict], report: EmbedReport,
           header: dict) -> int:
    report.parts.append(str(write_part(out, number, rows, inputs=inputs, errors=errors, **header)))
    report.errors.extend(errors)
    write_errors_file(out, report.errors)
    return number + 1
