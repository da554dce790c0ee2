"""The values that flow through the pipeline: faces, embedded faces, verdicts."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Pose:
    """Head pose in degrees (estimated by :func:`facespace.pose.estimate_pose`): yaw > 0 turned
    towards the image's left, pitch > 0 tilted up, roll > 0 the eye line clockwise."""

    yaw: float
    pitch: float
    roll: float

    def to_dict(self) -> dict:
        return {"yaw": round(self.yaw, 1), "pitch": round(self.pitch, 1), "roll": round(self.roll, 1)}


@dataclass
class Face:
    """One face in an image: box (x1, y1, x2, y2 pixels), detector score, 5 landmarks, pose.

    ``detected`` is False for a face that was not found by the detector but
    assumed (the fixed centre crop, or a fallback when detection failed).
    ``detection_pass`` says which detection pass found it: 1, or 2 for the relaxed second pass
    that runs only on images where the first found nothing.
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray | None = None
    detected: bool = True
    pose: Pose | None = None
    detection_pass: int = 1

    @property
    def area(self) -> float:
        return float(max(self.box[2] - self.box[0], 0) * max(self.box[3] - self.box[1], 0))

    def to_dict(self) -> dict:
        out = {
            "box": [round(float(v), 2) for v in self.box],
            "score": round(float(self.score), 5),
            "detected": self.detected,
        }
        if self.landmarks is not None:
            out["landmarks"] = [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks]
        if self.pose is not None:
            out["pose"] = self.pose.to_dict()
        if self.detection_pass != 1:
            out["detection_pass"] = self.detection_pass
        return out


@dataclass
class EmbeddedFace:
    """A face with its L2-normalised embedding and its quality (0..1: how far its comparisons
    can be trusted; see :mod:`facespace.quality`)."""

    face: Face
    embedding: np.ndarray
    quality: float | None = None

    def to_dict(self) -> dict:
        out = self.face.to_dict()
        if self.quality is not None:
            out["quality"] = round(float(self.quality), 4)
        return {**out, "embedding": [float(v) for v in self.embedding]}


@dataclass
class ImageResult:
    """What the pipeline made of one input: its faces, or the error that stopped it."""

    source: str
    faces: list[EmbeddedFace] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Verification:
    """The verdict on whether two faces show the same person.

    ``decision`` is "same", "different", or "low_quality" when a face's quality was below the
    pipeline's ``min_quality``: then ``same`` is None and no verdict is given, rather than a
    confident wrong one.
    """

    distance: float
    threshold: float
    same: bool | None
    quality: tuple[float, float] | None = None
    min_quality: float | None = None

    @property
    def decision(self) -> str:
        if self.same is None:
            return "low_quality"
        return "same" if self.same else "different"

    def to_dict(self) -> dict:
        out = {"distance": round(self.distance, 6), "threshold": self.threshold, "same": self.same,
               "decision": self.decision}
        if self.quality is not None:
            out["quality"] = [round(float(q), 4) for q in self.quality]
            out["min_quality"] = self.min_quality
        return out
