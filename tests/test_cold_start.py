"""The torch-free inference path (issue 13, cold start): ONNX Runtime + NumPy from a cached graph.

* a fresh ``facespace verify`` process never imports torch once the graphs are cached, and gives
  the verdict the torch runtime gives;
* MTCNN on ONNX Runtime finds the same faces as on torch on real photos;
* a cached graph's checksum is trusted only while its file is unchanged: a tampered graph is
  exported again, and an unchanged one is not hashed on every start.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from facespace import files
from facespace.detection.mtcnn import MTCNN
from facespace.embedding import Embedder
from facespace.pretrained.weights import weight_paths

from conftest import lfw_image
from shared_data import DATA

pytest.importorskip("onnxruntime")

PAIR = (lfw_image("Aaron_Peirsol", 1), lfw_image("Aaron_Peirsol", 2))
PHOTOS = sorted((DATA / "photos" / "dlib_faces").glob("*.jpg"))
#: Runs ``facespace`` with the arguments after ``--`` in this process, then reports its modules.
PROBE = ("import sys; from facespace.cli.main import main; code = main(sys.argv[1:]); "
         "print('TORCH_LOADED', 'torch' in sys.modules, file=sys.stderr); sys.exit(code)")


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, FACESPACE_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", PROBE, *args], env=env, capture_output=True, text=True,
                          timeout=300)


def _rgb(path) -> np.ndarray:
    return np.ascontiguousarray(cv2.imread(str(path))[:, :, ::-1])


def test_cached_verify_never_imports_torch_and_matches_torch():
    pair = [str(p) for p in PAIR]
    warm = _cli("verify", *pair, "--json")  # makes the ONNX caches if this machine has none yet
    assert warm.returncode == 0, warm.stderr
    fresh = _cli("verify", *pair, "--json")
    assert fresh.returncode == 0, fresh.stderr
    assert "TORCH_LOADED False" in fresh.stderr
    torch_run = _cli("verify", *pair, "--json", "--backend", "torch", "--detector-backend", "torch")
    assert "TORCH_LOADED True" in torch_run.stderr
    ours, theirs = json.loads(fresh.stdout), json.loads(torch_run.stdout)
    assert ours["same"] is theirs["same"] is True
    assert abs(ours["distance"] - theirs["distance"]) < 1e-4
    assert ours["threshold"] == theirs["threshold"]
    # the text verdict is the one the torch runtime prints
    on_torch = ("--backend", "torch", "--detector-backend", "torch")
    text = [_cli("verify", *pair, *extra).stdout for extra in ((), on_torch)]
    assert text[0] == text[1] and text[0].startswith("same: distance ")


def test_cached_fast_preset_never_imports_torch():
    """The fast preset's BlazeFace and O-Net run on ONNX Runtime too (graphs cached by a first call)."""
    pair = [str(p) for p in PAIR]
    warm = _cli("verify", *pair, "--json", "--preset", "fast")
    assert warm.returncode == 0, warm.stderr
    fresh = _cli("verify", *pair, "--json", "--preset", "fast")
    assert fresh.returncode == 0, fresh.stderr
    assert "TORCH_LOADED False" in fresh.stderr and json.loads(fresh.stdout)["same"] is True


def test_default_runtime_on_the_cpu_is_onnx_runtime():
    from facespace import FacePipeline
    from facespace.runtime.onnx_backend import OnnxNetwork

    pipeline = FacePipeline()
    assert pipeline.embedder.backend == "onnx"
    assert all(isinstance(net, OnnxNetwork) for net in (pipeline.detector.pnet, pipeline.detector.rnet,
                                                         pipeline.detector.onet))
    assert "precision" not in pipeline.preprocessing  # the same embeddings as torch's: comparable
    assert FacePipeline(backend="torch").preprocessing == pipeline.preprocessing


def test_onnx_mtcnn_matches_torch_mtcnn_on_real_photos():
    images = [_rgb(p) for p in PHOTOS] + [_rgb(lfw_image(n, k)) for n, k in
                                            (("Serena_Williams", 1), ("George_W_Bush", 1), ("Colin_Powell", 2))]
    reference = MTCNN.pretrained(backend="torch").detect(images)
    found = MTCNN.pretrained(backend="onnx").detect(images)
    assert sum(len(d) for d in reference) >= 40
    for ref, got in zip(reference, found):
        assert len(got) == len(ref)
        np.testing.assert_allclose(got.boxes, ref.boxes, atol=1e-2)
        np.testing.assert_allclose(got.landmarks, ref.landmarks, atol=1e-2)
        np.testing.assert_allclose(got.scores, ref.scores, atol=1e-4)


def test_onnx_embeddings_match_torch_with_flip(pipeline):
    image = pipeline.load(lfw_image("Colin_Powell", 2))
    crops = np.stack([pipeline.crop(image, f) for f in pipeline.detect_arrays([image])[0]])
    for flip in (False, True):
        ours = Embedder(backend="onnx", flip=flip).embed_crops(crops)
        theirs = Embedder(backend="torch", flip=flip).embed_crops(crops)
        assert np.abs(ours - theirs).max() < 1e-4
        np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


@pytest.fixture()
def mtcnn_home(tmp_path, monkeypatch):
    """A FACESPACE_HOME holding copies of MTCNN's real weight files and nothing derived from them."""
    folder = tmp_path / "home" / "weights" / "mtcnn"
    folder.mkdir(parents=True)
    for path in weight_paths("mtcnn", kind="detector").values():
        shutil.copyfile(path, folder / path.name)
    monkeypatch.setenv("FACESPACE_HOME", str(tmp_path / "home"))
    return folder


def test_tampered_cached_graph_is_exported_again(mtcnn_home):
    from facespace.runtime.onnx_backend import load_onnx_mtcnn

    image = _rgb(DATA / "photos" / "dlib_faces" / "bald_guys.jpg")
    first = MTCNN(*load_onnx_mtcnn()).detect_one(image)
    graph = next(mtcnn_home.glob("onnx-opset*/rnet.onnx"))
    sources = json.loads(files.manifest_path(graph).read_text())["sources"]
    assert files.has_valid_manifest(graph, sources)
    genuine = graph.read_bytes()
    stat = graph.stat()
    # Same size, one weight byte changed, modification time put back: still caught (its status-change
    # time and so its stamp moved, so it is hashed again, and the hash differs).
    data = bytearray(genuine)
    data[len(data) // 2] ^= 0xFF
    with open(graph, "r+b") as handle:
        handle.write(bytes(data))
    os.utime(graph, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert graph.stat().st_size == stat.st_size
    assert not files.has_valid_manifest(graph, sources)
    again = MTCNN(*load_onnx_mtcnn()).detect_one(image)  # made again from the weights, not used
    assert graph.read_bytes() == genuine
    assert files.has_valid_manifest(graph, sources)
    np.testing.assert_allclose(again.boxes, first.boxes, atol=1e-4)


def test_unchanged_cache_is_hashed_once_then_trusted_by_its_stamp(tmp_path, monkeypatch):
    path = tmp_path / "graph.bin"
    path.write_bytes(os.urandom(4096))
    files.write_manifest(path, {"made": "from test"})
    record = json.loads(files.manifest_path(path).read_text())
    del record["stat"]  # a manifest written before stamps existed: hashed, then stamped
    files.manifest_path(path).write_text(json.dumps(record))
    hashed = []
    real = files.sha256_of
    monkeypatch.setattr(files, "sha256_of", lambda p: hashed.append(p) or real(p))
    assert files.has_valid_manifest(path, {"made": "from test"})
    assert len(hashed) == 1
    assert files.has_valid_manifest(path, {"made": "from test"})
    assert len(hashed) == 1  # the stamp vouches for the unchanged bytes
    assert not files.has_valid_manifest(path, {"made": "elsewhere"})
    path.write_bytes(os.urandom(4096))  # rewritten: a new stamp, hashed, refused
    assert not files.has_valid_manifest(path, {"made": "from test"})
    assert len(hashed) == 2


def test_serve_builds_its_pipeline_without_torch_on_one_thread():
    pytest.importorskip("fastapi")
    probe = ("import sys; from facespace.cli.main import build_parser; from facespace.cli.serve import app_from_args; "
             "app_from_args(build_parser().parse_args(['serve', '--port', '0'])); "
             "from facespace.runtime.threads import ort_threads; "
             "print('torch' in sys.modules, ort_threads())")
    env = {k: v for k, v in os.environ.items() if k != "FACESPACE_NUM_THREADS"}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "1"]  # no torch; ONNX Runtime on one thread per inference
