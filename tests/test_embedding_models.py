"""The PyTorch FaceNet ports against embeddings computed by TensorFlow itself.

tests/fixtures/reference_embeddings.json was written by
scripts/make_reference_fixture.py in a throwaway TensorFlow environment; here
the real pretrained weights (fetched through the registry) are converted
without TensorFlow and must reproduce those embeddings on real LFW faces.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import facespace.pretrained.loader as models
from facespace.errors import WeightsError
from facespace.pretrained.graphdef import parse_tensor, read_graph, read_constants
from facespace.networks.inception_resnet_v1 import InceptionResnetV1
from facespace.runtime.preprocess import normalise
from facespace.pretrained.registry import get_config
from facespace.pretrained.weights import weight_paths

REPO = Path(__file__).resolve().parents[1]
from shared_data import DATA
FIXTURE = json.loads((REPO / "tests" / "fixtures" / "reference_embeddings.json").read_text())
MODELS = sorted(FIXTURE["models"])
TOLERANCE = 1e-4


def _weights(name: str) -> dict[str, Path]:
    try:
        return weight_paths(name)
    except WeightsError as exc:  # offline and nothing cached
        pytest.skip(f"weights for {name} unavailable: {exc}")


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    rows, cols = FIXTURE["crop"]["rows"], FIXTURE["crop"]["cols"]
    out = []
    for image in FIXTURE["images"]:
        path = DATA / image["path"]
        if not path.is_file():
            pytest.fail(f"test image {path} not found: the tests need ../shared/data")
        with Image.open(path) as im:
            crop = np.ascontiguousarray(np.asarray(im.convert("RGB"))[rows[0]:rows[1], cols[0]:cols[1]])
        assert hashlib.sha256(crop.tobytes()).hexdigest() == image["crop_sha256"], \
            f"{image['path']} decodes to other pixels than when the fixture was made"
        out.append(crop)
    return np.stack(out)


@pytest.fixture(scope="module")
def embedders() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    out = {}
    for name in MODELS:
        _weights(name)
        out[name] = models.load_embedder(name)
    return out


@pytest.fixture(scope="module")
def outputs(embedders, crops) -> dict[str, torch.Tensor]:
    """Each model's embeddings of the fixture crops (one forward pass per model)."""
    with torch.inference_mode():
        return {name: net(normalise(crops, get_config(name).normalisation))
                for name, net in embedders.items()}


@pytest.mark.parametrize("name", MODELS)
def test_matches_tensorflow_reference(name, outputs, crops):
    config = get_config(name)
    assert FIXTURE["models"][name]["normalisation"] == config.normalisation
    ours = outputs[name].numpy()
    reference = np.asarray(FIXTURE["models"][name]["embeddings"], dtype=np.float32)
    assert ours.shape == reference.shape == (len(crops), config.embedding_size)
    diff = np.abs(ours - reference).max()
    assert diff < TOLERANCE, f"{name}: max abs difference {diff:.2e} to TensorFlow"


@pytest.mark.parametrize("name", MODELS)
def test_output_is_unit_norm_and_raw_bottleneck_is_not(name, embedders, outputs, crops):
    network = embedders[name]
    assert not network.training
    embeddings = outputs[name]
    torch.testing.assert_close(embeddings.norm(dim=1), torch.ones(len(crops)), atol=1e-5, rtol=0)
    with torch.inference_mode():
        raw = network(normalise(crops[:1], get_config(name).normalisation), normalize=False)
    assert raw.shape == (1, get_config(name).embedding_size)
    assert abs(raw.norm().item() - 1.0) > 1e-2
    torch.testing.assert_close(torch.nn.functional.normalize(raw, dim=1), embeddings[:1])


def test_normalise_modes_and_layouts(crops):
    x = normalise(crops, "prewhiten")
    assert x.shape == (len(crops), 3, 160, 160) and x.dtype == torch.float32
    torch.testing.assert_close(x.mean(dim=(1, 2, 3)), torch.zeros(len(crops)), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.std(dim=(1, 2, 3), correction=0), torch.ones(len(crops)))
    assert torch.equal(normalise(torch.from_numpy(crops), "prewhiten"), x)
    assert torch.equal(normalise(crops[0], "prewhiten"), x[:1])
    fixed = normalise(crops, "fixed")
    assert torch.equal(fixed, (torch.from_numpy(crops).permute(0, 3, 1, 2).float() - 127.5) / 128)
    with pytest.raises(ValueError):
        normalise(crops, "imagenet")


def test_graphdef_reader_parses_frozen_graph():
    path = _weights("facenet-casia-512")["weights"]
    nodes = read_graph(path)
    by_name = {n.name: n for n in nodes}
    assert by_name["input"].op == "Placeholder"
    assert by_name["input"].attr["shape"] == (1, 160, 160, 3)
    conv = by_name["InceptionResnetV1/Conv2d_1a_3x3/Conv2D"]
    assert conv.op == "Conv2D" and conv.attr["strides"] == [1, 2, 2, 1] and conv.attr["padding"] == "VALID"
    assert conv.input == ["input:0", "InceptionResnetV1/Conv2d_1a_3x3/weights"]
    consts = read_constants(nodes)
    expected = {
        "InceptionResnetV1/Conv2d_1a_3x3/weights": (3, 3, 3, 32),
        "InceptionResnetV1/Conv2d_1a_3x3/Conv2D_bn_offset": (32,),
        "InceptionResnetV1/Repeat_1/block17_1/Branch_1/Conv2d_0b_1x7/weights": (1, 7, 128, 128),
        "InceptionResnetV1/Block8/Conv2d_1x1/weights": (1, 1, 384, 1792),
        "InceptionResnetV1/Bottleneck/weights": (1792, 512),
        "InceptionResnetV1/Bottleneck/BatchNorm/moving_variance": (512,),
    }
    for name, shape in expected.items():
        assert consts[name].shape == shape and consts[name].dtype == np.float32, name
    assert np.isclose(consts["InceptionResnetV1/Repeat/block35_1/mul/x"], 0.17)
    assert consts["InceptionResnetV1/Bottleneck/BatchNorm/Reshape/shape"].tolist() == [-1, 1, 1, 512]


def _field(number: int, wire: int, payload: bytes) -> bytes:
    def varint(v: int) -> bytes:
        out = bytearray()
        while True:
            out.append((v & 0x7F) | (0x80 if v > 0x7F else 0))
            v >>= 7
            if not v:
                return bytes(out)
    key = varint(number << 3 | wire)
    return key + (varint(len(payload)) + payload if wire == 2 else payload)


def test_tensor_proto_value_forms():
    shape = _field(2, 2, _field(1, 0, b"\x02")) + _field(2, 2, _field(1, 0, b"\x03"))
    # packed float_val with one value fills the whole shape (protobuf's splat form)
    splat = _field(1, 0, b"\x01") + _field(2, 2, shape) + _field(5, 2, struct.pack("<f", 1.5))
    np.testing.assert_array_equal(parse_tensor(memoryview(splat)), np.full((2, 3), 1.5, np.float32))
    # tensor_content holds raw little-endian bytes
    data = np.arange(6, dtype="<i4")
    content = _field(1, 0, b"\x03") + _field(2, 2, shape) + _field(4, 2, data.tobytes())
    np.testing.assert_array_equal(parse_tensor(memoryview(content)), data.reshape(2, 3))


def test_converted_state_is_cached_and_reused(tmp_path, monkeypatch):
    name = "facenet-msceleb-128"
    real = _weights(name)
    home = tmp_path / "home"
    for key, path in real.items():  # a private cache holding the real, verified files
        link = home / "weights" / name / path.name
        link.parent.mkdir(parents=True)
        link.symlink_to(path.resolve())
    monkeypatch.setenv("FACESPACE_HOME", str(home))
    config = get_config(name)
    cache = models.converted_cache_path(config, weight_paths(name))
    assert not cache.exists()

    calls = []
    original = models.FORMATS[config.format]
    counting = models.WeightFormat(lambda m, p: calls.append(1) or original.convert(m, p),
                                   original.model_kwargs)
    monkeypatch.setitem(models.FORMATS, config.format, counting)

    first = models.load_embedder(name)
    assert calls == [1] and cache.is_file()
    assert not list(cache.parent.glob("*.part"))  # the atomic write left no temp file
    second = models.load_embedder(name)
    assert calls == [1], "the cached conversion was not reused"
    for (k, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), k

    monkeypatch.setattr(models, "CONVERTER_VERSION", models.CONVERTER_VERSION + 1)
    assert models.converted_cache_path(config, weight_paths(name)) != cache


def test_wrong_layout_is_refused():
    from facespace.pretrained.convert_graphdef import convert_tf_graphdef

    path = _weights("facenet-casia-512")["weights"]
    with pytest.raises(WeightsError, match="folded_bn"):
        convert_tf_graphdef(path, InceptionResnetV1(512, folded_bn=False))
