"""The REST service for real: uvicorn in a subprocess on a loopback port, driven with httpx,
and its web page in headless Chromium (skipped only when /usr/bin/chromium is absent)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import lfw_image, png_header_only

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

KEY = "s3cret-key"
CHROMIUM = Path("/usr/bin/chromium")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("server")
    port = _free_port()
    env = {**os.environ, "FACESPACE_TEST_KEY": KEY}
    log = open(tmp / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "facespace.cli.main", "serve", "--port", str(port), "--gallery", str(tmp / "g.db"),
         "--api-key-env", "FACESPACE_TEST_KEY", "--max-upload-mb", "1", "--max-megapixels", "4",
         "--demo", str(lfw_image("Aaron_Peirsol", 1)), str(lfw_image("Aaron_Peirsol", 2)),
         "--log-level", "warning"],
        stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited: {(tmp / 'server.log').read_text()[-2000:]}")
        try:
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("server did not start in 180 s")
    client = httpx.Client(base_url=base, headers={"X-API-Key": KEY}, timeout=120)
    yield base, client
    client.close()
    proc.terminate()
    proc.wait(timeout=20)
    log.close()


def jpg(name: str, number: int) -> tuple[str, bytes, str]:
    return (f"{name}_{number}.jpg", lfw_image(name, number).read_bytes(), "image/jpeg")


def expect_error(response, status: int, kind: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert body["status"] == status and body["message"]
    if kind:
        assert body["type"] == kind, body
    return body


def test_health_openapi_and_api_key(server):
    base, client = server
    assert httpx.get(base + "/health").json()["pipeline_loaded"] is True
    spec = httpx.get(base + "/openapi.json").json()
    for path in ["/api/detect", "/api/embed", "/api/verify", "/api/identify", "/api/identities",
                 "/api/identities/{name}", "/api/cluster"]:
        assert path in spec["paths"]
    expect_error(httpx.get(base + "/api/identities"), 401, "unauthorized")
    expect_error(httpx.get(base + "/api/identities", headers={"X-API-Key": "wrong"}), 401)
    ok = httpx.get(base + "/api/identities", headers={"Authorization": f"Bearer {KEY}"})
    assert ok.status_code == 200
    info = client.get("/api/info").json()
    assert info["model"] and info["limits"]["max_upload_bytes"] == 1024 * 1024


def test_detect_and_embed(server):
    _, client = server
    r = client.post("/api/detect", files={"image": jpg("Aaron_Peirsol", 1)})
    assert r.status_code == 200, r.text
    faces = r.json()["faces"]
    assert len(faces) >= 1 and len(faces[0]["box"]) == 4 and len(faces[0]["landmarks"]) == 5
    r = client.post("/api/embed", files={"image": jpg("Aaron_Peirsol", 1)}).json()
    v = np.array(r["faces"][0]["embedding"])
    assert abs(np.linalg.norm(v) - 1) < 1e-3 and r["preprocessing_id"]


def test_bad_uploads(server, bad_inputs):
    _, client = server
    for kind in ["empty", "text", "truncated"]:
        data = bad_inputs[kind].read_bytes()
        expect_error(client.post("/api/detect", files={"image": ("x.jpg", data, "image/jpeg")}), 400, "bad_image")
    expect_error(client.post("/api/detect", files={"image": ("bomb.png", png_header_only(20000, 20000))}), 413,
                 "image_too_large")
    expect_error(client.post("/api/detect", files={"image": ("big.jpg", b"\xff" * (1024 * 1024 + 10))}), 413,
                 "upload_too_large")
    expect_error(client.post("/api/detect", content=b"x" * (5 * 1024 * 1024),
                             headers={"Content-Type": "application/octet-stream"}), 413, "request_too_large")
    expect_error(client.post("/api/detect", files={"wrong_field": jpg("Aaron_Peirsol", 1)}), 422, "invalid_request")
    expect_error(client.post("/api/verify", files={"a": jpg("Aaron_Peirsol", 1)}), 422)
    blank = (np.zeros((60, 60, 3), np.uint8) + 127)
    from PIL import Image
    import io
    buf = io.BytesIO()
    Image.fromarray(blank).save(buf, format="PNG")
    expect_error(client.post("/api/verify", files={"a": jpg("Aaron_Peirsol", 1), "b": ("grey.png", buf.getvalue())}),
                 422, "no_face")
    expect_error(client.delete("/api/identities/nobody-at-all"), 404, "unknown_identity")
    expect_error(client.post("/api/cluster", files={"images": jpg("Aaron_Peirsol", 1)}, data={"method": "dbscan"}),
                 422)


def test_verify(server):
    _, client = server
    same = client.post("/api/verify", files={"a": jpg("Aaron_Peirsol", 1), "b": jpg("Aaron_Peirsol", 2)}).json()
    assert same["same"] is True and same["decision"] == "same" and 0 <= same["probability"] <= 1
    diff = client.post("/api/verify", files={"a": jpg("Aaron_Peirsol", 1), "b": jpg("Serena_Williams", 1)}).json()
    assert diff["same"] is False and diff["distance"] > same["distance"]


def test_enrol_identify_list_remove_cluster(server):
    _, client = server
    for name, numbers in [("Aaron Peirsol", (1, 2)), ("Serena Williams", (1, 2))]:
        files = [("images", jpg(name.replace(" ", "_"), n)) for n in numbers]
        r = client.post("/api/identities", data={"name": name}, files=files)
        assert r.status_code == 201, r.text
        assert r.json()["added"] == 2
    listed = client.get("/api/identities").json()["identities"]
    assert {i["name"]: i["embeddings"] for i in listed} == {"Aaron Peirsol": 2, "Serena Williams": 2}
    r = client.post("/api/identify", files={"image": jpg("Serena_Williams", 3)}, data={"top": "2"}).json()
    face = r["faces"][0]
    assert face["identity"] == "Serena Williams" and face["known"]
    assert [c["name"] for c in face["candidates"]] == ["Serena Williams", "Aaron Peirsol"]
    stranger = client.post("/api/identify", files={"image": jpg("Colin_Powell", 1)}).json()["faces"][0]
    assert stranger["identity"] == "unknown"
    assert client.delete("/api/identities/Aaron Peirsol").json() == {"removed": "Aaron Peirsol", "embeddings": 2}
    expect_error(client.delete("/api/identities/Aaron Peirsol"), 404)
    files = [("images", jpg(n, i)) for n in ("Aaron_Peirsol", "Serena_Williams") for i in (1, 3)]
    clusters = client.post("/api/cluster", files=files).json()["clusters"]
    groups = sorted(sorted(f["filename"] for f in c) for c in clusters)
    assert groups == [["Aaron_Peirsol_1.jpg", "Aaron_Peirsol_3.jpg"], ["Serena_Williams_1.jpg", "Serena_Williams_3.jpg"]]


def _chromium(tmp_path: Path, url: str, *extra: str) -> subprocess.CompletedProcess:
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
           f"--user-data-dir={tmp_path / 'chrome-profile'}", "--virtual-time-budget=60000",
           "--window-size=1000,800", *extra, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=150)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="headless web-page test needs /usr/bin/chromium "
                                                     "(Debian package `chromium`: apt-get install -y chromium)")
def test_page_in_headless_chromium(server, tmp_path):
    base, _ = server
    url = f"{base}/?demo=verify&key={KEY}"
    dom = _chromium(tmp_path, url, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    match = re.search(r'<div id="result"[^>]*data-status="(\w+)"[^>]*>([^<]*)</div>', dom.stdout)
    assert match, dom.stdout[-3000:]
    assert match.group(1) == "done", match.group(2)
    assert match.group(2).startswith("Same person")
    shot = tmp_path / "page.png"
    r = _chromium(tmp_path, url, f"--screenshot={shot}")
    assert shot.is_file(), r.stderr[-2000:]
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    green = (pixels[..., 1] > 230) & (pixels[..., 0] < 40) & (pixels[..., 2] < 40)
    assert green.sum() > 400  # the two face boxes, 4 px wide lines in #00ff00
    rows = np.flatnonzero(green.any(axis=1))
    cols = np.flatnonzero(green.any(axis=0))
    assert cols.max() - cols.min() > 200  # boxes drawn on both photos, side by side
    assert rows.max() - rows.min() > 40
