"""The whole path of a photo: image -> detection -> alignment -> embedding -> comparison.

:class:`FacePipeline` wires the parts together and is what the CLI, the REST
service, evaluation and the gallery use, so every entry point preprocesses
faces the same way. ``preprocessing`` records that way, so stored embeddings
can be checked for compatibility later.
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Iterable, Iterator, Literal, Sequence

import cv2
import numpy as np

from .alignment import (REFERENCE_FACE_SIDE, AlignMode, align_face, centre_crop, margin_crop, template_68, template_id,
                        upright_crop)
from .comparison import verify as verify_embeddings
from .detection.types import (DETECT_PIXELS, Detector, DetectorBackend, DetectorName, SecondPass,
                              default_detector_backend)
from .embedding import BF16_PRECISION, Backend, Embedder, EmbeddingModel
from .errors import FacespaceError, NoFaceError, OptionError, check_choice
from .face_choice import FaceChoice, choose_face
from .imageio import DEFAULT_MAX_PIXELS, ImageInput, describe, load_image
from .pose import estimate_pose
from .quality import QualityModel
from .presets import Preset, PresetConfig, View, get_preset
from .pretrained.registry import resolve_config
from .types import EmbeddedFace, Face, ImageResult, Verification

if TYPE_CHECKING:
    from .landmarks.types import LandmarkModel, Landmarker

#: What to embed in an image where no face was found: nothing, the fixed centre crop, or the
#: whole image (for images that are already face crops).
Fallback = Literal["none", "centre", "whole"]

#: What a batch does with an unreadable item: report it in its result and go on, or raise.
OnError = Literal["report", "raise"]
#: Decoded pixels per chunk of a batch (a chunk also ends at ``chunk`` images): with one chunk
#: decoding ahead, a batch of huge photos holds about two chunks in memory, not all of them.
CHUNK_PIXELS = 16_000_000


@dataclass(frozen=True)
class DetectorSettings:
    """Which detector (``name``) and MTCNN's parameters: smallest face in pixels, per-stage score
    thresholds, pyramid factor, the runtime of its networks ("torch" or "onnx": ONNX Runtime on
    the CPU, same detections; None: :func:`~facespace.detection.types.default_detector_backend`,
    ONNX Runtime on the CPU) and the working size."""

    min_face_size: int = 20
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    factor: float = 0.709
    backend: DetectorBackend | None = None
    #: Working size in pixels: larger images are detected on a downscaled copy (None: full size).
    max_pixels: int | None = DETECT_PIXELS
    #: The detector: "mtcnn" (all settings above apply), "blazeface" or "blazeface-full" (these
    #: downscale the whole image to their input as MediaPipe does; the MTCNN settings do not apply),
    #: "blazeface-onet" (short range's faces, MTCNN's O-Net boxes and landmarks: its threshold
    #: ``thresholds[2]`` and the working size apply); None: the pipeline's preset's detector, else
    #: MTCNN (:meth:`resolved`).
    name: DetectorName | None = None

    def __post_init__(self) -> None:
        if self.name is not None:
            check_choice(self.name, DetectorName, "detector")

    def resolved(self, preset_detector: "DetectorName | None" = None) -> "DetectorSettings":
        """These settings with the detector named: the one given, else ``preset_detector``, else MTCNN."""
        if self.name is not None:
            return self
        return replace(self, name=preset_detector or "mtcnn")

    def build(self, device: str) -> Detector:
        backend = self.backend if self.backend is not None else default_detector_backend(device)
        if self.name in (None, "mtcnn"):
            return self._mtcnn(device, backend)
        from .detection.blazeface import BlazeFace, RefinedBlazeFace

        blazeface = BlazeFace("full" if self.name == "blazeface-full" else "short", device=device, backend=backend)
        return RefinedBlazeFace(blazeface, self._mtcnn(device, backend)) if self.name == "blazeface-onet" else blazeface

    def _mtcnn(self, device: str, backend: DetectorBackend) -> "Detector":
        from .detection.mtcnn import MTCNN

        return MTCNN.pretrained(device=device, min_face_size=self.min_face_size, thresholds=self.thresholds,
                                factor=self.factor, backend=backend, max_pixels=self.max_pixels)

    def relaxed(self) -> "DetectorSettings":
        """The second pass's settings: lower stage thresholds and a finer pyramid (chosen on
        Pointing'04, celeba-299 and LFW view 1 by ``benchmarks/robust_dev.py``)."""
        return DetectorSettings(min_face_size=self.min_face_size, thresholds=RELAXED_THRESHOLDS,
                                factor=RELAXED_FACTOR, backend=self.backend, max_pixels=self.max_pixels,
                                name="mtcnn")


#: The relaxed second pass (see :meth:`DetectorSettings.relaxed`).
RELAXED_THRESHOLDS = (0.5, 0.6, 0.6)
RELAXED_FACTOR = 0.8
#: Images whose shorter side is below this are upsampled for the second pass, so the
#: detector's smallest window (12 px at ``min_face_size``) still fits a face in a small crop.
UPSAMPLE_BELOW = 200


def centre_face(image_shape: Sequence[int], fraction: float) -> Face:
    """The assumed face of the fixed centre crop (``detected=False``)."""
    height, width = image_shape[:2]
    side = min(height, width) * fraction
    x1, y1 = (width - side) / 2, (height - side) / 2
    return Face(box=np.array([x1, y1, x1 + side, y1 + side], dtype=np.float32), score=0.0,
                landmarks=None, detected=False)


def whole_face(image_shape: Sequence[int]) -> Face:
    """The assumed face of an image that is itself a face crop: all of it (``detected=False``)."""
    height, width = image_shape[:2]
    return Face(box=np.array([0, 0, width, height], dtype=np.float32), score=0.0, landmarks=None, detected=False)


def faces_of(det, detection_pass: int = 1) -> list[Face]:
    """Detections as :class:`Face` values, each with its landmark pose."""
    return [Face(box=det.boxes[i], score=float(det.scores[i]), landmarks=det.landmarks[i],
                 pose=estimate_pose(det.landmarks[i]), detection_pass=detection_pass) for i in range(len(det))]


def _check_settings(margin: int, centre_fraction: float, max_pixels: int, threshold: float | None) -> None:
    """Refuse settings that would fail (or mislead) later, with the range that works."""
    if not isinstance(margin, int) or margin < 0:
        raise OptionError(f"margin must be a whole number of pixels >= 0, got {margin!r}")
    if not 0 < centre_fraction <= 1:
        raise OptionError(f"centre_fraction must lie in (0, 1], got {centre_fraction!r}")
    if not isinstance(max_pixels, int) or max_pixels < 1:
        raise OptionError(f"max_pixels must be a whole number >= 1, got {max_pixels!r}")
    if threshold is not None and not 0 <= threshold <= 4:  # also refuses NaN
        raise OptionError(f"threshold must be a squared distance in [0, 4], got {threshold!r}")


def _views(model: str | None, align: AlignMode | None, flip: bool, preset: "PresetConfig | None") -> tuple[View, ...]:
    """The views a pipeline embeds: a preset's, or the one that ``model``/``align``/``flip`` name."""
    if preset is None:
        config = resolve_config(model, "embedder")
        align = align or config.align  # the registry's crop for this model (chosen on development data)
        return (View(config.name, check_choice(align, AlignMode, "alignment"), bool(flip)),)
    if model is not None or align is not None or flip:
        raise OptionError(f"preset {preset.name!r} sets the model, crop and flip: give either a preset "
                          "or model/align/flip, not both")
    return preset.views


class FacePipeline:
    """Detect, align and embed faces with one pretrained model (or, by a preset, several views).

    ``align`` picks the crop ("align", "margin", "upright" or "centre"; see
    :mod:`facespace.alignment`); by default the model's registered one, chosen on
    development data. ``fallback="centre"`` (or ``"whole"``) embeds the centre crop
    (or the whole image) of an image in which no face was found instead of reporting no face;
    ``second_pass="relaxed"`` first looks again with relaxed detector settings.
    ``backend`` runs the embedding network with ``"torch"`` (any device; float16
    batches on CUDA), ``"onnx"`` (ONNX Runtime on the CPU; same embeddings
    within 1e-4; the default on the CPU, see :func:`facespace.embedding.default_backend`) or
    ``"onnx-int8"`` (int8-quantised, about 3x faster on CPU; its embeddings are labelled
    ``precision=int8:<id>``) or ``"torch-bf16"`` (matrix products in bfloat16, labelled
    ``precision=bf16:...``). MTCNN's networks run with ``detector.backend``; a ``detector`` that
    names no detector gets the preset's (``fast``: BlazeFace), else MTCNN.
    ``face_choice`` is the face that one-face operations (:meth:`embed_one`, :meth:`verify`) use:
    ``"largest"`` or ``"central"`` (see :mod:`facespace.face_choice`). ``preset`` ("fast",
    "balanced", "accurate"; :mod:`facespace.presets`) sets the views, runtime and threshold;
    ``min_quality`` makes :meth:`verify` refuse faces of lower quality (:mod:`facespace.quality`).
    """

    def __init__(
        self,
        model: str | None = None,
        align: AlignMode | None = None,
        flip: bool = False,
        device: str = "cpu",
        batch_size: int = 32,
        detector: DetectorSettings = DetectorSettings(),
        margin: int = 32,
        centre_fraction: float = 0.64,
        fallback: Fallback = "none",
        max_pixels: int = DEFAULT_MAX_PIXELS,
        threshold: float | None = None,
        backend: Backend | None = None,
        face_choice: FaceChoice = "largest",
        second_pass: SecondPass = "relaxed",
        min_quality: float | None = None,
        preset: Preset | None = None,
        embedder: EmbeddingModel | None = None,
    ) -> None:
        # ``embedder``: one made elsewhere (the server's, shared by its workers) for the views of its
        # model, instead of building one from model, device, batch_size, flip and backend.
        self.preset: PresetConfig | None = get_preset(preset) if preset is not None else None
        self.views = _views(model or (embedder.name if embedder is not None and preset is None else None),
                            align, flip, self.preset)
        if self.preset is not None and backend is not None:
            raise OptionError(f"preset {self.preset.name!r} sets the embedding runtime; drop backend={backend!r}")
        backend = self.preset.backend if self.preset is not None else backend
        self.embedders: dict[str, EmbeddingModel] = {embedder.name: embedder} if embedder is not None else {}
        for view in self.views:
            self.embedders.setdefault(view.model, Embedder(view.model, device=device, batch_size=batch_size,
                                                           flip=view.flip, backend=backend))
        self.embedder = self.embedders[self.views[0].model]  # the first view's: its input size and device
        self.align: AlignMode = self.views[0].align
        self.fallback: Fallback = check_choice(fallback, Fallback, "fallback")
        self.face_choice: FaceChoice = check_choice(face_choice, FaceChoice, "face choice")
        self.second_pass: SecondPass = check_choice(second_pass, SecondPass, "second pass")
        _check_settings(margin, centre_fraction, max_pixels, threshold)
        if min_quality is not None and not 0 <= min_quality <= 1:  # also refuses NaN
            raise OptionError(f"min_quality must lie in [0, 1], got {min_quality!r}")
        self.min_quality = min_quality
        self.quality_model = QualityModel.load()
        self.margin, self.centre_fraction, self.max_pixels = margin, centre_fraction, max_pixels
        self.detector_settings = detector.resolved(self.preset.detector if self.preset is not None else None)
        self._detector: Detector | None = None
        self._relaxed: Detector | None = None
        self._landmarkers: dict[str, "Landmarker"] = {}
        self._device = self.embedder.device_name  # resolved and checked by the embedder
        default = self.preset.threshold if self.preset is not None else self.embedder.config.threshold
        self.threshold = float(threshold if threshold is not None else default)

    # -- description -------------------------------------------------------
    @property
    def model_name(self) -> str:
        """The model, or for several views the models joined by ``+``."""
        return "+".join(dict.fromkeys(v.model for v in self.views))

    @property
    def dim(self) -> int:
        """Length of the embedding (the views' lengths added)."""
        return sum(self.embedders[v.model].dim for v in self.views)

    def _view_preprocessing(self, view: View) -> dict:
        embedder = self.embedders[view.model]
        out = {"model": view.model, "align": view.align, "flip": view.flip, "input_size": embedder.input_size,
               "normalisation": embedder.config.normalisation}
        if view.align == "margin":
            out["margin"] = self.margin
        if view.align == "upright":
            out["margin"] = f"{self.margin}/{REFERENCE_FACE_SIDE:g}px"  # scaled with the face
        if view.align == "align":
            out["template"] = template_id()
        if view.align == "align68":
            out["template"] = template_id(template_68()) + f"+{self.landmarker().name}"
        if view.align == "centre" or self.fallback == "centre":
            out["centre_fraction"] = self.centre_fraction
        if self.fallback == "whole":
            out["fallback"] = "whole"
        if self.detector_settings.name != "mtcnn":  # other landmarks, other aligned crops
            out["detector"] = self.detector_settings.name
        if embedder.backend == "onnx-int8":
            from .runtime.quantize import int8_id

            out["precision"] = f"int8:{int8_id(view.model)}"
        if embedder.backend == "torch-bf16":
            out["precision"] = BF16_PRECISION
        return out

    @property
    def preprocessing(self) -> dict:
        """How faces become network inputs; equal dicts mean comparable embeddings."""
        if len(self.views) == 1:
            return self._view_preprocessing(self.views[0])
        return {"model": self.model_name, "preset": self.preset.name if self.preset else None,
                "views": [{**self._view_preprocessing(v), "weight": v.weight} for v in self.views]}

    @property
    def preprocessing_id(self) -> str:
        return ";".join(f"{k}={v}" for k, v in self.preprocessing.items())

    def single_views(self) -> list[tuple["FacePipeline", float]]:
        """One single-view pipeline per view with its share of the fused distance (weights sum to 1):
        how evaluation embeds a preset's views with its cache, then fuses them (:func:`fuse_views`)."""
        total = sum(v.weight for v in self.views)
        options = dict(device=self._device, batch_size=self.embedder.batch_size, detector=self.detector_settings,
                       margin=self.margin, centre_fraction=self.centre_fraction, fallback=self.fallback,
                       max_pixels=self.max_pixels, backend=self.embedder.backend, face_choice=self.face_choice,
                       second_pass=self.second_pass)
        return [(FacePipeline(model=v.model, align=v.align, flip=v.flip, **options), v.weight / total)
                for v in self.views]

    # -- detection -----------------------------------------------------------
    @property
    def detector(self) -> Detector:
        """The face detector, built from ``detector_settings`` on first use."""
        if self._detector is None:
            self._detector = self.detector_settings.build(self._device)
        return self._detector

    def load(self, image: ImageInput) -> np.ndarray:
        return load_image(image, max_pixels=self.max_pixels)

    def detect(self, image: ImageInput) -> list[Face]:
        """All faces in one image, highest score first."""
        return self.detect_arrays([self.load(image)])[0]

    def detect_arrays(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        """Faces in each of several RGB arrays, detected as one batch; images where none was
        found get the relaxed second pass (``second_pass``), then the ``fallback``."""
        if self.align == "centre":
            return [[centre_face(img.shape, self.centre_fraction)] for img in images]
        out = [faces_of(det) for det in self.detector.detect(list(images))]
        missing = [i for i, faces in enumerate(out) if not faces]
        if missing and self.second_pass == "relaxed":
            for i, faces in zip(missing, self.detect_second_pass([images[i] for i in missing])):
                out[i] = faces
        for i, image in enumerate(images):
            if not out[i] and self.fallback != "none":
                out[i] = [self.fallback_face(image.shape)]
        return out

    def detect_second_pass(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        """The relaxed pass: lower thresholds, a finer pyramid, small images upsampled 2x."""
        if self._relaxed is None:
            self._relaxed = self.detector_settings.relaxed().build(self._device)
        factors = [2.0 if min(img.shape[:2]) < UPSAMPLE_BELOW else 1.0 for img in images]
        scaled = [img if k == 1.0 else cv2.resize(img, None, fx=k, fy=k, interpolation=cv2.INTER_LINEAR)
                  for img, k in zip(images, factors)]
        found = self._relaxed.detect(scaled)
        return [faces_of(det.scaled(1 / k, 1 / k), detection_pass=2) for det, k in zip(found, factors)]

    def fallback_face(self, image_shape: Sequence[int]) -> Face:
        """The assumed face of an image with no detection, by ``fallback``."""
        return whole_face(image_shape) if self.fallback == "whole" else centre_face(image_shape, self.centre_fraction)
    # -- landmarks (68 points; facespace.landmarks) ----------------------------
    def landmarker(self, model: "LandmarkModel | None" = None) -> "Landmarker":
        """The landmark model ``model`` (default: the best measured), built once per pipeline."""
        from .landmarks.registry import DEFAULT_LANDMARKER, build_landmarker

        name = model or DEFAULT_LANDMARKER
        if name not in self._landmarkers:
            self._landmarkers[name] = build_landmarker(name)
        return self._landmarkers[name]

    def landmarks(self, image: ImageInput, model: "LandmarkModel | None" = None) -> list[dict[str, list[list[float]]]]:
        """The 68 points of every detected face (highest score first) grouped into named parts
        (chin, eyebrows, nose bridge and tip, eyes, lips: face_recognition's ``face_landmarks``)."""
        from .landmarks.types import parts

        array = self.load(image)
        faces = [f for f in self.detect_arrays([array])[0] if f.detected]
        if not faces:
            return []
        points = self.landmarker(model).locate(array, np.stack([np.asarray(f.box)[:4] for f in faces]))
        return [parts(p) for p in points]

    # -- alignment -------------------------------------------------------------
    def crop(self, image: np.ndarray, face: Face, align: AlignMode | None = None) -> np.ndarray:
        """The network-input crop of one face, made the way ``align`` (default the first view's) says."""
        size = self.embedder.input_size
        align = align or self.align
        if not face.detected:
            if self.fallback == "whole" and align != "centre":
                return margin_crop(image, face.box, size, 0)
            return centre_crop(image, size, self.centre_fraction)
        if align == "align" and face.landmarks is not None:
            return align_face(image, face.landmarks, size)
        if align == "upright" and face.landmarks is not None:
            return upright_crop(image, face.box, face.landmarks, size, self.margin)
        if align == "align68":  # 68 points on the detected box (facespace.landmarks)
            return align_face(image, self.landmarker().locate(image, np.asarray(face.box)[None, :4])[0], size)
        return margin_crop(image, face.box, size, self.margin)

    def embed_faces(self, image_of: Sequence[np.ndarray], faces: Sequence[Face]) -> tuple[np.ndarray, np.ndarray]:
        """(embeddings, first view's crops) of faces, ``image_of[i]`` holding ``faces[i]``: every view
        embedded, fused into one unit vector whose squared distance is the views' weighted mean."""
        size = self.embedder.input_size
        parts, first = [], None
        total = sum(v.weight for v in self.views)
        for view in self.views:
            crops = [self.crop(img, face, view.align) for img, face in zip(image_of, faces)]
            crops = np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8)
            first = crops if first is None else first
            vectors = self.embedders[view.model].embed_crops(crops, flip=view.flip)
            parts.append(vectors if len(self.views) == 1 else vectors * np.sqrt(view.weight / total))
        return np.concatenate(parts, axis=1).astype(np.float32), first

    # -- embedding ---------------------------------------------------------------
    def embed(self, image: ImageInput) -> list[EmbeddedFace]:
        """Every face in one image with its embedding (empty list when there is none)."""
        result = self.embed_images([image], on_error="raise")[0]
        return result.faces

    def embed_one(self, image: ImageInput, rule: FaceChoice | None = None) -> EmbeddedFace:
        """The face an image is about (by ``rule``, default the pipeline's ``face_choice``);
        raises :class:`NoFaceError` when there is none."""
        array = self.load(image)
        chosen = choose_face(self.embed(array), array.shape, rule or self.face_choice)
        if chosen is None:
            raise NoFaceError(f"{describe(image)}: no face found")
        return chosen

    def embed_largest(self, image: ImageInput) -> EmbeddedFace:
        """The largest face in an image; raises :class:`NoFaceError` when there is none."""
        return self.embed_one(image, "largest")

    def embed_images(self, images: Iterable[ImageInput], **options) -> list[ImageResult]:
        """Embed all faces of many images; the options are those of :meth:`iter_embed_images`."""
        return list(self.iter_embed_images(images, **options))

    def iter_embed_images(
        self,
        images: Iterable[ImageInput],
        on_error: OnError = "report",
        chunk: int = 16,
        progress: bool = False,
        total: int | None = None,
        chunk_pixels: int = CHUNK_PIXELS,
    ) -> Iterator[ImageResult]:
        """Embed all faces of many images, batching detection and embedding, as a stream.

        While one chunk is detected and embedded, a background thread decodes
        the next (image decoding releases the GIL), so reading files overlaps
        with the networks; a chunk holds at most ``chunk`` images and ends once it holds
        ``chunk_pixels`` decoded pixels. With ``on_error="report"`` a bad item becomes an
        :class:`ImageResult` carrying its error and the rest go on; ``"raise"``
        stops at the first.
        """
        check_choice(on_error, OnError, "on_error")
        if chunk < 1:
            raise ValueError(f"chunk must be at least 1, got {chunk}")
        items = list(images) if total is None and progress else images
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=total if total is not None else len(items), unit="img", dynamic_ncols=True)
        sources = iter(items)

        def load_chunk() -> list[tuple[str, np.ndarray | None, str | None]]:
            batch, pixels = [], 0
            for source in itertools.islice(sources, chunk):
                try:
                    image = self.load(source)
                    batch.append((describe(source), image, None))
                    pixels += image.shape[0] * image.shape[1]
                except FacespaceError as exc:
                    if on_error == "raise":
                        raise
                    batch.append((describe(source), None, str(exc)))
                if pixels >= chunk_pixels:
                    break
            return batch

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="facespace-load") as loader:
            pending = loader.submit(load_chunk)
            while batch := pending.result():
                pending = loader.submit(load_chunk)
                yield from self._embed_chunk(batch)
                if bar is not None:
                    bar.update(len(batch))
        if bar is not None:
            bar.close()

    def _embed_chunk(self, batch: list[tuple[str, np.ndarray | None, str | None]]) -> list[ImageResult]:
        good = [i for i, (_, img, _) in enumerate(batch) if img is not None]
        faces_per_image = self.detect_arrays([batch[i][1] for i in good])
        owners = [(i, face) for i, faces in zip(good, faces_per_image) for face in faces]
        embeddings, crops = self.embed_faces([batch[i][1] for i, _ in owners], [face for _, face in owners])
        results = [ImageResult(source=name, error=err) for name, _, err in batch]
        for (i, face), emb, crop in zip(owners, embeddings, crops):
            quality = self.quality_model.score(face, crop)
            results[i].faces.append(EmbeddedFace(face=face, embedding=emb, quality=quality))
        return results

    # -- comparison ----------------------------------------------------------------
    def verify(self, a: ImageInput, b: ImageInput) -> Verification:
        """Whether the chosen faces (``face_choice``) of two images show the same person; the two
        images are detected, and their faces embedded, as one batch. With ``min_quality`` set, no
        verdict ("low_quality") when either face is below it."""
        arrays = [self.load(a), self.load(b)]
        chosen = []
        for source, array, result in zip((a, b), arrays, self.embed_images(arrays, on_error="raise")):
            chosen.append(choose_face(result.faces, array.shape, self.face_choice))
            if chosen[-1] is None:
                raise NoFaceError(f"{describe(source)}: no face found")
        first, second = chosen
        return verify_embeddings(first.embedding, second.embedding, self.threshold,
                                 (first.quality or 0.0, second.quality or 0.0), self.min_quality)
