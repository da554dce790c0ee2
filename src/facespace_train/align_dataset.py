"""Pre-align a folder-per-identity dataset with the project's MTCNN detector and alignment.

``SRC/<identity>/<image>`` becomes ``DST/<identity>/<image stem>.png`` (or
``.jpg``): the largest detected face, cropped the way
:class:`facespace.pipeline.FacePipeline` crops it (``align``: 5-point
similarity transform onto the template; ``margin``: the box widened by
``margin`` pixels), at ``size`` x ``size``.

* multiprocessing: ``workers`` processes, each with its own detector (one torch
  thread each);
* resumable: images whose output exists, or that are already listed in
  ``DST/no_face.tsv`` / ``DST/errors.tsv``, are skipped; outputs are written
  atomically (:func:`facespace.files.atomic_path`), so an interrupted run leaves no half file;
* images without a face are logged to ``DST/no_face.tsv`` (and images that
  could not be read to ``DST/errors.tsv``), one relative path per line.
"""

from __future__ import annotations

import multiprocessing as mp
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Literal, get_args

import cv2
import numpy as np

from facespace.errors import ImageLoadError
from facespace.face_choice import choose_index
from facespace.files import atomic_write_bytes, image_files
from facespace.imageio import load_image

#: How a dataset image becomes a training crop: the 5-point alignment or Sandberg's margin crop.
DatasetAlignMode = Literal["align", "margin"]
ALIGN_MODES: tuple[str, ...] = get_args(DatasetAlignMode)

NO_FACE_LOG = "no_face.tsv"
ERROR_LOG = "errors.tsv"


@dataclass(frozen=True)
class AlignSettings:
    size: int = 160
    mode: DatasetAlignMode = "align"
    margin: int = 32
    min_face_size: int = 20
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    factor: float = 0.709
    extension: str = ".png"
    device: str = "cpu"


def list_images(src: Path) -> list[Path]:
    """Relative paths of all images under ``src`` (identity folders, any depth), sorted."""
    return [p.relative_to(src) for p in image_files(src)]


def _logged(path: Path) -> set[str]:
    if not path.exists():
        return set()
    return {line.split("\t", 1)[0] for line in path.read_text().splitlines() if line.strip()}


def output_path(dst: Path, rel: Path, settings: AlignSettings) -> Path:
    return dst / rel.with_suffix(settings.extension)


def pending_images(src: Path, dst: Path, settings: AlignSettings) -> list[Path]:
    done = _logged(dst / NO_FACE_LOG) | _logged(dst / ERROR_LOG)
    return [rel for rel in list_images(src)
            if str(rel) not in done and not output_path(dst, rel, settings).exists()]


def _default_detector(settings: AlignSettings):
    from facespace.detection.mtcnn import MTCNN

    return MTCNN.pretrained(device=settings.device, min_face_size=settings.min_face_size,
                            thresholds=settings.thresholds, factor=settings.factor)


def crop_largest_face(image: np.ndarray, detections, settings: AlignSettings) -> np.ndarray | None:
    """The crop of the largest detected face, or None when there is none."""
    from facespace import alignment

    boxes = np.asarray(detections.boxes, dtype=np.float64).reshape(-1, 4)
    i = choose_index(boxes, image.shape, "largest")
    if i is None:
        return None
    landmarks = getattr(detections, "landmarks", None)
    if settings.mode == "align" and landmarks is not None and len(landmarks) > i:
        return alignment.align_face(image, np.asarray(landmarks[i]), settings.size)
    return alignment.margin_crop(image, boxes[i], settings.size, settings.margin)


# -- worker side -----------------------------------------------------------------
_WORKER: dict = {}


def _init_worker(src: str, dst: str, settings: AlignSettings, detector_factory: Callable | None) -> None:
    import torch

    torch.set_num_threads(1)
    _WORKER.update(src=Path(src), dst=Path(dst), settings=settings,
                   detector=(detector_factory or _default_detector)(settings))


def _process(rel: Path) -> tuple[str, str, str]:
    """(relative path, status "ok" | "no_face" | "error", message)."""
    src, dst, settings = _WORKER["src"], _WORKER["dst"], _WORKER["settings"]
    try:
        image = load_image(src / rel)
    except ImageLoadError as exc:
        return str(rel), "error", f"unreadable image ({exc})"
    try:
        detections = _WORKER["detector"].detect([image])[0]
        crop = crop_largest_face(image, detections, settings)
    except Exception as exc:  # noqa: BLE001 - logged, the run goes on
        return str(rel), "error", f"{type(exc).__name__}: {exc}"
    if crop is None:
        return str(rel), "no_face", ""
    ok, encoded = cv2.imencode(settings.extension, cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    if not ok:
        return str(rel), "error", "could not encode output"
    try:
        atomic_write_bytes(output_path(dst, rel, settings), encoded.tobytes())
    except OSError as exc:
        return str(rel), "error", f"could not write output ({exc})"
    return str(rel), "ok", ""


def align_dataset(src: str | Path, dst: str | Path, settings: AlignSettings = AlignSettings(), workers: int = 1,
                  detector_factory: Callable | None = None, progress: bool = False,
                  limit: int | None = None) -> dict:
    """Align every pending image of ``src`` into ``dst``; returns counts of ok / no_face / error / skipped.

    ``detector_factory(settings)`` builds the detector in each worker (default:
    the registry's MTCNN); it must be picklable when ``workers > 1``.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise FileNotFoundError(f"source folder {src} does not exist")
    dst.mkdir(parents=True, exist_ok=True)
    total = len(list_images(src))
    todo = pending_images(src, dst, settings)
    if limit is not None:
        todo = todo[:limit]
    counts = {"ok": 0, "no_face": 0, "error": 0, "skipped": total - len(todo)}
    results: Iterable[tuple[str, str, str]]
    pool = None
    if workers > 1 and todo:
        ctx = mp.get_context("spawn")
        pool = ctx.Pool(workers, initializer=_init_worker, initargs=(str(src), str(dst), settings, detector_factory))
        results = pool.imap(_process, todo, chunksize=8)
    else:
        if todo:
            _init_worker(str(src), str(dst), settings, detector_factory)
        results = map(_process, todo)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), unit="img", dynamic_ncols=True)
    try:
        with open(dst / NO_FACE_LOG, "a") as no_face, open(dst / ERROR_LOG, "a") as errors:
            for rel, status, message in results:
                counts[status] += 1
                if status == "no_face":
                    no_face.write(rel + "\n")
                    no_face.flush()
                elif status == "error":
                    errors.write(f"{rel}\t{message}\n")
                    errors.flush()
                if bar is not None:
                    bar.update(1)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
        if bar is not None:
            bar.close()
    return counts
