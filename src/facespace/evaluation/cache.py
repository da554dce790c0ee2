"""Embeddings of evaluation images, each computed once and cached on disk.

:func:`embed_paths` gives one embedding per image path: the face nearest the
image centre among those detected (LFW images often hold several faces), or,
when the detector finds none, an explicit fallback -- the fixed centre crop --
which is counted and named (:attr:`EmbeddingSet.missed`).

The cache lives under ``facespace.pretrained.weights.cache_dir() / "embeddings"``:

``detections/<detector-id>/``
    every face MTCNN found in an image (boxes, scores, landmarks), keyed by
    the sha1 of the file's bytes; shared by every model and by the ``align``
    and ``margin`` crops, so a benchmark matrix runs the detector once.
``<model>-<preprocessing-id>-plain/`` and ``...-mirror/``
    the network's (unit) embedding of the crop and of its mirror image, keyed
    the same way. The flip-averaged embedding is ``normalise(plain + mirror)``,
    exactly what :class:`facespace.embedding.Embedder` computes with
    ``flip=True``, so runs with and without flip share one pass.

``<model>-<align>-<id>-mask-plain/`` (``embed_paths(..., occlusion="mask")``)
    the same with a surgical mask drawn on the face first (:mod:`facespace.occlusion`, from
    the default landmark model's 68 points on the detected box): its own key, never mixed
    with unoccluded embeddings; the detections are the shared, unoccluded ones.

Each folder holds ``meta.json`` (what the key stands for) and append-only
``shard-*.npz`` files written atomically, so an interrupted run keeps what it
finished and concurrent runs never see a half-written file.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np

from ..comparison import unit_rows
from ..detection.types import DETECT_PIXELS, DETECTOR_MODELS
from ..errors import ImageLoadError, check_choice
from ..pretrained.registry import get_config
from ..face_choice import choose_index
from ..files import atomic_path, atomic_write_bytes
from ..pipeline import centre_face
from ..pose import estimate_pose
from ..types import Face

if TYPE_CHECKING:
    from ..occlusion import OcclusionKind

__all__ = ["EmbeddingSet", "cached_faces", "embed_paths", "default_cache_root", "file_sha1"]

#: Bump when the meaning of a cached record changes.
CACHE_VERSION = 1
#: Images per shard file written.
FLUSH_EVERY = 256


def default_cache_root() -> Path:
    from ..pretrained.weights import cache_dir

    return cache_dir() / "embeddings"


def file_sha1(path: str | os.PathLike) -> str:
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            return hashlib.sha1(handle.read()).hexdigest()
    except FileNotFoundError:
        raise ImageLoadError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageLoadError(f"{path}: is a folder, not an image") from None
    except PermissionError:
        raise ImageLoadError(f"{path}: permission denied") from None


@dataclass
class EmbeddingSet:
    """One embedding per input path, in input order."""

    paths: list[Path]
    embeddings: np.ndarray
    detected: np.ndarray
    #: How the embeddings were made (the pipeline's preprocessing plus face choice and fallback).
    preprocessing: dict = field(default_factory=dict)
    #: False for ``align="centre"``, where no detector runs and ``detected`` is all False.
    detection_used: bool = True
    #: Counts and seconds: images, cached / computed per stage, time per stage.
    stats: dict = field(default_factory=dict)
    #: The unit embedding of each view ("plain", and "mirror" when flip is on) before averaging,
    #: for scoring rules that combine the views differently (see :mod:`.scoring`).
    views: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def missed(self) -> list[str]:
        """Images in which the detector found no face (embedded from the centre-crop fallback)."""
        if not self.detection_used:
            return []
        return [str(p) for p, ok in zip(self.paths, self.detected) if not ok]

    def index(self) -> dict[Path, int]:
        return {p: i for i, p in enumerate(self.paths)}


# -- the on-disk store -------------------------------------------------------------------
class _Store:
    """Append-only ``key -> records`` store in a folder of ``.npz`` shards.

    Each key owns ``count`` consecutive rows of every named array (0 rows is
    allowed: an image with no detections).
    """

    def __init__(self, folder: Path, meta: dict) -> None:
        self.folder = folder
        self.meta = meta

    def load(self) -> dict[str, dict[str, np.ndarray]]:
        out: dict[str, dict[str, np.ndarray]] = {}
        if not self.folder.is_dir():
            return out
        for shard in sorted(self.folder.glob("shard-*.npz")):
            try:
                with np.load(shard, allow_pickle=False) as data:
                    arrays = {k: data[k] for k in data.files}
            except (OSError, ValueError, EOFError):
                continue  # unreadable shard (another process's, or damaged): recompute its keys
            keys, counts = arrays.pop("_keys"), arrays.pop("_counts")
            offsets = np.concatenate([[0], np.cumsum(counts)])
            for i, key in enumerate(keys.tolist()):
                out[key] = {name: arr[offsets[i]:offsets[i + 1]] for name, arr in arrays.items()}
        return out

    def write(self, records: dict[str, dict[str, np.ndarray]]) -> None:
        if not records:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        meta_file = self.folder / "meta.json"
        if not meta_file.exists():
            atomic_write_bytes(meta_file, json.dumps(self.meta, indent=2, sort_keys=True).encode())
        keys = list(records)
        names = list(records[keys[0]])
        arrays = {name: np.concatenate([records[k][name] for k in keys]) for name in names}
        arrays["_keys"] = np.array(keys)
        arrays["_counts"] = np.array([len(records[k][names[0]]) for k in keys], dtype=np.int64)
        name = f"shard-{time.time_ns()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.npz"
        with atomic_path(self.folder / name) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **arrays)


def _short_hash(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _weights_id(name: str, kind: str) -> str:
    config = get_config(name, kind)
    return ",".join(f"{k}:{f.sha256[:12]}" for k, f in sorted(config.files.items()))


def _detector_descriptor(pipeline) -> dict:
    """What makes a detection. The working size is named only when it is not the default, so
    caches made before it existed stay valid: they hold images under 4 megapixels, where the
    default changes nothing (LFW, celeba-299)."""
    s = pipeline.detector_settings
    if s.name == "blazeface-onet":  # BlazeFace's proposals, O-Net's threshold
        from ..detection.blazeface import PROPOSAL_SCALE, PROPOSAL_SHIFT

        return {"version": CACHE_VERSION, "detector": s.name, "onet_threshold": s.thresholds[2],
                "proposal": [list(PROPOSAL_SHIFT), PROPOSAL_SCALE],
                "weights": ";".join(_weights_id(m, "detector") for m in DETECTOR_MODELS[s.name])}
    if s.name != "mtcnn":  # BlazeFace: no MTCNN settings apply
        return {"version": CACHE_VERSION, "detector": s.name, "weights": _weights_id(s.name, "detector")}
    out = {"version": CACHE_VERSION, "detector": "mtcnn", "weights": _weights_id(None, "detector"),
           "min_face_size": s.min_face_size, "thresholds": list(s.thresholds), "factor": s.factor}
    if s.max_pixels != DETECT_PIXELS:
        out["max_pixels"] = s.max_pixels
    return out


def _embedding_descriptor(pipeline, occlusion: str | None = None) -> dict:
    """What makes an embedding: the pipeline's preprocessing without flip, plus face choice
    (and the occlusion drawn first, with the landmark model and weights that placed it)."""
    pre = {k: v for k, v in pipeline.preprocessing.items() if k != "flip"}
    pre["centre_fraction"] = pipeline.centre_fraction
    out = {"version": CACHE_VERSION, "preprocessing": pre,
           "weights": _weights_id(pipeline.model_name, "embedder"),
           "face": "nearest image centre", "fallback": "centre crop"}
    if pipeline.align != "centre":
        out["detector"] = _detector_descriptor(pipeline)
    if occlusion is not None:
        from ..landmarks.registry import DEFAULT_LANDMARKER
        from ..occlusion import MASK_VERSION

        out["occlusion"] = {"kind": occlusion, "version": MASK_VERSION, "landmarks": DEFAULT_LANDMARKER,
                            "landmark_weights": _weights_id(DEFAULT_LANDMARKER, "landmarker")}
    return out


# -- embedding ------------------------------------------------------------------------------
def _embed_view(embedder, crops: np.ndarray, mirror: bool) -> np.ndarray:
    """Unit embeddings of crops (or of their mirror images), without the embedder's flip averaging."""
    if mirror:
        crops = np.ascontiguousarray(crops[:, :, ::-1])
    return embedder.embed_crops(crops, flip=False)


def _face_of(record: dict[str, np.ndarray], index: int, detection_pass: int = 1) -> Face:
    """Detected face ``index`` of a cached detection record (boxes, scores, landmarks), with its pose."""
    landmarks = record["landmarks"][index]
    return Face(box=record["boxes"][index], score=float(record["scores"][index]), landmarks=landmarks,
                pose=estimate_pose(landmarks), detection_pass=detection_pass)


def _relaxed_descriptor(pipeline) -> dict:
    """What makes a second-pass detection (see ``FacePipeline.detect_second_pass``)."""
    from ..pipeline import UPSAMPLE_BELOW

    out = _detector_descriptor(pipeline)
    relaxed = pipeline.detector_settings.relaxed()
    return {**out, "pass": 2, "thresholds": list(relaxed.thresholds), "factor": relaxed.factor,
            "upsample_below": UPSAMPLE_BELOW}


class _CachedRun:
    """The stores of one :func:`embed_paths` call (one per view, plus the shared detections),
    what they hold, what is still to be written, and the counts and times of the run."""

    def __init__(self, pipeline, root: Path, cache: bool, occlusion: str | None = None) -> None:
        self.pipeline = pipeline
        self.cache = cache
        self.occlusion = occlusion
        self._landmarker = None
        self.descriptor = _embedding_descriptor(pipeline, occlusion)
        self.tag = f"{pipeline.model_name}-{pipeline.align}-{_short_hash(self.descriptor)}"
        if occlusion is not None:
            self.tag += f"-{occlusion}"
        self.views = ["plain", "mirror"] if pipeline.embedder.flip else ["plain"]
        self.stores = {v: _Store(root / f"{self.tag}-{v}", {**self.descriptor, "view": v}) for v in self.views}
        self.known = {v: (self.stores[v].load() if cache else {}) for v in self.views}
        self.pending: dict[str, dict[str, dict[str, np.ndarray]]] = {v: {} for v in self.views}
        self.use_detector = pipeline.align != "centre"
        detector = _detector_descriptor(pipeline)
        self.det_store = _Store(root / "detections" / _short_hash(detector), detector) if self.use_detector else None
        self.det_known: dict[str, dict[str, np.ndarray]] | None = None  # loaded when first needed
        self.det_pending: dict[str, dict[str, np.ndarray]] = {}
        self.second_pass = self.use_detector and pipeline.second_pass == "relaxed"
        relaxed = _relaxed_descriptor(pipeline) if self.second_pass else {}
        self.p2_store = _Store(root / "detections" / _short_hash(relaxed), relaxed) if self.second_pass else None
        self.p2_known: dict[str, dict[str, np.ndarray]] | None = None
        self.p2_pending: dict[str, dict[str, np.ndarray]] = {}
        self.seconds = {"hash": 0.0, "load": 0.0, "detect": 0.0, "embed_plain": 0.0, "embed_mirror": 0.0}
        self.computed = {v: 0 for v in self.views}
        self.detections_computed = 0

    def resolved(self, key: str) -> str:
        """The record key of an image's embedding: with the second pass on, an image the first
        pass found no face in has its own record (``<sha1>:p2``), so caches made with and without
        the second pass never mix."""
        if not self.second_pass:
            return key
        if self.det_known is None:
            self.det_known = self.det_store.load() if self.cache else {}
        record = self.det_known.get(key)
        return key + ":p2" if record is not None and len(record["boxes"]) == 0 else key

    def todo(self, keys: list[str]) -> list[str]:
        """The keys some view has no embedding for."""
        return [k for k in keys if any(self.resolved(k) not in self.known[v] for v in self.views)]

    def flush(self) -> None:
        if not self.cache:
            return
        for v in self.views:
            self.stores[v].write(self.pending[v])
            self.pending[v].clear()
        if self.det_store is not None:
            self.det_store.write(self.det_pending)
            self.det_pending.clear()
        if self.p2_store is not None:
            self.p2_store.write(self.p2_pending)
            self.p2_pending.clear()

    def detections(self, batch: list[str], images: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """Every face the detector finds in each image: from the store, or detected now and stored."""
        if self.det_known is None:
            self.det_known = self.det_store.load() if self.cache else {}
        need = [i for i, k in enumerate(batch) if k not in self.det_known]
        if need:
            t = time.perf_counter()
            found = self.pipeline.detector.detect([images[i] for i in need])
            self.seconds["detect"] += time.perf_counter() - t
            self.detections_computed += len(need)
            for i, det in zip(need, found):
                record = {"boxes": det.boxes, "scores": det.scores, "landmarks": det.landmarks}
                self.det_known[batch[i]] = self.det_pending[batch[i]] = record
        return [self.det_known[k] for k in batch]

    def faces(self, batch: list[str], images: list[np.ndarray]) -> list[Face]:
        """The face of each image: the detection nearest the centre, else the centre-crop fallback."""
        fraction = self.pipeline.centre_fraction
        if not self.use_detector:
            return [centre_face(image.shape, fraction) for image in images]
        faces = []
        for key, image, record in zip(batch, images, self.detections(batch, images)):
            chosen = choose_index(record["boxes"], image.shape, "central")
            if chosen is None and self.second_pass:
                record = self.second_detections(key, image)
                chosen = choose_index(record["boxes"], image.shape, "central")
                faces.append(centre_face(image.shape, fraction) if chosen is None else _face_of(record, chosen, 2))
                continue
            faces.append(centre_face(image.shape, fraction) if chosen is None else _face_of(record, chosen))
        return faces

    def second_detections(self, key: str, image: np.ndarray) -> dict[str, np.ndarray]:
        """The relaxed pass's detections of an image the first pass found nothing in (cached)."""
        if self.p2_known is None:
            self.p2_known = self.p2_store.load() if self.cache else {}
        if key not in self.p2_known:
            t = time.perf_counter()
            faces = self.pipeline.detect_second_pass([image])[0]
            self.seconds["detect"] += time.perf_counter() - t
            record = {"boxes": np.array([f.box for f in faces], np.float32).reshape(-1, 4),
                      "scores": np.array([f.score for f in faces], np.float32),
                      "landmarks": np.array([f.landmarks for f in faces], np.float32).reshape(-1, 5, 2)}
            self.p2_known[key] = self.p2_pending[key] = record
        return self.p2_known[key]
    def occluded(self, images: list[np.ndarray], faces: list[Face]) -> list[np.ndarray]:
        """Each image with the occlusion drawn on its face (located by the default landmark model)."""
        from ..landmarks.registry import build_landmarker
        from ..occlusion import draw_mask

        if self._landmarker is None:
            self._landmarker = build_landmarker()
        out = []
        for image, face in zip(images, faces):
            points = self._landmarker.locate(image, np.asarray(face.box, np.float64)[None, :4])[0]
            out.append(draw_mask(image, points))
        return out

    def crops(self, images: list[np.ndarray], faces: list[Face]) -> np.ndarray:
        """The network-input crop of each face; a degenerate box becomes the fallback (in ``faces`` too)."""
        crops = []
        for i, (image, face) in enumerate(zip(images, faces)):
            try:
                crops.append(self.pipeline.crop(image, face))
            except ValueError:  # a degenerate box: treat the face as missed
                faces[i] = centre_face(image.shape, self.pipeline.centre_fraction)
                crops.append(self.pipeline.crop(image, faces[i]))
        return np.stack(crops)

    def embed_chunk(self, batch: list[str], first_path: dict[str, Path]) -> None:
        """Load, detect, crop and embed the images of ``batch`` for the views that lack them."""
        t = time.perf_counter()
        images = [self.pipeline.load(first_path[k]) for k in batch]
        self.seconds["load"] += time.perf_counter() - t
        faces = self.faces(batch, images)
        if self.occlusion is not None:
            t = time.perf_counter()
            images = self.occluded(images, faces)
            self.seconds["occlude"] = self.seconds.get("occlude", 0.0) + time.perf_counter() - t
        crops = self.crops(images, faces)
        stored = [self.resolved(k) for k in batch]  # detections are known now
        for v in self.views:
            rows = [i for i, k in enumerate(stored) if k not in self.known[v]]
            if not rows:
                continue
            t = time.perf_counter()
            vectors = _embed_view(self.pipeline.embedder, crops[rows], mirror=(v == "mirror"))
            self.seconds[f"embed_{v}"] += time.perf_counter() - t
            self.computed[v] += len(rows)
            for i, vec in zip(rows, vectors):
                record = {"vector": vec[None].astype(np.float32),
                          "detected": np.array([faces[i].detected]),
                          "box": np.asarray(faces[i].box, dtype=np.float32)[None]}
                self.known[v][stored[i]] = record
                self.pending[v][stored[i]] = record

    def run(self, todo: list[str], first_path: dict[str, Path], chunk: int, progress: bool) -> None:
        """Embed every key of ``todo`` in chunks, writing shards every :data:`FLUSH_EVERY` images."""
        bar = self._progress_bar(len(todo)) if progress and todo else None
        since_flush = 0
        try:
            for begin in range(0, len(todo), chunk):
                batch = todo[begin:begin + chunk]
                self.embed_chunk(batch, first_path)
                since_flush += len(batch)
                if since_flush >= FLUSH_EVERY:
                    self.flush()
                    since_flush = 0
                if bar is not None:
                    bar.update(len(batch))
        finally:
            self.flush()
            if bar is not None:
                bar.close()

    def _progress_bar(self, total: int):
        from tqdm import tqdm

        flip = " +flip" if len(self.views) > 1 else ""
        return tqdm(total=total, unit="img", dynamic_ncols=True,
                    desc=f"{self.pipeline.model_name} {self.pipeline.align}{flip}")

    def vectors(self, view: str, path_keys: list[str]) -> np.ndarray:
        return np.stack([self.known[view][self.resolved(k)]["vector"][0] for k in path_keys]).astype(np.float32)

    def result(self, paths: list[Path], path_keys: list[str], stats: dict, root: Path) -> EmbeddingSet:
        """The :class:`EmbeddingSet` of ``paths`` once every key is known."""
        embedder = self.pipeline.embedder
        plain = self.vectors("plain", path_keys) if paths else np.zeros((0, embedder.dim), np.float32)
        view_vectors = {"plain": plain}
        if "mirror" in self.views and paths:
            view_vectors["mirror"] = self.vectors("mirror", path_keys)
            embeddings = unit_rows(plain + view_vectors["mirror"]).astype(np.float32)
        else:
            embeddings = plain
        detected = np.array([bool(self.known["plain"][self.resolved(k)]["detected"][0]) for k in path_keys],
                            dtype=bool)
        stats["computed"] = self.computed
        stats["detections_computed"] = self.detections_computed
        stats["seconds"] = {k: round(v, 3) for k, v in self.seconds.items()}
        stats["cache"] = str(root / self.tag) if self.cache else None
        d = self.descriptor
        preprocessing = {**d["preprocessing"], "flip": embedder.flip, "face": d["face"], "fallback": d["fallback"]}
        if "occlusion" in d:
            preprocessing["occlusion"] = d["occlusion"]["kind"]
        return EmbeddingSet(paths=paths, embeddings=embeddings, detected=detected, preprocessing=preprocessing,
                            detection_used=self.use_detector, stats=stats, views=view_vectors)


def embed_paths(
    pipeline,
    paths: Iterable[str | os.PathLike],
    progress: bool = True,
    cache: bool = True,
    cache_root: str | os.PathLike | None = None,
    chunk: int = 32,
    occlusion: "OcclusionKind | None" = None,
) -> EmbeddingSet:
    """One embedding per image path (see the module notes), computed once and cached.
    ``occlusion="mask"`` draws a surgical mask on each face before it is cropped.

    ``pipeline`` is a :class:`facespace.pipeline.FacePipeline`; its model,
    ``align`` mode, margin, flip and detector settings are honoured. Unreadable
    images raise :class:`facespace.errors.ImageLoadError`.
    """
    paths = [Path(p) for p in paths]
    if len(pipeline.views) > 1:
        return _fused(pipeline, paths, progress=progress, cache=cache, cache_root=cache_root, chunk=chunk,
                      occlusion=occlusion)
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    start = time.perf_counter()
    path_keys = [file_sha1(p) for p in paths]
    hash_seconds = time.perf_counter() - start
    first_path: dict[str, Path] = {}
    for p, k in zip(paths, path_keys):
        first_path.setdefault(k, p)
    keys = list(first_path)

    if occlusion is not None:
        from ..occlusion import OcclusionKind

        check_choice(occlusion, OcclusionKind, "occlusion")
    run = _CachedRun(pipeline, root, cache, occlusion)
    run.seconds["hash"] = hash_seconds
    stats: dict = {"images": len(paths), "unique_images": len(keys),
                   "cached": {v: sum(run.resolved(k) in run.known[v] for k in keys) for v in run.views}}
    run.run(run.todo(keys), first_path, chunk, progress)
    return run.result(paths, path_keys, stats, root)


def _fused(pipeline, paths: list[Path], **options) -> EmbeddingSet:
    """A several-view pipeline's embeddings: each view from its own cache, fused as the pipeline
    fuses them (``FacePipeline.embed_faces``: weighted concatenation of unit vectors)."""
    parts = [(embed_paths(single, paths, **options), weight) for single, weight in pipeline.single_views()]
    fused = np.concatenate([part.embeddings * np.sqrt(weight) for part, weight in parts], axis=1).astype(np.float32)
    first = parts[0][0]
    stats = {"views": [part.stats for part, _ in parts]}
    return EmbeddingSet(paths=paths, embeddings=fused, detected=first.detected, preprocessing=pipeline.preprocessing,
                        detection_used=first.detection_used, stats=stats, views={"plain": fused})


def cached_faces(pipeline, paths: Iterable[str | os.PathLike], cache_root: str | os.PathLike | None = None
                 ) -> list[tuple[Face, np.ndarray]]:
    """The face :func:`embed_paths` embeds for each image (with its pose) and its network-input
    crop, from the detection cache (detecting what is missing): what quality scores and
    pose-dependent rules need beside the embeddings."""
    if len(pipeline.views) > 1:
        pipeline = pipeline.single_views()[0][0]  # faces and the first view's crops are all it needs
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    run = _CachedRun(pipeline, root, cache=True)
    out = []
    paths = [Path(p) for p in paths]
    for begin in range(0, len(paths), 64):
        chunk = paths[begin:begin + 64]
        images = [pipeline.load(p) for p in chunk]
        faces = run.faces([file_sha1(p) for p in chunk], images)
        crops = run.crops(images, faces)
        out.extend(zip(faces, crops))
    run.flush()
    return out
