"""Pose from landmarks on real Pointing'04 images, and the Pointing'04 pairs builder."""

from __future__ import annotations

import math

import numpy as np
import pytest

from facespace.evaluation.pointing04 import list_images, parse_name, pose_pairs, read_face_box
from facespace.pose import estimate_pose, roll_of

from shared_data import DATA

POINTING04 = DATA / "pointing04"
needs_data = pytest.mark.skipif(not (POINTING04 / "Person01").is_dir(), reason="Pointing'04 not in shared data")

#: A frontal-ish set of landmarks (left eye, right eye, nose, mouth left, mouth right).
FRONTAL = np.array([[115, 105], [177, 104], [151, 138], [125, 174], [174, 173]], dtype=float)


def test_roll_exact_on_rotated_landmarks():
    centre = FRONTAL.mean(axis=0)
    base = roll_of(FRONTAL)
    for angle in (-40.0, -10.0, 0.0, 25.0):
        a = math.radians(angle)
        rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        turned = (FRONTAL - centre) @ rot.T + centre
        pose = estimate_pose(turned)
        assert pose.roll == pytest.approx(base + angle, abs=1e-9)
        assert pose.yaw == pytest.approx(estimate_pose(FRONTAL).yaw, abs=0.5)  # roll removed first


def test_mirrored_landmarks_flip_yaw_sign():
    mirrored = FRONTAL.copy()
    mirrored[:, 0] = 300 - mirrored[:, 0]
    mirrored = mirrored[[1, 0, 2, 4, 3]]  # image-left stays first
    assert estimate_pose(mirrored).yaw == pytest.approx(-estimate_pose(FRONTAL).yaw, abs=1e-3)


def test_rejects_non_finite_landmarks():
    bad = FRONTAL.copy()
    bad[2, 0] = np.nan
    with pytest.raises(ValueError):
        estimate_pose(bad)


@pytest.fixture(scope="module")
def detector():
    from facespace.detection.mtcnn import MTCNN

    return MTCNN.pretrained()


def _yaw(detector, name: str) -> float:
    from facespace.imageio import load_image
    from facespace.detection.nms import pairwise_overlap

    path = POINTING04 / name[:8].capitalize() / name
    det = detector.detect([load_image(path)])[0]
    iou = pairwise_overlap(read_face_box(path)[None], det.boxes)[0]
    return estimate_pose(det.landmarks[int(np.argmax(iou))]).yaw


@needs_data
@pytest.mark.parametrize("name,pan", [("person01146+0+0.jpg", 0), ("person01144+0-30.jpg", -30),
                                      ("person01148+0+30.jpg", 30), ("person05246+0+0.jpg", 0)])
def test_yaw_near_pan(detector, name, pan):
    assert abs(_yaw(detector, name) - pan) < 20


@needs_data
@pytest.mark.parametrize("name,sign", [("person01143+0-45.jpg", -1), ("person01149+0+45.jpg", 1),
                                       ("person05143+0-45.jpg", -1), ("person05149+0+45.jpg", 1)])
def test_yaw_sign_at_45(detector, name, sign):
    assert np.sign(_yaw(detector, name)) == sign


def test_parse_name():
    im = parse_name(POINTING04 / "Person01" / "person01100-90+0.jpg")
    assert (im.person, im.series, im.index, im.tilt, im.pan) == (1, 1, 0, -90, 0)
    assert parse_name(POINTING04 / "Front" / "personne01146+0+0.jpg") is None


@needs_data
def test_pairs_counts_and_disjoint_folds():
    images = list_images(POINTING04)
    assert len(images) == 15 * 2 * 93
    pairs, tilts, pans = pose_pairs(images)
    assert int(pairs.same.sum()) == 15 * 93
    assert int((~pairs.same).sum()) == 5 * 3 * 2 * 93  # 3 person pairs a fold, both series orders
    assert pairs.n_folds == 5
    label = {im.path: im for im in images}
    people_of = {}
    for a, b, k, tilt, pan in zip(pairs.first, pairs.second, pairs.folds, tilts, pans):
        ia, ib = label[a], label[b]
        assert ia.pose == ib.pose == (tilt, pan) and (ia.series, ib.series) == (1, 2)
        people_of.setdefault(int(k), set()).update({ia.person, ib.person})
    assert all(len(p) == 3 for p in people_of.values())
    assert len(set().union(*people_of.values())) == 15
    assert read_face_box(images[0].path).shape == (4,)
