"""The whole pipeline with real weights and real LFW photos, through the API and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from facespace import FacePipeline
from facespace.errors import ImageLoadError, ImageTooLargeError, NoFaceError

from conftest import PHOTOS, lfw_image

CLI = [sys.executable, "-m", "facespace.cli.main"]

SAME = (lfw_image("Aaron_Peirsol", 1), lfw_image("Aaron_Peirsol", 2))
DIFFERENT = (lfw_image("Aaron_Peirsol", 1), lfw_image("Serena_Williams", 1))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=300)


def test_verify_same_and_different(pipeline):
    same = pipeline.verify(*SAME)
    different = pipeline.verify(*DIFFERENT)
    assert same.same and not different.same
    assert same.distance < pipeline.threshold < different.distance
    assert same.threshold == pipeline.embedder.config.threshold


def test_embeddings_are_unit_vectors_for_every_face(pipeline):
    faces = pipeline.embed(PHOTOS / "face_recognition_examples" / "examples" / "two_people.jpg")
    assert len(faces) == 2
    for face in faces:
        assert face.embedding.shape == (128,) and face.embedding.dtype == np.float32
        assert abs(np.linalg.norm(face.embedding) - 1) < 1e-5


def test_batch_reports_bad_items_and_goes_on(pipeline, bad_inputs):
    inputs = [SAME[0], bad_inputs["truncated"], bad_inputs["missing"], SAME[1]]
    results = pipeline.embed_images(inputs)
    assert [r.ok for r in results] == [True, False, False, True]
    assert "truncated" in results[1].error and "no such file" in results[2].error
    alone = pipeline.embed_images([SAME[1]])[0]
    assert np.allclose(results[3].faces[0].embedding, alone.faces[0].embedding, atol=1e-5)


def test_stream_across_chunks_keeps_order_and_errors(pipeline, bad_inputs):
    """Loading runs a chunk ahead in a thread: order, errors and laziness are kept."""
    inputs = [SAME[0], bad_inputs["missing"], SAME[1], DIFFERENT[1], bad_inputs["truncated"]]
    pulled = []

    def lazily():
        for item in inputs:
            pulled.append(item)
            yield item

    stream = pipeline.iter_embed_images(lazily(), chunk=2)
    first = next(stream)
    assert first.ok and len(pulled) <= 4  # at most the current and the next chunk were read
    rest = list(stream)
    assert [r.ok for r in [first, *rest]] == [True, False, True, True, False]
    assert [r.source for r in [first, *rest]] == [str(p) for p in inputs]
    whole = pipeline.embed_images(inputs, chunk=16)
    assert np.allclose(rest[2].faces[0].embedding, whole[3].faces[0].embedding, atol=1e-5)
    with pytest.raises(ImageLoadError):
        list(pipeline.iter_embed_images(inputs, chunk=2, on_error="raise"))
    with pytest.raises(ValueError, match="chunk"):
        list(pipeline.iter_embed_images(inputs, chunk=0))


def test_api_raises_specific_errors(pipeline, bad_inputs):
    with pytest.raises(ImageLoadError):
        pipeline.embed(bad_inputs["text"])
    with pytest.raises(ImageTooLargeError):
        pipeline.detect(bad_inputs["bomb"])
    sky = np.tile(np.linspace(90, 200, 320, dtype=np.uint8)[:, None, None], (1, 480, 3))
    with pytest.raises(NoFaceError, match="no face"):
        pipeline.embed_largest(sky)


def test_cli_verify_says_same_and_different():
    same = run_cli("verify", *SAME)
    assert same.returncode == 0 and same.stdout.startswith("same:"), same.stderr
    different = run_cli("verify", *DIFFERENT, "--json")
    assert different.returncode == 0, different.stderr
    verdict = json.loads(different.stdout)
    assert verdict["decision"] == "different" and verdict["distance"] > verdict["threshold"]


def test_cli_detect_json_and_draw(tmp_path):
    photo = PHOTOS / "face_recognition_examples" / "examples" / "two_people.jpg"
    proc = run_cli("detect", photo, "--json", "--draw", tmp_path)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert len(record["faces"]) == 2 and len(record["faces"][0]["landmarks"]) == 5
    assert (tmp_path / "two_people_faces.jpg").stat().st_size > 0


def test_cli_embed_records_model_and_preprocessing(tmp_path, bad_inputs):
    out = tmp_path / "faces.jsonl"
    proc = run_cli("embed", SAME[0], bad_inputs["empty"], SAME[1], "--out", out)
    assert proc.returncode == 1  # one bad input: reported, the rest written
    assert "empty file" in proc.stderr and "Traceback" not in proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 and rows[0]["model"] == "facenet-msceleb-128"
    registered = FacePipeline().align  # the registry's crop for the default model
    assert rows[0]["preprocessing"]["align"] == registered and len(rows[0]["embedding"]) == 128
    npz = tmp_path / "faces.npz"
    assert run_cli("embed", SAME[0], "--out", npz).returncode == 0
    stored = np.load(npz)
    assert stored["embeddings"].shape == (1, 128)
    assert json.loads(str(stored["metadata"]))["model"] == "facenet-msceleb-128"
    assert np.allclose(stored["embeddings"][0], rows[0]["embedding"], atol=1e-6)


@pytest.mark.parametrize("kind,message", [
    ("missing", "no such file"), ("empty", "empty file"), ("text", "not an image"),
    ("truncated", "truncated"), ("bomb", "over the limit"),
])
def test_cli_bad_inputs_exit_nonzero_with_one_line(bad_inputs, kind, message):
    proc = run_cli("detect", bad_inputs[kind])
    assert proc.returncode == 1
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_cli_no_face_and_bad_arguments(tmp_path):
    sky = tmp_path / "sky.png"
    Image.fromarray(np.tile(np.linspace(90, 200, 320, dtype=np.uint8)[:, None, None], (1, 480, 3))).save(sky)
    proc = run_cli("verify", sky, SAME[0])
    assert proc.returncode == 1 and "no face found" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("verify", *SAME, "--model", "nope")
    assert proc.returncode == 1 and "unknown model 'nope'" in proc.stderr
    proc = run_cli("embed", SAME[0], "--out", "x.npz", "--engine", "ray")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    proc = run_cli("detect", SAME[0], "--min-face-size", "-3")
    assert proc.returncode == 2 and "must be positive" in proc.stderr
