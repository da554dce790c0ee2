"""Which face of an image a one-face operation (verify, enrol, evaluate, align a dataset) uses.

``largest``  the face with the largest box: the subject of an everyday photo.
``central``  the face whose box centre is nearest the image centre: the subject of a
             pre-cropped photo (LFW, an ID photo), where a larger face may be at the edge.

Ties go to the first face (detectors list faces best score first).
"""

from __future__ import annotations

from typing import Literal, Sequence, TypeVar, get_args

import numpy as np

from .types import EmbeddedFace, Face

__all__ = ["FaceChoice", "FACE_CHOICES", "choose_index", "choose_face"]

FaceChoice = Literal["largest", "central"]
FACE_CHOICES: tuple[str, ...] = get_args(FaceChoice)

T = TypeVar("T", Face, EmbeddedFace)


def choose_index(boxes: np.ndarray | Sequence, image_shape: Sequence[int] | None = None,
                 rule: FaceChoice = "largest") -> int | None:
    """Index of the chosen (x1, y1, x2, y2) box, or None when there is none.

    ``image_shape`` (height, width, ...) is needed by the ``central`` rule only.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return None
    if rule == "largest":
        area = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)
        return int(np.argmax(area))
    if rule == "central":
        if image_shape is None:
            raise ValueError("the 'central' face choice needs the image shape")
        height, width = image_shape[:2]
        cx = (boxes[:, 0] + boxes[:, 2]) / 2 - width / 2
        cy = (boxes[:, 1] + boxes[:, 3]) / 2 - height / 2
        return int(np.argmin(cx**2 + cy**2))
    raise ValueError(f"unknown face choice {rule!r}; choose one of {', '.join(FACE_CHOICES)}")


def choose_face(faces: Sequence[T], image_shape: Sequence[int] | None = None,
                rule: FaceChoice = "largest") -> T | None:
    """The chosen face (a :class:`Face` or an :class:`EmbeddedFace`) of one image, or None."""
    boxes = [f.face.box if isinstance(f, EmbeddedFace) else f.box for f in faces]
    index = choose_index(boxes, image_shape, rule)
    return None if index is None else faces[index]
