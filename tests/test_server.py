"""The REST service for real: uvicorn in a subprocess on a loopback port, driven with httpx,
and its web page in headless Chromium (skipped only when /usr/bin/chromium is absent), driven
over the DevTools protocol on a pipe (no package needed)."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

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


@contextmanager
def running_server(tmp: Path, *args: str, env: dict | None = None, port: int | None = None,
                   log_level: str = "info") -> Iterator[tuple[str, subprocess.Popen, Path]]:
    """``facespace serve ARGS`` on a loopback port; yields (base URL, the process, its log file)."""
    port = port or _free_port()
    log_path = tmp / f"server-{port}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "facespace.cli.main", "serve", "--port", str(port), *args,
                                 "--log-level", log_level],
                                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_healthy(base, proc, log_path)
            yield base, proc, log_path
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def _wait_healthy(base: str, proc: subprocess.Popen, log_path: Path, seconds: float = 180) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited: {log_path.read_text()[-2000:]}")
        try:
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    pytest.fail(f"server did not start in {seconds:g} s")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The keyed server with a gallery and demo images: (base URL, client with the key, log file)."""
    tmp = tmp_path_factory.mktemp("server")
    args = ["--gallery", str(tmp / "g.db"), "--api-key-env", "FACESPACE_TEST_KEY", "--max-upload-mb", "1",
            "--max-megapixels", "4", "--demo", str(lfw_image("Aaron_Peirsol", 1)), str(lfw_image("Aaron_Peirsol", 2))]
    with running_server(tmp, *args, env={"FACESPACE_TEST_KEY": KEY}) as (base, _, log_path):
        with httpx.Client(base_url=base, headers={"X-API-Key": KEY}, timeout=120) as client:
            yield base, client, log_path


@pytest.fixture(scope="module")
def server(served):
    return served[:2]


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


def test_demo_images_and_keys_only_from_headers(server):
    base, client = server
    expect_error(httpx.get(base + "/demo/0"), 401, "unauthorized")  # a stored photo: not for anyone
    expect_error(httpx.get(base + f"/demo/0?key={KEY}"), 401, "unauthorized")  # never from the URL
    expect_error(httpx.get(base + f"/api/identities?key={KEY}"), 401, "unauthorized")
    expect_error(httpx.get(base + f"/api/identities?api_key={KEY}"), 401, "unauthorized")
    photo = client.get("/demo/0")
    assert photo.status_code == 200 and photo.headers["content-type"] == "image/jpeg"
    assert photo.content == lfw_image("Aaron_Peirsol", 1).read_bytes()
    assert httpx.get(base + "/demo/1", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    page = httpx.get(base + "/").text  # the page and its script need no key, and never read one from the URL
    script = httpx.get(base + "/static/app.js").text
    assert '<script src="/static/app.js">' in page and "sessionStorage" in script
    assert 'fetchBlob("/demo/0")' in script and "const init = {method, headers: headers()}" in script
    assert 'params.get("key")' not in script + page and "key=" not in script + page


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


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (fds 3 and 4 of the browser)."""

    def __init__(self, profile: Path) -> None:
        commands, self._to_browser = os.pipe()
        self._from_browser, replies = os.pipe()

        def wire() -> None:  # in the child: its fd 3 reads our commands, its fd 4 writes its replies
            a, b = os.dup(commands), os.dup(replies)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
             f"--user-data-dir={profile}", "--remote-debugging-pipe", "--window-size=1000,800", "about:blank"],
            preexec_fn=wire, pass_fds=(3, 4), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(commands)
        os.close(replies)
        self._buffer, self._id, self._session = b"", 0, None
        targets = self.call("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self._session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
        self.call("Emulation.setDeviceMetricsOverride", width=1000, height=800, deviceScaleFactor=1, mobile=False)

    def call(self, method: str, **params) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if self._session:
            message["sessionId"] = self._session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._from_browser, 1 << 16)
                assert chunk, "chromium closed the DevTools pipe"
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                assert "error" not in reply, reply["error"]
                return reply["result"]

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def wait_for(self, expression: str, seconds: float = 90):
        """The value of ``expression`` once it is truthy."""
        deadline = time.time() + seconds
        while time.time() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"waited {seconds:g} s for {expression}")

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        self.wait_for(f"location.href === {json.dumps(url)} && document.readyState === 'complete'")

    def close(self) -> None:
        os.close(self._to_browser)
        os.close(self._from_browser)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.mark.skipif(not CHROMIUM.exists(), reason="headless web-page test needs /usr/bin/chromium "
                                                     "(Debian package `chromium`: apt-get install -y chromium)")
def test_page_in_headless_chromium(served, tmp_path):
    """The key typed once into the page stays in the tab; the demo photos and the verify call carry it
    in the header, and it never shows in a URL (the access log)."""
    base, _, log_path = served
    log_start = log_path.stat().st_size  # other tests send ?key= on purpose, to see it refused
    browser = Browser(tmp_path / "chrome-profile")
    try:
        browser.open(base + "/")
        browser.evaluate(f"const k = document.getElementById('key'); k.value = {json.dumps(KEY)}; "
                         "k.dispatchEvent(new Event('input'));")
        browser.open(base + "/?demo=verify")
        status, text = browser.wait_for("(() => { const r = document.getElementById('result'); "
                                        "return ['done', 'error'].includes(r.dataset.status) && "
                                        "[r.dataset.status, r.textContent]; })()")
        assert status == "done", text
        assert text.startswith("Same person")
        shot = base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
    finally:
        browser.close()
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(shot)).convert("RGB")).astype(int)
    green = (pixels[..., 1] > 230) & (pixels[..., 0] < 40) & (pixels[..., 2] < 40)
    assert green.sum() > 400  # the two face boxes, 4 px wide lines in #00ff00
    rows = np.flatnonzero(green.any(axis=1))
    cols = np.flatnonzero(green.any(axis=0))
    assert cols.max() - cols.min() > 200  # boxes drawn on both photos, side by side
    assert rows.max() - rows.min() > 40
    with open(log_path) as log_file:
        log_file.seek(log_start)
        log = log_file.read()
    assert "GET /demo/0" in log and "POST /api/verify" in log  # the access log is on, and shows no key
    assert KEY not in log
