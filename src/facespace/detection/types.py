"""Result types of face detection."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol, Sequence, get_args

import numpy as np

__all__ = ["DETECT_PIXELS", "Detections", "Detector", "DetectorBackend", "DETECTOR_BACKENDS", "DETECTOR_MODELS",
           "DetectorName", "default_detector_backend", "DETECTOR_NAMES", "LANDMARK_NAMES", "SECOND_PASSES", "SecondPass",
           "check_image"]

#: Which detector finds the faces: MTCNN (the default), or MediaPipe's BlazeFace, short range
#: (128 px input, faces within ~2 m) or full range (192 px, smaller faces), or short range with each
#: face confirmed and its box and five landmarks measured again by MTCNN's O-Net ("blazeface-onet");
#: see detection/blazeface.py.
DetectorName = Literal["mtcnn", "blazeface", "blazeface-full", "blazeface-onet"]
DETECTOR_NAMES: tuple[str, ...] = get_args(DetectorName)
#: The registry's detector entries (weights) each detector runs.
DETECTOR_MODELS: dict[str, tuple[str, ...]] = {"mtcnn": ("mtcnn",), "blazeface": ("blazeface",),
                                               "blazeface-full": ("blazeface-full",),
                                               "blazeface-onet": ("blazeface", "mtcnn")}

#: Runtimes for the detector's networks: "torch", or "onnx" (ONNX Runtime on the CPU, same detections
#: within 2e-4 px, no torch in the process once the graphs are cached; the default on the CPU).
DetectorBackend = Literal["torch", "onnx"]
DETECTOR_BACKENDS: tuple[str, ...] = get_args(DetectorBackend)


def default_detector_backend(device: str = "cpu") -> DetectorBackend:
    """The runtime of MTCNN's networks when none is named: ONNX Runtime on the CPU where it is
    installed (a cached start then never imports torch), torch on other devices."""
    from ..runtime.device import prefers_onnx_runtime

    return "onnx" if prefers_onnx_runtime(device) else "torch"


#: Whether an image in which detection found no face gets a second, relaxed pass.
SecondPass = Literal["relaxed", "off"]
SECOND_PASSES: tuple[str, ...] = get_args(SecondPass)
#: Default working size of detection: images with more pixels are detected on a downscaled copy.
DETECT_PIXELS = 2048 * 2048

#: Order of the five landmarks in :attr:`Detections.landmarks`.
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


def _empty(*shape: int) -> np.ndarray:
    return np.zeros((0, *shape), dtype=np.float32)


@dataclass
class Detections:
    """The faces found in one image, best first.

    ``boxes``: (N, 4) float32 ``x1, y1, x2, y2`` in pixels of the input image
    (continuous coordinates: pixel ``i`` spans ``[i, i + 1)``; a box may extend
    past the image border). ``scores``: (N,) float32 face probability.
    ``landmarks``: (N, 5, 2) float32 image ``x, y`` of left eye, right eye,
    nose, mouth left, mouth right ("left" as seen in the image).
    """

    boxes: np.ndarray = field(default_factory=lambda: _empty(4))
    scores: np.ndarray = field(default_factory=lambda: _empty())
    landmarks: np.ndarray = field(default_factory=lambda: _empty(5, 2))

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.landmarks = np.asarray(self.landmarks, dtype=np.float32).reshape(-1, 5, 2)
        n = len(self.boxes)
        if len(self.scores) != n or len(self.landmarks) != n:
            raise ValueError(
                f"inconsistent detections: {n} boxes, {len(self.scores)} scores, "
                f"{len(self.landmarks)} landmark sets"
            )

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index) -> "Detections":
        """Select detections with an int, slice, index array or boolean mask."""
        if isinstance(index, (int, np.integer)):
            index = [index]
        return Detections(self.boxes[index], self.scores[index], self.landmarks[index])

    @classmethod
    def empty(cls) -> "Detections":
        return cls()

    def scaled(self, sx: float, sy: float | None = None) -> "Detections":
        """The same detections in the pixels of an image ``sx`` times as wide and ``sy`` (default
        ``sx``) times as tall."""
        sy = sx if sy is None else sy
        return Detections(self.boxes * np.array([sx, sy, sx, sy], np.float32), self.scores,
                          self.landmarks * np.array([sx, sy], np.float32))


class Detector(Protocol):
    """What the pipeline needs of a face detector: a batch of RGB arrays in, one
    :class:`Detections` per image out (boxes, scores and the five landmarks)."""

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]: ...


def check_image(image, index: int) -> np.ndarray:
    """``image`` as a contiguous RGB uint8 array, or a ValueError naming its place in the batch."""
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(
            f"image {index}: expected an RGB image of shape (H, W, 3), got shape {array.shape}; "
            "convert greyscale or RGBA images to RGB first"
        )
    if array.dtype != np.uint8:
        raise ValueError(f"image {index}: expected dtype uint8 (0..255 RGB), got {array.dtype}")
    return np.ascontiguousarray(array)
