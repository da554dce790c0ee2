"""ONNX export and the ONNX Runtime embedding backend against the torch network, on real LFW faces.

Also covers the inference-time batch-norm folding both backends build on.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facespace.cli.main import main
from facespace.embedding import Embedder
from facespace.errors import WeightsError
from facespace.pretrained.loader import load_embedder, onnx_cache_path
from facespace.runtime.fuse import fuse_for_inference
from facespace.runtime.preprocess import normalise
from facespace.pretrained.registry import get_config
from facespace.pretrained.weights import weight_paths

from conftest import DATA, lfw_image

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

TOLERANCE = 1e-4
MODELS = ["facenet-msceleb-128", "facenet-casia-512"]
IMAGES = [("Aaron_Peirsol", 1), ("Serena_Williams", 1), ("George_W_Bush", 1), ("Colin_Powell", 2),
          ("Aaron_Peirsol", 2)]


def _weights(name: str):
    try:
        return weight_paths(name)
    except WeightsError as exc:
        pytest.skip(f"weights for {name} unavailable: {exc}")


@pytest.fixture(scope="module")
def lfw_crops(pipeline) -> np.ndarray:
    """Margin crops of the detected faces of a few real LFW photos (N x 160 x 160 x 3 uint8)."""
    crops = []
    for name, number in IMAGES:
        image = pipeline.load(lfw_image(name, number))
        for face in pipeline.detect_arrays([image])[0]:
            crops.append(pipeline.crop(image, face))
    assert len(crops) >= len(IMAGES)
    return np.stack(crops)


@pytest.fixture()
def private_home(tmp_path, monkeypatch):
    """A FACESPACE_HOME whose weight files (and converted torch states) link to the real cache."""
    home = tmp_path / "home"
    for name in MODELS + ["mtcnn"]:
        for path in _weights(name).values():
            folder = home / "weights" / name
            folder.mkdir(parents=True, exist_ok=True)
            for file in path.parent.glob(f"{path.name}*"):
                if file.suffix in (".h5", ".pb", ".pt"):
                    (folder / file.name).symlink_to(file.resolve())
    monkeypatch.setenv("FACESPACE_HOME", str(home))
    return home


@pytest.mark.parametrize("name", MODELS)
def test_fused_network_matches_unfused(name, lfw_crops):
    _weights(name)
    plain = load_embedder(name)
    fused = fuse_for_inference(load_embedder(name))
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in fused.modules())
    x = normalise(lfw_crops, get_config(name).normalisation)
    with torch.inference_mode():
        torch.testing.assert_close(fused(x), plain(x), atol=1e-5, rtol=0)
        torch.testing.assert_close(fused(x, normalize=False), plain(x, normalize=False), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_onnx_backend_matches_torch_on_lfw_crops(name, lfw_crops, private_home):
    config = get_config(name)
    cache = onnx_cache_path(config, weight_paths(name))
    assert not cache.exists()
    reference = Embedder(name, backend="torch", batch_size=4).embed_crops(lfw_crops)
    unfused = load_embedder(name)
    with torch.inference_mode():
        plain = unfused(normalise(lfw_crops, config.normalisation)).numpy()
    onnx_embedder = Embedder(name, backend="onnx", batch_size=4)
    ours = onnx_embedder.embed_crops(lfw_crops)
    assert ours.shape == reference.shape == (len(lfw_crops), config.embedding_size)
    assert np.abs(ours - reference).max() < TOLERANCE
    assert np.abs(ours - plain).max() < TOLERANCE
    assert np.abs(reference - plain).max() < TOLERANCE
    # exported on first use into the weight cache, atomically, and reused afterwards
    assert cache.is_file() and not list(cache.parent.glob("*.part"))
    stamp = cache.stat().st_mtime_ns
    again = Embedder(name, backend="onnx", batch_size=len(lfw_crops)).embed_crops(lfw_crops)
    assert cache.stat().st_mtime_ns == stamp
    np.testing.assert_allclose(again, ours, atol=1e-5, rtol=0)


def test_onnx_backend_with_flip_and_pipeline(lfw_crops):
    torch_flip = Embedder(backend="torch", flip=True).embed_crops(lfw_crops[:3])
    onnx_flip = Embedder(backend="onnx", flip=True).embed_crops(lfw_crops[:3])
    assert np.abs(torch_flip - onnx_flip).max() < TOLERANCE
    from facespace import FacePipeline

    a = FacePipeline(backend="onnx").embed(lfw_image("Serena_Williams", 1))
    b = FacePipeline(backend="torch").embed(lfw_image("Serena_Williams", 1))
    assert len(a) == len(b) >= 1
    for x, y in zip(a, b):
        assert np.abs(x.embedding - y.embedding).max() < TOLERANCE


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="backend"):
        Embedder(backend="tensorrt")
    with pytest.raises(ValueError, match="CPU"):
        Embedder(backend="onnx", device="cuda")


def test_export_cli_writes_loadable_dynamic_batch_file(tmp_path, capsys, lfw_crops):
    out = tmp_path / "facenet.onnx"
    assert main(["export", "onnx", "facenet-msceleb-128", str(out)]) == 0
    report = capsys.readouterr().out
    assert "max_abs_diff_vs_torch" in report
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = normalise(lfw_crops, "prewhiten")
    for n in (1, len(x)):
        (got,) = session.run(None, {"input": x[:n].numpy()})
        expected = Embedder(batch_size=n).embed_crops(lfw_crops[:n])
        assert got.shape == (n, 128)
        assert np.abs(got - expected).max() < TOLERANCE


def test_export_cli_mtcnn(tmp_path, capsys):
    from facespace.pretrained.loader import load_mtcnn_net as load_net

    assert main(["export", "onnx", "mtcnn", str(tmp_path / "mtcnn")]) == 0
    capsys.readouterr()
    paths = weight_paths("mtcnn", kind="detector")
    x = torch.randn(1, 3, 75, 61, generator=torch.Generator().manual_seed(0))  # P-Net: any image size
    session = ort.InferenceSession(str(tmp_path / "mtcnn" / "pnet.onnx"), providers=["CPUExecutionProvider"])
    reg, prob = session.run(None, {"input": x.numpy()})
    with torch.inference_mode():
        treg, tprob = load_net("pnet", paths["pnet"])(x)
    np.testing.assert_allclose(prob, tprob.numpy(), atol=1e-5)
    np.testing.assert_allclose(reg, treg.numpy(), atol=1e-5)
    session = ort.InferenceSession(str(tmp_path / "mtcnn" / "onet.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(5, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    outs = session.run(None, {"input": x.numpy()})
    with torch.inference_mode():
        expected = load_net("onet", paths["onet"])(x)
    for got, want in zip(outs, expected):
        np.testing.assert_allclose(got, want.numpy(), atol=1e-5)


def test_export_cli_unknown_model(tmp_path, capsys):
    assert main(["export", "onnx", "no-such-model", str(tmp_path / "x.onnx")]) == 1
    assert "unknown model" in capsys.readouterr().err


# -- int8 ---------------------------------------------------------------------------------------
INT8_MIN_COSINE = 0.99  # measured ~0.998 on LFW (benchmarks/results/int8.json); float gives 1 - 1e-12


def test_int8_backend_is_close_to_float_and_labelled(lfw_crops, private_home):
    from facespace import FacePipeline
    from facespace.runtime.quantize import calibration_file

    assert calibration_file("facenet-msceleb-128").is_file()
    reference = Embedder(backend="torch").embed_crops(lfw_crops)
    int8 = Embedder(backend="onnx-int8").embed_crops(lfw_crops)
    assert int8.shape == reference.shape
    np.testing.assert_allclose(np.linalg.norm(int8, axis=1), 1.0, atol=1e-5)
    cosine = np.sum(int8 * reference, axis=1)
    assert cosine.min() > INT8_MIN_COSINE
    assert np.abs(int8 - reference).max() > 1e-4  # really quantised: not the float graph
    # same person closer than different people under int8 too (rows: Peirsol 1, ..., Peirsol 2)
    same = np.sum((int8[0] - int8[-1]) ** 2)
    assert all(same < np.sum((int8[0] - other) ** 2) for other in int8[1:-1])
    # cached in the weight cache, beside the float graph
    assert list((private_home / "weights").rglob("*-int8-*.onnx"))
    pipeline = FacePipeline(backend="onnx-int8")
    assert pipeline.preprocessing["precision"].startswith("int8:")
    assert "precision" not in FacePipeline(backend="onnx").preprocessing


def test_int8_without_calibration_or_for_the_detector_is_refused(tmp_path, capsys):
    from facespace.errors import FacespaceError
    from facespace.runtime.quantize import calibration_file

    with pytest.raises(FacespaceError, match="no int8 calibration"):
        calibration_file("facenet-casia-512")
    assert main(["export", "onnx", "mtcnn", str(tmp_path / "m"), "--int8"]) == 1
    assert "embedders only" in capsys.readouterr().err
    assert main(["export", "onnx", "facenet-casia-512", str(tmp_path / "x.onnx"), "--int8"]) == 1
    assert "no int8 calibration" in capsys.readouterr().err


def test_onnx_detector_finds_the_same_faces(private_home):
    import cv2

    from facespace.detection.mtcnn import MTCNN

    image = cv2.cvtColor(cv2.imread(str(DATA / "photos" / "dlib_faces" / "bald_guys.jpg")), cv2.COLOR_BGR2RGB)
    reference = MTCNN.pretrained().detect_one(image)
    onnx_found = MTCNN.pretrained(backend="onnx").detect_one(image)
    assert len(reference.boxes) >= 3
    assert len(onnx_found.boxes) == len(reference.boxes)
    np.testing.assert_allclose(onnx_found.boxes, reference.boxes, atol=1e-2)
    np.testing.assert_allclose(onnx_found.landmarks, reference.landmarks, atol=1e-2)
    np.testing.assert_allclose(onnx_found.scores, reference.scores, atol=1e-4)
    assert list((private_home / "weights").rglob("onnx-opset*/pnet.onnx"))
    with pytest.raises(ValueError, match="detector backend"):
        MTCNN.pretrained(backend="tensorrt")


def test_prelu_and_softmax_rewrites_keep_the_function(tmp_path):
    """The graph rewrites MTCNN's export gets, on a small net with PReLU slopes below 0 and above 1
    (as R-Net's are): no PRelu or Softmax left, ONNX Runtime's outputs as torch's."""
    from torch import nn

    from facespace.runtime.onnx_backend import export_module
    from facespace.runtime.onnx_passes import mtcnn_form

    class Small(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.prelu = nn.PReLU(4)
            self.head = nn.Conv2d(4, 2, 1)

        def forward(self, x):
            return torch.softmax(self.head(self.prelu(self.conv(x))), dim=1)

    net = Small().eval()
    with torch.no_grad():
        net.prelu.weight.copy_(torch.tensor([-0.6, 0.0, 0.25, 1.3]))
    export_module(net, (torch.zeros(1, 3, 8, 8),), tmp_path / "small.onnx", ["input"], ["probability"],
                  {"input": {0: "batch", 2: "height", 3: "width"}, "probability": {0: "batch", 2: "h", 3: "w"}},
                  rewrite=mtcnn_form)
    ops = {node.op_type for node in onnx.load(str(tmp_path / "small.onnx")).graph.node}
    assert "PRelu" not in ops and "Softmax" not in ops and "Sigmoid" in ops
    x = torch.randn(3, 3, 9, 7, generator=torch.Generator().manual_seed(0)) * 3
    session = ort.InferenceSession(str(tmp_path / "small.onnx"), providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0], net(x).numpy(), atol=1e-6)


def test_widened_mtcnn_networks_compute_the_same_on_real_crops(pipeline):
    """P-Net and R-Net with their first convolution widened to 16 / 32 channels give the same outputs
    on 24x24 crops of real faces and of the background around them."""
    from facespace.detection.mtcnn import _net_input
    from facespace.pretrained.loader import load_mtcnn_net
    from facespace.runtime.onnx_passes import widened

    paths = weight_paths("mtcnn", kind="detector")
    image = pipeline.load(lfw_image("Serena_Williams", 1))
    crops = np.stack([image[y : y + 24, x : x + 24] for y in range(0, 220, 37) for x in range(0, 220, 41)])
    x = torch.from_numpy(np.ascontiguousarray(_net_input(crops)))
    for key, channels in (("pnet", 16), ("rnet", 32)):
        net = load_mtcnn_net(key, paths[key])
        wide = widened(net)
        assert wide.conv1.out_channels == channels and net.conv1.out_channels < channels
        with torch.inference_mode():
            for got, want in zip(wide(x), net(x)):
                np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)


def test_onnx_detector_batches_within_the_pixel_budget_and_matches_one_by_one(pipeline):
    from facespace.detection import mtcnn

    shapes = {i: (150, 150) for i in range(5)} | {5: (107, 80)}
    batches = mtcnn._pad_batches(list(shapes), shapes, 50_000)
    assert sorted(i for b in batches for i in b) == list(shapes)
    assert all(len(b) == 1 or len(b) * 150 * 150 <= 50_000 for b in batches)
    assert len(mtcnn._pad_batches(list(shapes), shapes)) == 1  # no budget: one padded batch
    detector = mtcnn.MTCNN.pretrained(backend="onnx")
    images = [pipeline.load(lfw_image(name, number)) for name, number in IMAGES]
    for single, batched in zip((detector.detect_one(im) for im in images), detector.detect(images)):
        assert len(single) == len(batched) >= 1
        np.testing.assert_allclose(batched.boxes, single.boxes, atol=1e-3)
        np.testing.assert_allclose(batched.landmarks, single.landmarks, atol=1e-3)
