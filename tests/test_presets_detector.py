"""A preset's detector: the fast preset detects with BlazeFace refined by MTCNN's O-Net
("blazeface-onet"), the relaxed MTCNN pass where it finds nothing; a detector named by the caller
(or ``--detector``) wins; BlazeFace on ONNX Runtime. Real images, real networks."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from facespace import FacePipeline
from facespace.detection.blazeface import BlazeFace, RefinedBlazeFace
from facespace.detection.mtcnn import MTCNN
from facespace.detection.nms import pairwise_overlap
from facespace.errors import OptionError
from facespace.imageio import load_image
from facespace.pipeline import DetectorSettings
from facespace.presets import PRESETS, _preset, get_preset

from conftest import lfw_image
from shared_data import DATA

CLI = [sys.executable, "-m", "facespace.cli.main"]


def test_fast_preset_detects_with_refined_blazeface_and_labels_its_embeddings():
    fast = FacePipeline(preset="fast")
    assert get_preset("fast").detector == "blazeface-onet" and fast.detector_settings.name == "blazeface-onet"
    assert isinstance(fast.detector, RefinedBlazeFace)
    assert "detector=blazeface-onet" in fast.preprocessing_id  # galleries never mix it with MTCNN's crops
    image = load_image(lfw_image("Aaron_Peirsol", 1))
    faces = fast.detect_arrays([image])[0]
    reference = FacePipeline().detect_arrays([image])[0]
    assert len(faces) == 1 and faces[0].detection_pass == 1
    assert float(pairwise_overlap(faces[0].box[None], reference[0].box[None])[0, 0]) > 0.5


def test_other_presets_and_the_default_keep_mtcnn():
    for name in PRESETS:
        if get_preset(name).detector is None:
            assert FacePipeline(preset=name).detector_settings.name == "mtcnn"
    plain = FacePipeline()
    assert plain.detector_settings.name == "mtcnn" and isinstance(plain.detector, MTCNN)


def test_a_named_detector_wins_over_the_preset():
    pipe = FacePipeline(preset="fast", detector=DetectorSettings(name="mtcnn"))
    assert pipe.detector_settings.name == "mtcnn" and isinstance(pipe.detector, MTCNN)
    short = FacePipeline(preset="fast", detector=DetectorSettings(name="blazeface"))
    assert short.detector_settings.name == "blazeface" and isinstance(short.detector, BlazeFace)


def test_fast_preset_falls_back_to_the_relaxed_mtcnn_pass():
    """A face too small for BlazeFace's 128-px input (an LFW photo on a 1500-px canvas) is found by
    the relaxed MTCNN pass, where it lies in the canvas."""
    fast = FacePipeline(preset="fast")
    photo = load_image(lfw_image("Aaron_Peirsol", 1))
    canvas = np.full((1500, 1500, 3), 128, np.uint8)
    canvas[600:850, 600:850] = photo
    assert len(fast.detector.blazeface.detect([canvas])[0]) == 0
    assert len(fast.detector.detect([canvas])[0]) == 0
    faces = fast.detect_arrays([canvas])[0]
    assert len(faces) == 1 and faces[0].detection_pass == 2
    alone = FacePipeline().detect_arrays([photo])[0][0].box + 600
    assert float(pairwise_overlap(faces[0].box[None], alone[None])[0, 0]) > 0.7


def test_a_preset_naming_an_unknown_detector_is_refused():
    data = {"views": [{"model": "facenet-msceleb-128", "align": "upright"}], "threshold": 1.0,
            "detector": "haar"}
    with pytest.raises(OptionError, match="detector"):
        _preset("broken", data)
    assert _preset("fine", {**data, "detector": "blazeface-full"}).to_dict()["detector"] == "blazeface-full"


def test_cli_fast_preset_uses_blazeface_unless_told_otherwise():
    folder = DATA / "lfw" / "lfw-deepfunneled" / "Aaron_Peirsol"
    pair = [str(folder / f"Aaron_Peirsol_000{k}.jpg") for k in (1, 2)]

    def distance(*options: str) -> float:
        out = subprocess.run([*CLI, "verify", *pair, "--json", *options], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)["distance"]
    fast, fast_mtcnn = distance("--preset", "fast"), distance("--preset", "fast", "--detector", "mtcnn")
    assert fast != fast_mtcnn  # O-Net on BlazeFace's box: other landmarks, other crops
    assert fast_mtcnn == distance("--backend", "onnx-int8")  # the same int8 network on MTCNN's crops


def _photos() -> list[np.ndarray]:
    folder = DATA / "lfw" / "lfw-deepfunneled"
    return [load_image(folder / name / f"{name}_0001.jpg")
            for name in ("Aaron_Peirsol", "Zico", "Abdullah_Gul", "Alvaro_Uribe", "Angelina_Jolie", "Colin_Powell")]


def test_blazeface_on_onnx_runtime_matches_torch():
    photos = _photos() + [load_image(p) for p in sorted((DATA / "photos" / "dlib_faces").glob("*.jpg"))[:3]]
    for range_ in ("short", "full"):
        ours, theirs = BlazeFace(range_, backend="onnx"), BlazeFace(range_, backend="torch")
        for photo in photos:
            a, b = ours.detect([photo])[0], theirs.detect([photo])[0]
            assert len(a) == len(b)
            np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
            np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-3)
            np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)


def test_onet_refined_landmarks_are_mtcnns_within_a_few_percent():
    """O-Net on BlazeFace's proposals gives landmarks within 5% of the eye distance of full MTCNN's
    (median; measured 4% on celeba-299), where BlazeFace's own mouth corners are fitted offsets."""
    refined = DetectorSettings(name="blazeface-onet").build("cpu")
    mtcnn = MTCNN.pretrained(backend="onnx")
    errors = []
    for photo in _photos():
        a, b = refined.detect([photo])[0], mtcnn.detect_one(photo)
        assert len(a) >= 1 and len(b) >= 1
        eyes = np.linalg.norm(b.landmarks[0, 0] - b.landmarks[0, 1])
        errors.append(np.abs(a.landmarks[0] - b.landmarks[0]).max() / eyes)
    assert np.median(errors) < 0.05, errors


def test_refine_maps_proposals_through_the_working_size():
    """On a photo above the working size O-Net runs on the downscaled copy; boxes come back in
    the photo's pixels, where MTCNN's full detection puts the face."""
    photo = load_image(lfw_image("Aaron_Peirsol", 1))
    big = np.ascontiguousarray(np.repeat(np.repeat(photo, 9, axis=0), 9, axis=1))  # 2250 x 2250 > 4 MP
    mtcnn = MTCNN.pretrained(backend="onnx")
    assert mtcnn._working_size(big.shape) is not None
    reference = mtcnn.detect_one(big)
    found = mtcnn.refine([big], [reference.boxes[:1]])[0]
    assert len(found) == 1
    assert float(pairwise_overlap(found.boxes[:1], reference.boxes[:1])[0, 0]) > 0.8
    with pytest.raises(ValueError):
        mtcnn.refine([big], [])
