"""The whole path of a photo: image -> detection -> alignment -> embedding -> comparison.

:class:`FacePipeline` wires the parts together and is what the CLI, the REST
service, evaluation and the gallery use, so every entry point preprocesses
faces the same way. ``preprocessing`` records that way, so stored embeddings
can be checked for compatibility later.
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Iterator, Literal, Sequence

import numpy as np

from .alignment import AlignMode, align_face, centre_crop, margin_crop, template_68, template_id
from .comparison import verify as verify_embeddings
from .detection.types import DETECT_PIXELS, Detector, DetectorBackend, DetectorName
from .embedding import Backend, Embedder
from .errors import FacespaceError, NoFaceError, OptionError, check_choice
from .face_choice import FaceChoice, choose_face
from .imageio import DEFAULT_MAX_PIXELS, ImageInput, describe, load_image
from .types import EmbeddedFace, Face, ImageResult, Verification

if TYPE_CHECKING:
    from .landmarks.types import LandmarkModel, Landmarker

#: What to embed in an image where no face was found: nothing, or the fixed centre crop.
Fallback = Literal["none", "centre"]
#: What a batch does with an unreadable item: report it in its result and go on, or raise.
OnError = Literal["report", "raise"]
#: Decoded pixels per chunk of a batch (a chunk also ends at ``chunk`` images): with one chunk
#: decoding ahead, a batch of huge photos holds about two chunks in memory, not all of them.
CHUNK_PIXELS = 16_000_000


@dataclass(frozen=True)
class DetectorSettings:
    """Which detector (``name``) and MTCNN's parameters: smallest face in pixels, per-stage score
    thresholds, pyramid factor, the runtime of its networks ("torch" or "onnx": ONNX Runtime on
    the CPU, same detections) and the working size."""

    min_face_size: int = 20
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    factor: float = 0.709
    backend: DetectorBackend = "torch"
    #: Working size in pixels: larger images are detected on a downscaled copy (None: full size).
    max_pixels: int | None = DETECT_PIXELS
    #: The detector: "mtcnn" (all settings above apply), "blazeface" or "blazeface-full" (these
    #: downscale the whole image to their input as MediaPipe does; the MTCNN settings do not apply).
    name: DetectorName = "mtcnn"

    def __post_init__(self) -> None:
        check_choice(self.name, DetectorName, "detector")

    def build(self, device: str) -> Detector:
        from .detection.mtcnn import MTCNN

        if self.name != "mtcnn":
            from .detection.blazeface import BlazeFace

            return BlazeFace("full" if self.name == "blazeface-full" else "short", device=device)
        return MTCNN.pretrained(device=device, min_face_size=self.min_face_size, thresholds=self.thresholds,
                                factor=self.factor, backend=self.backend, max_pixels=self.max_pixels)


def centre_face(image_shape: Sequence[int], fraction: float) -> Face:
    """The assumed face of the fixed centre crop (``detected=False``)."""
    height, width = image_shape[:2]
    side = min(height, width) * fraction
    x1, y1 = (width - side) / 2, (height - side) / 2
    return Face(box=np.array([x1, y1, x1 + side, y1 + side], dtype=np.float32), score=0.0,
                landmarks=None, detected=False)


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


class FacePipeline:
    """Detect, align and embed faces with one pretrained model.

    ``align`` picks the crop ("align", "margin" or "centre"; see
    :mod:`facespace.alignment`); by default the model's registered one, the
    best measured on LFW. ``fallback="centre"`` embeds the centre crop
    of an image in which no face was found instead of reporting no face.
    ``backend`` runs the embedding network with ``"torch"`` (any device; float16
    batches on CUDA), ``"onnx"`` (ONNX Runtime on the CPU; same embeddings
    within 1e-4) or ``"onnx-int8"`` (int8-quantised, about 3x faster on CPU;
    its embeddings are labelled ``precision=int8:<id>``). Detection (MTCNN) always runs in torch on ``device``.
    ``face_choice`` is the face that one-face operations (:meth:`embed_one`, :meth:`verify`) use:
    ``"largest"`` or ``"central"`` (see :mod:`facespace.face_choice`).
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
        backend: Backend = "torch",
        face_choice: FaceChoice = "largest",
    ) -> None:
        self.embedder = Embedder(model, device=device, batch_size=batch_size, flip=flip, backend=backend)
        align = align or self.embedder.config.align  # the registry's best-measured crop for this model
        self.align: AlignMode = check_choice(align, AlignMode, "alignment")
        self.fallback: Fallback = check_choice(fallback, Fallback, "fallback")
        self.face_choice: FaceChoice = check_choice(face_choice, FaceChoice, "face choice")
        _check_settings(margin, centre_fraction, max_pixels, threshold)
        self.margin = margin
        self.centre_fraction = centre_fraction
        self.max_pixels = max_pixels
        self.detector_settings = detector
        self._detector: Detector | None = None
        self._landmarkers: dict[str, "Landmarker"] = {}
        self._device = str(self.embedder.device)  # resolved and checked by the embedder
        registered = self.embedder.config.threshold
        self.threshold = float(threshold if threshold is not None else registered)

    # -- description -------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self.embedder.name

    @property
    def preprocessing(self) -> dict:
        """How faces become network inputs; equal dicts mean comparable embeddings."""
        out = {
            "model": self.model_name,
            "align": self.align,
            "flip": self.embedder.flip,
            "input_size": self.embedder.input_size,
            "normalisation": self.embedder.config.normalisation,
        }
        if self.align == "margin":
            out["margin"] = self.margin
        if self.align == "align":
            out["template"] = template_id()
        if self.align == "align68":
            out["template"] = template_id(template_68()) + f"+{self.landmarker().name}"
        if self.align == "centre" or self.fallback == "centre":
            out["centre_fraction"] = self.centre_fraction
        if self.detector_settings.name != "mtcnn":  # other landmarks, other aligned crops
            out["detector"] = self.detector_settings.name
        if self.embedder.backend == "onnx-int8":
            from .runtime.quantize import int8_id

            out["precision"] = f"int8:{int8_id(self.model_name)}"
        return out

    @property
    def preprocessing_id(self) -> str:
        return ";".join(f"{k}={v}" for k, v in self.preprocessing.items())

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
        """Faces in each of several RGB arrays, detected as one batch."""
        if self.align == "centre":
            return [[centre_face(img.shape, self.centre_fraction)] for img in images]
        found = self.detector.detect(list(images))
        out = []
        for image, det in zip(images, found):
            faces = [Face(box=det.boxes[i], score=float(det.scores[i]), landmarks=det.landmarks[i])
                     for i in range(len(det))]
            if not faces and self.fallback == "centre":
                faces = [centre_face(image.shape, self.centre_fraction)]
            out.append(faces)
        return out

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
    def crop(self, image: np.ndarray, face: Face) -> np.ndarray:
        """The network-input crop of one face, made the way ``align`` says."""
        size = self.embedder.input_size
        if not face.detected:
            return centre_crop(image, size, self.centre_fraction)
        if self.align == "align" and face.landmarks is not None:
            return align_face(image, face.landmarks, size)
        if self.align == "align68":  # 68 points on the detected box (facespace.landmarks)
            return align_face(image, self.landmarker().locate(image, np.asarray(face.box)[None, :4])[0], size)
        return margin_crop(image, face.box, size, self.margin)

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
        crops, owners = [], []
        for i, faces in zip(good, faces_per_image):
            for face in faces:
                crops.append(self.crop(batch[i][1], face))
                owners.append((i, face))
        size = self.embedder.input_size
        embeddings = self.embedder.embed_crops(np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8))
        results = [ImageResult(source=name, error=err) for name, _, err in batch]
        for (i, face), emb in zip(owners, embeddings):
            results[i].faces.append(EmbeddedFace(face=face, embedding=emb))
        return results

    # -- comparison ----------------------------------------------------------------
    def verify(self, a: ImageInput, b: ImageInput) -> Verification:
        """Whether the chosen faces (``face_choice``) of two images show the same person."""
        first, second = self.embed_one(a), self.embed_one(b)
        return verify_embeddings(first.embedding, second.embedding, self.threshold)
