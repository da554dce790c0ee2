"""BlazeFace as a detector: real photos, MediaPipe's decoding, the pipeline and CLI switch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from facespace.detection.blazeface import BlazeFace, _VARIANTS, _weighted_nms, anchors
from facespace.detection.mtcnn import MTCNN
from facespace.detection.nms import pairwise_overlap
from facespace.errors import OptionError
from facespace.imageio import load_image
from facespace.pipeline import DetectorSettings, FacePipeline

from shared_data import DATA

TWO_PEOPLE = DATA / "photos" / "face_recognition_examples" / "examples" / "two_people.jpg"


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return load_image(TWO_PEOPLE)


@pytest.fixture(scope="module")
def mtcnn_faces(photo):
    return MTCNN.pretrained().detect([photo])[0]


@pytest.mark.parametrize("range_", ["short", "full"])
def test_finds_both_faces_with_points_near_mtcnns(range_, photo, mtcnn_faces):
    found = BlazeFace(range_).detect([photo])[0]
    assert len(found) == 2 and (found.scores >= 0.5).all()
    iou = pairwise_overlap(found.boxes, mtcnn_faces.boxes)
    match = iou.argmax(axis=1)
    assert sorted(match) == [0, 1] and (iou.max(axis=1) >= 0.5).all()
    theirs = mtcnn_faces.landmarks[match]
    iod = np.linalg.norm(theirs[:, 1] - theirs[:, 0], axis=1)[:, None]
    error = np.linalg.norm(found.landmarks - theirs, axis=2) / iod  # per point, in inter-ocular distances
    # the faces are ~20 px wide in the 128 px input, where one input pixel is ~0.1 inter-ocular
    # distance; keypoint definitions differ too (BlazeFace's nose tip, on a turned face)
    assert error.max() < 0.4 and error.mean() < 0.25, error
    assert (found.landmarks[:, 0, 0] < found.landmarks[:, 1, 0]).all()  # left eye as seen comes first


def test_boxes_map_back_through_the_letterbox(photo):
    """The same photo, upscaled 2x and put on a wider canvas, gives the same faces in its pixels."""
    detector = BlazeFace("short")
    small = detector.detect([photo])[0]
    big = np.zeros((photo.shape[0] * 2, photo.shape[1] * 2 + 300, 3), np.uint8)
    big[:, 300:] = np.repeat(np.repeat(photo, 2, axis=0), 2, axis=1)
    large = detector.detect([big])[0]
    assert len(large) == len(small) == 2
    order = np.argsort(small.boxes[:, 0]), np.argsort(large.boxes[:, 0])
    expected = small.boxes[order[0]] * 2 + np.array([300, 0, 300, 0])
    side = small.boxes[:, 2] - small.boxes[:, 0]
    assert np.abs(large.boxes[order[1]] - expected).max() < 0.1 * 2 * side.min()


def test_a_batch_equals_one_image_at_a_time(photo):
    detector = BlazeFace("full")
    other = load_image(DATA / "photos" / "face_recognition_examples" / "examples" / "obama.jpg")
    batch = detector.detect([photo, other])
    for image, together in zip([photo, other], batch):
        alone = detector.detect([image])[0]
        np.testing.assert_allclose(together.boxes, alone.boxes, atol=1e-3)
        np.testing.assert_allclose(together.landmarks, alone.landmarks, atol=1e-3)


def test_anchors_cover_the_input_in_the_networks_order():
    short, full = anchors(_VARIANTS["short"]), anchors(_VARIANTS["full"])
    assert short.shape == (896, 2) and full.shape == (2304, 2)
    # 16x16 cells with 2 anchors each, then 8x8 with 6: the first two share the first cell's centre
    assert np.allclose(short[0], short[1]) and np.allclose(short[0], [0.5 / 16, 0.5 / 16])
    assert np.allclose(short[512], [0.5 / 8, 0.5 / 8]) and np.allclose(full[-1], [47.5 / 48, 47.5 / 48])


def test_weighted_nms_merges_overlaps_by_score():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], np.float32)
    points = np.zeros((3, 6, 2), np.float32)
    points[1] += 3.0
    scores = np.array([0.9, 0.6, 0.8], np.float32)
    merged, merged_points, merged_scores = _weighted_nms(boxes, points, scores, 0.3)
    assert merged_scores.tolist() == pytest.approx([0.9, 0.8])
    assert merged[0] == pytest.approx([0.4, 0, 10.4, 10])  # 0.6 and 0.4 of the two boxes
    assert merged_points[0] == pytest.approx(np.full((6, 2), 1.2))
    assert merged[1] == pytest.approx(boxes[2])


def test_bad_values_are_refused():
    with pytest.raises(OptionError, match="BlazeFace range"):
        BlazeFace("medium")
    with pytest.raises(ValueError, match="min_score"):
        BlazeFace("short", min_score=1.5)
    with pytest.raises(OptionError, match="unknown detector 'blaze'"):
        DetectorSettings(name="blaze")
    with pytest.raises(ValueError, match="RGB"):
        BlazeFace("short").detect([np.zeros((10, 10), np.uint8)])


def test_pipeline_records_the_detector():
    plain = FacePipeline()
    fast = FacePipeline(detector=DetectorSettings(name="blazeface"))
    assert "detector" not in plain.preprocessing  # MTCNN's embeddings keep their identity
    assert fast.preprocessing["detector"] == "blazeface" and fast.preprocessing_id != plain.preprocessing_id
    assert isinstance(fast.detector, BlazeFace)


def test_cli_detector_switch():
    cli = [sys.executable, "-m", "facespace.cli.main", "detect", str(TWO_PEOPLE), "--json"]
    proc = subprocess.run(cli + ["--detector", "blazeface"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    faces = json.loads(proc.stdout)["faces"]
    assert len(faces) == 2 and all(len(f["landmarks"]) == 5 for f in faces)
    proc = subprocess.run(cli + ["--detector", "yolo"], capture_output=True, text=True)
    assert proc.returncode == 2 and "invalid choice: 'yolo'" in proc.stderr and "Traceback" not in proc.stderr
