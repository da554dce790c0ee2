"""The web app (`facespace serve`'s page) driven in headless Chromium along a user's path: enrol two
people from photos, rename and remove, identify a group photo, verify, cluster an album (uploaded and
from the server's albums folder) and name a cluster, see attendance events arrive; at phone width and
by keyboard. The new endpoints' key, upload-limit, path and cross-origin rules are checked over HTTP.

Chromium is Debian's /usr/bin/chromium over the DevTools pipe (``test_server.Browser``): nothing is
downloaded. Set ``FACESPACE_WEBAPP_SHOTS=DIR`` to keep the screenshots (the README's come from there).
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import PHOTOS, lfw_image
from test_server import CHROMIUM, KEY, Browser, expect_error, running_server

httpx = pytest.importorskip("httpx")

KNN = PHOTOS / "face_recognition_examples" / "examples" / "knn_examples"
OBAMA = sorted((KNN / "train" / "obama").iterdir())
BIDEN = sorted((KNN / "train" / "biden").iterdir())
GROUP = KNN / "test" / "obama_and_biden.jpg"
ALBUM_PEOPLE = ("Colin_Powell", "Serena_Williams", "Tony_Blair")
EVIL = "http://evil.example"

needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason="the web app tests need /usr/bin/chromium "
                                    "(Debian package `chromium`: apt-get install -y chromium)")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The server (key, gallery, albums root, attendance log) and an httpx client with the key."""
    from facespace.attendance.log import AttendanceLog

    tmp = tmp_path_factory.mktemp("webapp")
    root = tmp / "albums"
    (root / "trip").mkdir(parents=True)
    for name in ALBUM_PEOPLE:
        for number in (1, 2, 3):
            shutil.copy(lfw_image(name, number), root / "trip" / f"{name}_{number}.jpg")
    (root / "big").mkdir()
    (root / "big" / "huge.jpg").write_bytes(b"\xff\xd8" + os.urandom(1024 * 1024 + 100))
    (root / "trip" / "elsewhere").symlink_to(PHOTOS, target_is_directory=True)  # a link out of the root
    AttendanceLog(tmp / "attendance.db").close()
    args = ["--gallery", str(tmp / "people.db"), "--albums-root", str(root), "--attendance", str(tmp / "attendance.db"),
            "--api-key-env", "FACESPACE_TEST_KEY", "--max-upload-mb", "1"]
    with running_server(tmp, *args, env={"FACESPACE_TEST_KEY": KEY}) as (base, _, _log):
        with httpx.Client(base_url=base, headers={"X-API-Key": KEY}, timeout=120) as client:
            yield base, client, tmp


class App(Browser):
    """The DevTools driver with what a user does: type, pick files, click, look."""

    def __init__(self, profile: Path, base: str) -> None:
        super().__init__(profile)
        self.base = base

    def evaluate(self, expression: str):
        """The value of ``expression``, a promise's once it settles."""
        reply = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in reply, reply["exceptionDetails"]
        return reply["result"].get("value")

    def size(self, width: int, height: int = 800, mobile: bool = False) -> None:
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=mobile)

    def q(self, selector: str) -> str:
        return f"document.querySelector({json.dumps(selector)})"

    def fill(self, selector: str, value: str) -> None:
        self.evaluate(f"(() => {{ const e = {self.q(selector)}; e.value = {json.dumps(value)}; "
                      "e.dispatchEvent(new Event('input')); e.dispatchEvent(new Event('change')); })()")

    def files(self, selector: str, paths) -> None:
        node = self.call("Runtime.evaluate", expression=self.q(selector))["result"]["objectId"]
        self.call("DOM.setFileInputFiles", files=[str(p) for p in paths], objectId=node)

    def click(self, selector: str) -> None:
        clicked = f"(() => {{ const e = {self.q(selector)}; if (!e) return false; e.click(); return true; }})()"
        assert self.evaluate(clicked), selector

    def go(self, page: str) -> None:
        self.evaluate(f"location.hash = {json.dumps(page)}")
        self.wait_for(f"!document.getElementById('page-{page}').hidden")

    def text(self, selector: str) -> str:
        return self.evaluate(f"{self.q(selector)}.textContent")

    def until_text(self, selector: str, start: str, seconds: float = 90) -> str:
        """The element's text once it starts with ``start``; fails at once on an error shown there."""
        found = self.wait_for(f"(() => {{ const e = {self.q(selector)}; const t = e ? e.textContent : ''; "
                              f"return (t.startsWith({json.dumps(start)}) || t.startsWith('Error')) && t; }})()",
                              seconds)
        assert found.startswith(start), found
        return found

    def key(self, key: str, code: str, keycode: int) -> None:
        for kind in ("keyDown", "keyUp"):
            self.call("Input.dispatchKeyEvent", type=kind, key=key, code=code, windowsVirtualKeyCode=keycode)

    def shot(self, selector: str, name: str | None = None) -> np.ndarray:
        """A screenshot of the element (kept under $FACESPACE_WEBAPP_SHOTS as NAME.png if set)."""
        rect = self.evaluate(f"(() => {{ const r = {self.q(selector)}.getBoundingClientRect(); "
                             "return {x: r.left + scrollX, y: r.top + scrollY, width: r.width, height: r.height}; })()")
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True, clip={**rect, "scale": 1})
        png = base64.b64decode(data["data"])
        if name and os.environ.get("FACESPACE_WEBAPP_SHOTS"):
            out = Path(os.environ["FACESPACE_WEBAPP_SHOTS"])
            out.mkdir(parents=True, exist_ok=True)
            Image.open(io.BytesIO(png)).convert("P", palette=Image.ADAPTIVE, colors=128).save(out / f"{name}.png",
                                                                                             optimize=True)
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


@pytest.fixture(scope="module")
def app(site, tmp_path_factory):
    base = site[0]
    browser = App(tmp_path_factory.mktemp("chrome") / "profile", base)
    try:
        browser.open(base + "/")
        browser.fill("#key", KEY)  # typed once: the tab keeps it
        yield browser
    finally:
        browser.close()


def not_blank(pixels: np.ndarray, width: tuple[int, int], height: tuple[int, int]) -> None:
    h, w = pixels.shape[:2]
    assert width[0] <= w <= width[1] and height[0] <= h <= height[1], (w, h)
    assert pixels.std() > 20  # pictures and text, not an empty box


def enrol_by_api(client, name: str, photos) -> None:
    r = client.post("/api/identities", data={"name": name},
                    files=[("images", (p.name, p.read_bytes(), "image/jpeg")) for p in photos])
    assert r.status_code == 201, r.text


def test_new_endpoints_need_the_key_keep_the_limits_and_refuse_other_origins(site):
    base, client, _ = site
    photo = ("a.jpg", lfw_image("Colin_Powell", 1).read_bytes(), "image/jpeg")
    calls = [("GET", "/api/people", {}), ("GET", "/api/people/x/thumbnail", {}),
             ("PATCH", "/api/identities/x", {"json": {"name": "y"}}), ("GET", "/api/albums/folders", {}),
             ("POST", "/api/albums", {"files": {"images": photo}}), ("POST", "/api/albums/folder", {"json": {}}),
             ("GET", "/api/albums/0/faces/0", {}), ("POST", "/api/albums/0/clusters/0/enrol", {"json": {"name": "y"}}),
             ("GET", "/api/attendance", {}), ("GET", "/api/attendance.csv", {}), ("GET", "/api/attendance/tracks", {}),
             ("GET", "/api/attendance/tracks/1/thumbnail", {}),
             ("POST", "/api/attendance/tracks/1/enrol", {"json": {"name": "y"}})]
    for method, path, extra in calls:
        expect_error(httpx.request(method, base + path, **extra), 401, "unauthorized")
        if method != "GET":
            refused = client.request(method, path, headers={"Origin": EVIL}, **extra)
            expect_error(refused, 403, "bad_origin")
    expect_error(client.get("/api/people", headers={"Host": "faces.evil.example"}), 400, "bad_host")
    assert httpx.get(base + "/static/app.js").status_code == 200  # the app's code is no secret
    expect_error(httpx.get(base + "/static/page.py"), 404)
    big = ("big.jpg", b"\xff\xd8" + b"\0" * (1024 * 1024 + 10), "image/jpeg")
    expect_error(client.post("/api/albums", files={"images": big}), 413, "upload_too_large")
    expect_error(client.post("/api/albums/folder", json={"folder": "big"}), 413, "upload_too_large")
    for folder, status in [("..", 400), ("trip/../..", 400), ("/etc", 400), ("trip/elsewhere", 403), ("nope", 404)]:
        expect_error(client.post("/api/albums/folder", json={"folder": folder}), status)
    assert client.get("/api/albums/folders").json()["folders"] == [{"folder": "big", "images": 1},
                                                                    {"folder": "trip", "images": 9}]
    expect_error(client.get("/api/albums/nothing/faces/0"), 404, "unknown_album")
    enrol_by_api(client, "AC/DC", [lfw_image("Tony_Blair", 8)])  # a name with a slash, in the routes' paths
    listed = {p["name"]: p for p in client.get("/api/people").json()["people"]}
    assert listed["AC/DC"]["thumbnail_url"] == "/api/people/AC%2FDC/thumbnail"
    assert client.get(listed["AC/DC"]["thumbnail_url"]).headers["content-type"] == "image/jpeg"
    assert client.patch("/api/identities/AC%2FDC", json={"name": "ACDC"}).json() == {"renamed": "AC/DC", "name": "ACDC"}
    expect_error(client.get("/api/people/AC%2FDC/thumbnail"), 404, "unknown_identity")
    assert client.delete("/api/identities/ACDC").status_code == 200
    expect_error(client.patch("/api/identities/nobody", json={"name": "x"}), 404, "unknown_identity")


def test_serve_refuses_an_albums_root_that_is_no_folder(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "facespace.cli.main", "serve", "--albums-root", str(tmp_path / "no")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--albums-root" in proc.stderr and "not a folder" in proc.stderr
    assert "Traceback" not in proc.stderr


@needs_chromium
def test_people_enrol_two_rename_and_remove(app, site):
    client = site[1]
    app.go("people")
    for name, photos in [("Barack Obama", OBAMA), ("Biden", BIDEN), ("Someone Else", [lfw_image("Tony_Blair", 5)])]:
        app.fill("#enrol-name", name)
        app.files("#enrol-files", photos)
        app.click("#enrol-form button[type=submit]")
        assert f"Enrolled {name}: {len(photos)} photo" in app.until_text("#people-status", f"Enrolled {name}")
    app.wait_for("document.querySelectorAll('#people-list img').length === 3 && "
                 "[...document.querySelectorAll('#people-list img')].every((i) => i.naturalWidth === 96)")
    # rename: the form opens on the card, Enter saves
    app.click("li[data-name='Biden'] button[aria-label='Rename Biden']")
    app.fill("li[data-name='Biden'] input", "Joe Biden")
    app.click("li[data-name='Biden'] form button[type=submit]")
    app.until_text("#people-status", "Renamed Biden to Joe Biden")
    # remove asks first: Cancel keeps, Remove removes
    app.click("button[aria-label='Remove Someone Else']")
    app.wait_for("document.getElementById('confirm').open")
    assert "Someone Else and 1 photo" in app.text("#confirm-text")
    app.click("#confirm button[value=cancel]")
    app.wait_for("!document.getElementById('confirm').open")
    assert app.evaluate("!!document.querySelector(\"li[data-name='Someone Else']\")")
    app.click("button[aria-label='Remove Someone Else']")
    app.wait_for("document.getElementById('confirm').open")
    app.click("#confirm button[value=ok]")
    app.until_text("#people-status", "Removed Someone Else")
    shown = app.evaluate("[...document.querySelectorAll('#people-list li')].map((li) => "
                         "[li.dataset.name, li.dataset.count])")
    assert shown == [["Barack Obama", "2"], ["Joe Biden", "2"]]
    listed = {p["name"]: p for p in client.get("/api/people").json()["people"]}
    assert set(listed) == {"Barack Obama", "Joe Biden"} and listed["Joe Biden"]["thumbnail_url"]
    thumb = client.get(listed["Joe Biden"]["thumbnail_url"])  # renamed with the identity
    assert thumb.headers["content-type"] == "image/jpeg" and Image.open(io.BytesIO(thumb.content)).size == (96, 96)
    not_blank(app.shot("#people-list"), (300, 1000), (70, 300))


@needs_chromium
def test_identify_a_group_photo_with_boxes(app, site):
    client = site[1]
    enrol_by_api(client, "Barack Obama", OBAMA)  # already there when the People test ran: kept once
    enrol_by_api(client, "Joe Biden", BIDEN)
    app.go("identify")
    app.files("#fileI", [GROUP])
    app.click("#identify")
    app.until_text("#identify-status", "Found")
    names = app.evaluate("document.getElementById('identify-status').dataset.names").split(",")
    assert sorted(names) == ["Barack Obama", "Joe Biden", "unknown"]  # and a girl at the right, not enrolled
    lines = app.evaluate("[...document.querySelectorAll('#identify-faces li')].map((li) => li.textContent)")
    assert len(lines) == 3 and all("detector score" in line and "candidates" in line for line in lines)
    pixels = app.shot("#canvasI", "webapp-identify")
    not_blank(pixels, (400, 470), (300, 470))
    green = (pixels[..., 1] > 230) & (pixels[..., 0] < 40) & (pixels[..., 2] < 40)
    columns = np.flatnonzero(green.any(axis=0))
    assert green.sum() > 400 and columns.max() - columns.min() > 100  # two known faces' boxes, apart
    red = (pixels[..., 0] > 230) & (pixels[..., 1] < 60) & (pixels[..., 2] > 40) & (pixels[..., 2] < 110)
    assert red.sum() > 100 and np.nonzero(red)[1].mean() > np.nonzero(green)[1].mean() + 100  # the unknown, right


@needs_chromium
def test_verify_shows_the_decision(app):
    app.go("verify")
    app.files("#fileA", [OBAMA[0]])
    app.files("#fileB", [KNN / "test" / "obama1.jpg"])
    app.click("#verify")
    assert app.until_text("#result", "Same person").startswith("Same person (distance ")
    lines = app.evaluate("[...document.querySelectorAll('#verify-faces li')].map((li) => li.textContent)")
    assert [line[:3] for line in lines] == ["A: ", "B: "] and all("; chosen: detector score" in x for x in lines)


@needs_chromium
def test_albums_cluster_and_name_a_group(app, site):
    client = site[1]
    app.go("albums")
    app.wait_for("document.getElementById('album-folders').options.length === 2")
    app.fill("#album-folders", "trip")
    app.click("#album-folder button[type=submit]")
    assert app.until_text("#albums-status", "9 faces in").startswith("9 faces in 3 groups")
    app.wait_for("[...document.querySelectorAll('#clusters img')].filter((i) => i.naturalWidth === 96).length === 9")
    groups = app.evaluate("[...document.querySelectorAll('#clusters .cluster')].map((c) => [...c.querySelectorAll("
                          "'img')].map((i) => i.alt.split('/').pop().replace(/_\\d\\.jpg$/, '')))")
    assert sorted(sorted(g) for g in groups) == [[n] * 3 for n in ALBUM_PEOPLE]
    powell = next(i for i, g in enumerate(groups) if g[0] == "Colin_Powell")
    app.fill(f".cluster[data-cluster='{powell}'] input", "Colin Powell")
    app.click(f".cluster[data-cluster='{powell}'] button[type=submit]")
    done = app.until_text(f".cluster[data-cluster='{powell}'] .status", "Enrolled")
    assert done == "Enrolled as Colin Powell: 3 faces added."
    not_blank(app.shot("#clusters", "webapp-albums"), (300, 1100), (200, 900))
    people = {p["name"]: p for p in client.get("/api/people").json()["people"]}
    assert people["Colin Powell"]["embeddings"] == 3 and people["Colin Powell"]["thumbnail_url"]
    # the same from uploaded photos: four files, two people
    app.files("#album-files", [lfw_image(name, n) for name in ("Serena_Williams", "Tony_Blair") for n in (4, 5)])
    app.click("#album-upload button[type=submit]")
    assert app.until_text("#albums-status", "4 faces in").startswith("4 faces in 2 groups")


@needs_chromium
def test_attendance_events_live_and_csv(app, site):
    from facespace.attendance.log import AttendanceLog

    client, tmp = site[1], site[2]
    now = time.time()
    with AttendanceLog(tmp / "attendance.db", mode="write") as log:
        run = log.start_run("door.mp4", now - 120)
        log.record_sighting("Barack Obama", now - 100, now - 90, 300, None, "door.mp4", run)
        app.go("attendance")
        assert app.until_text("#attendance-status", "1 event") == "1 event"
        log.record_sighting("Joe Biden", now - 5, now, 300, None, "door.mp4", run)  # while the page is open
        app.until_text("#attendance-status", "2 events", seconds=15)
        csv_text = log.to_csv()
    rows = app.evaluate("[...document.querySelectorAll('#attendance-table tbody tr')].map((tr) => "
                        "[...tr.cells].map((c) => c.textContent))")
    assert [r[0] for r in rows] == ["Joe Biden", "Barack Obama"] and all(r[3] == "door.mp4" for r in rows)
    assert rows[0][1] and rows[0][1] != "-"
    app.fill("#att-person", "Joe Biden")
    app.click("#attendance-filter button[type=submit]")
    app.until_text("#attendance-status", "1 event")
    assert app.evaluate("document.querySelector('#attendance-table tbody tr td').textContent") == "Joe Biden"
    app.fill("#att-person", "")
    app.click("#attendance-filter button[type=submit]")
    app.until_text("#attendance-status", "2 events")
    not_blank(app.shot("#page-attendance", "webapp-attendance"), (300, 1100), (150, 800))
    served = app.evaluate("fetchBlob('/api/attendance.csv').then((b) => b.text())")  # what the button downloads
    assert served == csv_text == client.get("/api/attendance.csv").text


@needs_chromium
def test_enrol_an_unknown_attendance_track(app, site):
    """A stranger the camera saw (an anonymous track: real embedding, face thumbnail) named on the People page."""
    from facespace.attendance.log import AttendanceLog
    from facespace.thumbnails import thumbnail_jpeg

    client, tmp = site[1], site[2]
    photo = lfw_image("Tony_Blair", 6)
    info = client.get("/api/info").json()
    face = client.post("/api/embed", files={"image": (photo.name, photo.read_bytes(), "image/jpeg")}).json()["faces"][0]
    now = time.time()
    with AttendanceLog(tmp / "attendance.db", mode="write") as log:
        run = log.start_run("door.mp4", now - 60)
        track = log.add_track(run, "door.mp4", now - 50, now - 40, 12, None, np.array([face["embedding"]]),
                              info["model"], info["preprocessing_id"], thumbnail_jpeg(Image.open(photo), face["box"]))
    app.go("people")
    app.wait_for(f"document.querySelector(\"li[data-track='{track}'] img\")?.naturalWidth === 96")
    assert "12 frames" in app.text(f"li[data-track='{track}']")
    app.fill(f"li[data-track='{track}'] input", "Tony Blair")
    app.click(f"li[data-track='{track}'] button[type=submit]")
    app.until_text("#people-status", f"Enrolled track {track} as Tony Blair")
    app.wait_for("!document.querySelector(\"li[data-track]\")")  # no longer unknown
    assert app.evaluate("document.querySelector(\"li[data-name='Tony Blair']\").dataset.count") == "1"
    found = client.post("/api/identify", files={"image": ("t.jpg", lfw_image("Tony_Blair", 7).read_bytes())}).json()
    assert found["faces"][0]["identity"] == "Tony Blair"


@needs_chromium
def test_phone_width_keyboard_and_errors(app, site):
    app.size(375, 740, mobile=True)
    try:
        for page in ("people", "verify", "identify", "albums", "attendance"):
            app.go(page)
            time.sleep(0.3)
            width = app.evaluate("document.documentElement.scrollWidth")
            assert width <= 375, (page, width)  # nothing wider than the phone
        app.go("people")
        app.wait_for("(() => { const imgs = [...document.querySelectorAll('#people-list img')]; "
                     "return imgs.length >= 2 && imgs.every((i) => i.naturalWidth === 96); })()")
        not_blank(app.shot("body", "webapp-phone"), (370, 375), (400, 4000))
    finally:
        app.size(1000, 800)
    # keyboard: a focused navigation link opens its page with Enter and moves the focus to its heading
    app.evaluate("document.querySelector(\"nav a[data-page='albums']\").focus()")
    app.key("Enter", "Enter", 13)
    app.wait_for("location.hash === '#albums' && document.activeElement.id === 'h-albums'")
    # errors from the API's JSON: a photo that is no image, and a missing key
    app.go("identify")
    app.files("#fileI", [Path(__file__)])
    app.click("#identify")
    assert app.until_text("#identify-status", "Error: image (test_webapp.py): ")
    app.fill("#key", "")
    app.go("people")
    message = app.until_text("#people-status", "Error")
    assert "API key" in message
    app.fill("#key", KEY)
