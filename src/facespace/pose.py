"""Head pose (yaw, pitch, roll in degrees) from MTCNN's five landmarks.

The landmarks are, in image coordinates (x right, y down): left eye, right eye,
nose, mouth left, mouth right, "left" meaning the image's left. The pose is the
rotation that best maps a small 3-D mean face onto them under a pinhole camera
(``cv2.solvePnP``, focal length :data:`FOCAL_FRACTION` times the face box's
width scaled to the eye-mouth size, principal point at the landmarks' centre).

Sign convention (checked on Pointing'04, whose pan and tilt it matches):

* **yaw** > 0: the face turned towards the image's left (the person's right; the
  nose moves left of the eyes' midpoint). Pointing'04's pan has the same sign.
* **pitch** > 0: the face tilted up (the nose moves up towards the eye line).
  Pointing'04's tilt has the same sign (tilt +60 looks up).
* **roll** > 0: the eye line turns clockwise in the image (the right eye below
  the left), i.e. ``atan2(dy, dx)`` of the eye line in image coordinates; exact.

No constant here was fitted on LFW. The 3-D model is a nominal adult face (mm),
not calibrated; landmarks of a profile (|yaw| near 90) are unreliable because
MTCNN still places both eyes on the visible half of the face.
"""

from __future__ import annotations

import math
import cv2
import numpy as np

from .types import Pose

__all__ = ["FACE_MODEL", "FOCAL_FRACTION", "Pose", "estimate_pose", "roll_of"]

#: Nominal 3-D positions (mm) of the five points in the face's frame: x to the image's
#: right, y down, z away from the camera; the nose tip at the origin.
FACE_MODEL = np.array([
    [-31.0, -33.0, 29.0],   # left eye (image left)
    [31.0, -33.0, 29.0],    # right eye
    [0.0, 0.0, 0.0],        # nose tip
    [-24.0, 30.0, 22.0],    # mouth left
    [24.0, 30.0, 22.0],     # mouth right
], dtype=np.float64)

#: Focal length as a multiple of the face's size in pixels (eye-mouth distance over the model's):
#: a weak-perspective camera about 10 face-heights away; the estimate barely depends on it.
FOCAL_FRACTION = 10.0


def roll_of(landmarks: np.ndarray) -> float:
    """Roll in degrees: the angle of the eye line, clockwise in image coordinates."""
    p = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    dx, dy = p[1] - p[0]
    return math.degrees(math.atan2(dy, dx))


def _derotate(points: np.ndarray, roll_deg: float) -> np.ndarray:
    """Points turned by ``-roll`` about their mean, so the eye line is horizontal."""
    a = math.radians(-roll_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    centre = points.mean(axis=0)
    return (points - centre) @ rot.T


def _solve(points: np.ndarray) -> np.ndarray:
    """The rotation matrix of the face model that best fits ``points`` (centred, roll removed)."""
    eyes_mid = (points[0] + points[1]) / 2
    mouth_mid = (points[3] + points[4]) / 2
    size = max(float(np.linalg.norm(mouth_mid - eyes_mid)), 1e-3)
    model_size = float(np.linalg.norm(FACE_MODEL[3:, :2].mean(0) - FACE_MODEL[:2, :2].mean(0)))
    focal = FOCAL_FRACTION * size
    camera = np.array([[focal, 0, 0], [0, focal, 0], [0, 0, 1]], dtype=np.float64)
    distance = focal * model_size / size
    rvec = np.zeros((3, 1))
    tvec = np.array([[0.0], [0.0], [distance]])
    ok, rvec, tvec = cv2.solvePnP(FACE_MODEL, points.astype(np.float64), camera, None,
                                  rvec, tvec, useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        raise ValueError("solvePnP found no pose for these landmarks")
    return cv2.Rodrigues(rvec)[0]


def _angles(rotation: np.ndarray) -> tuple[float, float]:
    """(yaw, pitch) in degrees of a rotation matrix, in the module's sign convention."""
    forward = rotation @ np.array([0.0, 0.0, -1.0])  # where the face points, camera frame (z away)
    yaw = math.degrees(math.atan2(-forward[0], -forward[2]))
    pitch = math.degrees(math.atan2(-forward[1], math.hypot(forward[0], forward[2])))
    return yaw, pitch


def estimate_pose(landmarks: np.ndarray, box: np.ndarray | None = None) -> Pose:
    """Yaw, pitch and roll (degrees) of a face from its five MTCNN landmarks.

    ``box`` (x1, y1, x2, y2) is accepted for callers that have it but is not needed:
    the camera is scaled from the landmarks themselves.
    """
    points = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    if not np.isfinite(points).all():
        raise ValueError("landmarks contain NaN or infinite values")
    roll = roll_of(points)
    yaw, pitch = _angles(_solve(_derotate(points, roll)))
    return Pose(yaw=yaw, pitch=pitch, roll=roll)
