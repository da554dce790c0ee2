"""Faces batched across images and across requests give the embeddings they get alone; the
server's gathering embedder answers every concurrent caller with its own rows, and a bad caller
fails alone."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from conftest import lfw_image
from test_server import running_server

PEOPLE = [("Aaron_Peirsol", 1), ("Aaron_Peirsol", 2), ("Serena_Williams", 1), ("Serena_Williams", 2),
          ("Tony_Blair", 1), ("George_W_Bush", 1)]


@pytest.fixture(scope="module")
def crops(pipeline) -> list[np.ndarray]:
    """Each image's face crops (every face found), real LFW photos."""
    out = []
    for name, number in PEOPLE:
        image = pipeline.load(lfw_image(name, number))
        out.append(np.stack([pipeline.crop(image, f) for f in pipeline.detect_arrays([image])[0]]))
    return out


def test_embed_images_batches_across_images_as_one_by_one(pipeline):
    paths = [lfw_image(n, k) for n, k in PEOPLE]
    together = pipeline.embed_images(paths, chunk=16)
    for path, result in zip(paths, together):
        alone = pipeline.embed_images([path], chunk=1)[0]
        assert len(result.faces) == len(alone.faces) > 0
        for a, b in zip(result.faces, alone.faces):
            np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-5)
            np.testing.assert_array_equal(a.face.box, b.face.box)


def test_gathering_embedder_batches_concurrent_callers(pipeline, crops):
    from facespace.server.batching import GatheringEmbedder

    gathering = GatheringEmbedder(pipeline.embedder, window=0.5)
    alone = [pipeline.embedder.embed_crops(c) for c in crops]
    start = threading.Barrier(len(crops))

    def call(c):
        start.wait()
        return gathering.embed_crops(c)
    with ThreadPoolExecutor(len(crops)) as pool:
        got = list(pool.map(call, crops))
    for g, a in zip(got, alone):
        assert g.shape == a.shape
        np.testing.assert_allclose(g, a, atol=1e-5)
    # Six callers arriving together within a 0.5 s window: far fewer network calls than callers.
    assert gathering.batches < len(crops)


def test_gathering_embedder_bad_caller_fails_alone(pipeline, crops):
    from facespace.server.batching import GatheringEmbedder

    gathering = GatheringEmbedder(pipeline.embedder, window=0.3)
    bad = np.zeros((1, 100, 100, 3), np.uint8)
    start = threading.Barrier(3)

    def call(c):
        start.wait()
        try:
            return gathering.embed_crops(c)
        except ValueError as exc:
            return exc
    with ThreadPoolExecutor(3) as pool:
        first, broken, second = pool.map(call, [crops[0], bad, crops[2]])
    assert isinstance(broken, ValueError) and "crops must be" in str(broken)
    np.testing.assert_allclose(first, pipeline.embedder.embed_crops(crops[0]), atol=1e-5)
    np.testing.assert_allclose(second, pipeline.embedder.embed_crops(crops[2]), atol=1e-5)
    with pytest.raises(ValueError, match="window"):
        GatheringEmbedder(pipeline.embedder, window=-1)


def test_server_with_batching_answers_concurrent_requests_right(tmp_path, pipeline):
    httpx = pytest.importorskip("httpx")
    pairs = [(("Aaron_Peirsol", 1), ("Aaron_Peirsol", 2), True), (("Serena_Williams", 1), ("Serena_Williams", 2), True),
             (("Aaron_Peirsol", 1), ("Serena_Williams", 1), False), (("Tony_Blair", 1), ("George_W_Bush", 1), False)] * 2
    expected = [pipeline.verify(lfw_image(*a), lfw_image(*b)).distance for a, b, _ in pairs]
    with running_server(tmp_path, "--inference-threads", "4", "--batch-window-ms", "20") as (base, _, _):
        def ask(pair):
            (a, b, _) = pair
            files = {"a": (f"{a[0]}.jpg", lfw_image(*a).read_bytes(), "image/jpeg"),
                     "b": (f"{b[0]}.jpg", lfw_image(*b).read_bytes(), "image/jpeg")}
            return httpx.post(base + "/api/verify", files=files, timeout=120).json()
        with ThreadPoolExecutor(len(pairs)) as pool:
            answers = list(pool.map(ask, pairs))
    for (_, _, same), answer, distance in zip(pairs, answers, expected):
        assert answer["same"] is same
        assert answer["distance"] == pytest.approx(distance, abs=1e-4)


def test_serve_refuses_a_bad_batch_window():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "facespace.cli.main", "serve", "--batch-window-ms", "-5"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--batch-window-ms must lie in [0, 1000]" in done.stderr
    assert "Traceback" not in done.stderr
