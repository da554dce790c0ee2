"""Head pose (yaw, pitch, roll in degrees) from MTCNN's five landmarks or the 68 of the iBUG scheme.

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

With 68 points (``facespace.landmarks``) the same solve uses :data:`FACE_MODEL_68`: the chin
and the 51 inner points (brows, nose, eyes, lips; the jaw contour is left out: it is a silhouette
that slides round the face as it turns). Their x, y are dlib68's mean shape (its
``initial_shape``), made mirror-symmetric and scaled so the eye centres are 62 mm apart like
:data:`FACE_MODEL`'s; their depths are nominal per region (:func:`_depth_68`). Roll comes from
the eye centres (means of points 36..41 and 42..47).

No constant here was fitted on LFW. The 3-D model is a nominal adult face (mm),
not calibrated; landmarks of a profile (|yaw| near 90) are unreliable because
MTCNN still places both eyes on the visible half of the face.
"""

from __future__ import annotations

import math
import cv2
import numpy as np

from .types import Pose

__all__ = ["FACE_MODEL", "FACE_MODEL_68", "FOCAL_FRACTION", "POSE_POINTS_68", "Pose", "estimate_pose", "roll_of"]

#: Nominal 3-D positions (mm) of the five points in the face's frame: x to the image's
#: right, y down, z away from the camera; the nose tip at the origin.
FACE_MODEL = np.array([
    [-31.0, -33.0, 29.0],   # left eye (image left)
    [31.0, -33.0, 29.0],    # right eye
    [0.0, 0.0, 0.0],        # nose tip
    [-24.0, 30.0, 22.0],    # mouth left
    [24.0, 30.0, 22.0],     # mouth right
], dtype=np.float64)

#: The 68-scheme points the 68-point pose uses: the chin (8) and the 51 inner points.
POSE_POINTS_68: tuple[int, ...] = (8, *range(17, 68))

#: x, y (mm; x to the image's right, y down, nose tip 30 at the origin) of :data:`POSE_POINTS_68`:
#: dlib68's mean shape, mirror-symmetrised, eye centres 62 mm apart.
_MEAN_XY_68 = np.array([
    [0.0, 78.9], [-57.5, -47.7], [-48.7, -55.6], [-36.2, -58.0], [-23.4, -56.1], [-11.3, -51.1],
    [11.3, -51.1], [23.4, -56.1], [36.2, -58.0], [48.7, -55.6], [57.5, -47.7], [0.0, -36.4],
    [0.0, -24.3], [0.0, -12.3], [0.0, 0.0], [-14.4, 8.3], [-7.5, 10.9], [0.0, 13.1], [7.5, 10.9],
    [14.4, 8.3], [-43.2, -34.9], [-35.5, -39.3], [-26.3, -39.2], [-18.2, -33.1], [-26.8, -31.6],
    [-36.0, -31.7], [18.2, -33.1], [26.3, -39.2], [35.5, -39.3], [43.2, -34.9], [36.0, -31.7],
    [26.8, -31.6], [-27.6, 30.8], [-17.4, 26.7], [-7.2, 24.6], [0.0, 26.4], [7.2, 24.6],
    [17.4, 26.7], [27.6, 30.8], [17.8, 40.7], [7.8, 45.1], [0.0, 45.9], [-7.8, 45.1],
    [-17.8, 40.7], [-23.4, 31.3], [-7.3, 30.6], [0.0, 31.4], [7.3, 30.6], [23.4, 31.3],
    [7.4, 36.0], [0.0, 36.9], [-7.4, 36.0],
])


def _depth_68(index: int, x: float) -> float:
    """Nominal depth (mm behind the nose tip) of a 68-scheme point at ``x`` mm from the midline:
    brows 25 mm deepening to 42 at their ends, the bridge 25 -> 0 down to the tip, nostrils
    8-14, eyes 26 (inner) to 36 (outer corners), lips 12 at the middle to 22 at the corners
    (the 5-point model's eyes 29 and mouth corners 22), the chin 25."""
    x = abs(x)
    if index == 8:
        return 25.0
    if index < 27:
        return 25.0 + 17.0 * (x / 57.5) ** 2
    if index < 31:
        return (25.0, 18.0, 10.0, 0.0)[index - 27]
    if index < 36:
        return 8.0 + 6.0 * (x / 14.4) ** 2
    if index < 48:
        return 26.0 + 10.0 * (x / 43.2) ** 2
    return 12.0 + 10.0 * (x / 27.6) ** 2


#: The 3-D mean face of the 68-point pose (mm), rows in :data:`POSE_POINTS_68` order.
FACE_MODEL_68 = np.array([[x, y, _depth_68(i, x)] for i, (x, y) in zip(POSE_POINTS_68, _MEAN_XY_68)])

#: Focal length as a multiple of the face's size in pixels (eye-mouth distance over the model's):
#: a weak-perspective camera about 10 face-heights away; the estimate barely depends on it.
FOCAL_FRACTION = 10.0


def _eyes(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (image-)left and right eye centres of 5 or 68 landmarks."""
    if len(points) == 68:
        return points[36:42].mean(axis=0), points[42:48].mean(axis=0)
    return points[0], points[1]


def roll_of(landmarks: np.ndarray) -> float:
    """Roll in degrees: the angle of the eye line, clockwise in image coordinates (5 or 68 points)."""
    p = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    left, right = _eyes(p)
    dx, dy = right - left
    return math.degrees(math.atan2(dy, dx))


def _derotate(points: np.ndarray, roll_deg: float) -> np.ndarray:
    """Points turned by ``-roll`` about their mean, so the eye line is horizontal."""
    a = math.radians(-roll_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    centre = points.mean(axis=0)
    return (points - centre) @ rot.T


def _eye_mouth(points: np.ndarray) -> float:
    """Distance from the eyes' midpoint to the mouth corners' midpoint (5 points, or the 68's)."""
    if len(points) == 68:
        eyes_mid, mouth_mid = (points[36:48]).mean(axis=0), points[[48, 54]].mean(axis=0)
    else:
        eyes_mid, mouth_mid = points[:2].mean(axis=0), points[3:5].mean(axis=0)
    return float(np.linalg.norm(mouth_mid - eyes_mid))


def _solve(points: np.ndarray) -> np.ndarray:
    """The rotation matrix of the face model that best fits ``points`` (5 or 68; centred, roll removed)."""
    size = max(_eye_mouth(points), 1e-3)
    if len(points) == 68:
        model = FACE_MODEL_68
        model_size = float(np.linalg.norm(_MEAN_XY_68[[32, 38]].mean(0) - _MEAN_XY_68[20:32].mean(0)))
        points = points[list(POSE_POINTS_68)]
    else:
        model = FACE_MODEL
        model_size = float(np.linalg.norm(FACE_MODEL[3:, :2].mean(0) - FACE_MODEL[:2, :2].mean(0)))
    focal = FOCAL_FRACTION * size
    camera = np.array([[focal, 0, 0], [0, focal, 0], [0, 0, 1]], dtype=np.float64)
    distance = focal * model_size / size
    rvec = np.zeros((3, 1))
    tvec = np.array([[0.0], [0.0], [distance]])
    ok, rvec, tvec = cv2.solvePnP(model, np.ascontiguousarray(points, dtype=np.float64), camera, None,
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
    """Yaw, pitch and roll (degrees) of a face from its five MTCNN landmarks or its 68 points.

    ``box`` (x1, y1, x2, y2) is accepted for callers that have it but is not needed:
    the camera is scaled from the landmarks themselves.
    """
    points = np.asarray(landmarks, dtype=np.float64)
    if points.size not in (10, 136):
        raise ValueError(f"pose needs 5 or 68 landmarks (x, y), got an array of shape {points.shape}")
    points = points.reshape(-1, 2)
    if not np.isfinite(points).all():
        raise ValueError("landmarks contain NaN or infinite values")
    roll = roll_of(points)
    yaw, pitch = _angles(_solve(_derotate(points, roll)))
    return Pose(yaw=yaw, pitch=pitch, roll=roll)
