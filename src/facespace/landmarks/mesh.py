"""MediaPipe's face mesh as a 68-point landmarker (:class:`~.types.Landmarker`).

The mesh wants a square 192 px crop of the face with a margin and the eyes level, as MediaPipe
cuts it: 1.5 times the face's size, rotated by the eye line. From a detection box alone
neither is known exactly (detectors frame faces differently), so, as MediaPipe's tracking does,
the crop is made twice: first around the box (side 1.5 x its longer side, upright), then
around the first pass's own 468 points (their extent in the eye-levelled frame, 1.5 times,
rotated so the eye corners 33 and 263 are level). The second pass's points are used.

The 468 -> 68 correspondence (one or the mean of two mesh vertices per iBUG point) is the one
published by Peizhi Yan, https://github.com/PeizhiYan/Mediapipe_2_Dlib_Landmarks
(``mediapipe2dlib/mp2dlib.py``, 2024); how well it agrees with hand annotations is measured
by the landmark benchmark, not assumed.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from ..pretrained.loader import load_network
from ..runtime.threads import apply_thread_default

__all__ = ["MeshLandmarker", "MESH_TO_68"]

_SIZE = 192
_SCALE = 1.5
_EYE_CORNERS = (33, 263)  # outer corners of the face's right and left eye in the mesh
#: For each of the 68 iBUG points (in order), the mesh vertices whose mean it is (see module doc).
MESH_TO_68: tuple[tuple[int, ...], ...] = (
    # chin 0..16
    (127,), (234,), (93,), (132, 58), (58, 172), (136,), (150,), (176,), (152,), (400,), (379,),
    (365,), (397, 288), (361,), (323,), (454,), (356,),
    # eyebrows 17..26
    (70,), (63,), (105,), (66,), (107,), (336,), (296,), (334,), (293,), (300,),
    # nose bridge 27..30, nose tip 31..35
    (168, 6), (197, 195), (5,), (4,), (75,), (97,), (2,), (326,), (305,),
    # eyes 36..47
    (33,), (160,), (158,), (133,), (153,), (144,), (362,), (385,), (387,), (263,), (373,), (380,),
    # outer lips 48..59, inner lips 60..67
    (61,), (39,), (37,), (0,), (267,), (269,), (291,), (321,), (314,), (17,), (84,), (91,),
    (78,), (82,), (13,), (312,), (308,), (317,), (14,), (87,),
)


def _pairs() -> np.ndarray:
    """(68, 2) vertex indices; a single vertex is listed twice, so the mean of the pair is the point."""
    return np.array([(v[0], v[-1]) for v in MESH_TO_68])


class MeshLandmarker:
    """68 iBUG points (and the full 468-point mesh) from MediaPipe's face mesh."""

    name = "mesh"

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        apply_thread_default()
        self.net = load_network("facemesh", "landmarker", self.device)
        self._pairs = _pairs()

    def locate(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """(n, 68, 2) float32 image x, y for each (n, 4) x1, y1, x2, y2 box of ``image`` (RGB uint8)."""
        mesh = self.mesh(image, boxes)
        return mesh[:, self._pairs, :2].mean(axis=2).astype(np.float32)

    def mesh(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """(n, 468, 3) mesh points: x, y in image pixels, z (relative depth) in the same scale."""
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        if not len(boxes):
            return np.zeros((0, 468, 3), np.float32)
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        sides = _SCALE * (boxes[:, 2:] - boxes[:, :2]).max(axis=1)
        first = self._run(image, [(c, s, 0.0) for c, s in zip(centres, sides)])
        return self._run(image, [_roi_from_points(p[:, :2]) for p in first])

    @torch.inference_mode()
    def _run(self, image: np.ndarray, rois: list[tuple[np.ndarray, float, float]]) -> np.ndarray:
        crops, inverse = [], []
        for centre, side, angle in rois:
            forward = _crop_matrix(centre, side, angle)
            crops.append(cv2.warpAffine(image, forward, (_SIZE, _SIZE), flags=cv2.INTER_LINEAR,
                                        borderMode=cv2.BORDER_CONSTANT))
            inverse.append(cv2.invertAffineTransform(forward))
        x = torch.from_numpy(np.stack(crops)).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        points, _ = self.net(x)
        points = points.float().cpu().numpy().reshape(-1, 468, 3)
        out = np.empty_like(points)
        for k, m in enumerate(inverse):
            out[k, :, :2] = points[k, :, :2] @ m[:, :2].T + m[:, 2]
            out[k, :, 2] = points[k, :, 2] * math.hypot(m[0, 0], m[1, 0])  # crop pixels -> image pixels
        return out


def _crop_matrix(centre: np.ndarray, side: float, angle: float) -> np.ndarray:
    """The 2x3 map from image pixels to the 192 px crop: ``side`` px around ``centre``, turned by
    ``angle`` radians (counter-clockwise in the image) so that the face comes out upright."""
    scale = _SIZE / max(side, 1e-6)
    cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
    rotation = np.array([[cos, sin], [-sin, cos]], np.float64)
    shift = np.array([_SIZE / 2, _SIZE / 2]) - rotation @ np.asarray(centre, np.float64)
    return np.hstack([rotation, shift[:, None]])


def _roi_from_points(points: np.ndarray) -> tuple[np.ndarray, float, float]:
    """MediaPipe's landmarks-to-ROI: the eye corners' angle, the points' extent in that frame, x1.5."""
    right, left = points[_EYE_CORNERS[0]], points[_EYE_CORNERS[1]]
    angle = math.atan2(left[1] - right[1], left[0] - right[0])  # eye line's slope in the image
    cos, sin = math.cos(angle), math.sin(angle)
    frame = points @ np.array([[cos, -sin], [sin, cos]])  # coordinates along / across the eye line
    lo, hi = frame.min(axis=0), frame.max(axis=0)
    mid = (lo + hi) / 2
    centre = np.array([mid[0] * cos - mid[1] * sin, mid[0] * sin + mid[1] * cos])
    return centre, _SCALE * float((hi - lo).max()), angle
