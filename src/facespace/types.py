"""The values that flow through the pipeline: faces, embedded faces, verdicts."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

@dataclass
class Face:
    """One face in an image: box (x1, y1, x2, y2 pixels), detector score, 5 landmarks.

    ``detected`` is False for a face that was not found by the detector but
    assumed (the fixed centre crop, or a fallback when detection failed).
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray | None = None
    detected: bool = True

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
        return out


@dataclass
class EmbeddedFace:
    """A face with its L2-normalised embedding."""

    face: Face
    embedding: np.ndarray

    def to_dict(self) -> dict:
        return {**self.face.to_dict(), "embedding": [float(v) for v in self.embedding]}


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
    """The verdict on whether two faces show the same person."""

    distance: float
    threshold: float
    same: bool

    def to_dict(self) -> dict:
        return {"distance": round(self.distance, 6), "threshold": self.threshold, "same": self.same,
                "decision": "same" if self.same else "different"}
