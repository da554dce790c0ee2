"""``facespace attend`` on the Hamilton clip against hand-made labels, the log's CSV export, sources
that stop (a truncated file, an HTTP stream that stalls, comes back and then is gone), bad input,
and the server's attendance endpoints, all on real weights, real video and real databases."""

from __future__ import annotations

import csv
import datetime as dt
import http.server
import io
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from shared_data import DATA, REPO

LABELS = json.loads((REPO / "tests" / "fixtures" / "hamilton_attendance.json").read_text())
CLIP = DATA / LABELS["video"]
START = "2026-12-01T08:58:00"
EVERY = 5


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "facespace.cli.main", *args], capture_output=True, text=True,
                          timeout=600)


def start_epoch() -> float:
    return dt.datetime.fromisoformat(START).astimezone().timestamp()


@pytest.fixture(scope="module")
def cast_gallery(tmp_path_factory, pipeline) -> Path:
    from facespace.gallery import Gallery

    path = tmp_path_factory.mktemp("cast") / "cast.db"
    with Gallery(path) as g:
        for name, photo in LABELS["gallery"].items():
            assert g.enroll_images(pipeline, name, [DATA / photo]).usable
    return path


@pytest.fixture(scope="module")
def hamilton(cast_gallery, tmp_path_factory):
    """``facespace attend`` on the whole clip, with the log read by this process while it is written:
    (log path, the CLI's JSON summary, what the concurrent reads saw)."""
    from facespace.attendance import AttendanceLog

    log = tmp_path_factory.mktemp("attend") / "attendance.db"
    proc = subprocess.Popen([sys.executable, "-m", "facespace.cli.main", "attend", str(CLIP), "-g", str(cast_gallery),
                             "--log", str(log), "--every", str(EVERY), "--start-time", START, "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    while proc.poll() is None:  # a second process reading while attend writes
        if log.exists():
            try:
                with AttendanceLog(log, mode="read") as reader:
                    seen.append(len(reader.events()))
            except Exception as exc:  # noqa: BLE001 - recorded, asserted below
                seen.append(exc)
        time.sleep(0.2)
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    return log, json.loads(out), seen, err


def test_attend_logs_the_labelled_people(hamilton):
    from facespace.attendance import AttendanceLog

    log_path, summary, seen, err = hamilton
    fps, t0 = LABELS["fps"], start_epoch()
    appears = {}  # person -> the shots (frame ranges) they appear in, and those where they face the camera
    for shot in LABELS["shots"]:
        for person in shot["people"]:
            if person["name"]:
                appears.setdefault(person["name"], {"any": [], "frontal": []})
                appears[person["name"]]["any"].append(shot["frames"])
                if person["pose"] == "frontal":
                    appears[person["name"]]["frontal"].append(shot["frames"])
    with AttendanceLog(log_path, mode="read") as log:
        events = log.events()
        runs = log.runs()
        tracks = log.tracks()
        thumbnails = [log.thumbnail(t.id) for t in tracks]
        vectors = [log.track_vectors(t.id).vectors for t in tracks]
    logged = {e.person for e in events}
    assert logged <= set(appears), f"logged someone who is not in the clip: {logged - set(appears)}"
    assert not logged & set(LABELS["absent"])
    must = {name for name, a in appears.items() if a["frontal"]}
    assert must <= logged, f"not logged: {must - logged}"
    assert len(events) == len(logged)  # one event per person: the clip is shorter than the interval
    slack = EVERY / fps
    for e in events:
        shots = appears[e.person]["any"]
        assert any(t0 + a / fps - slack <= e.first_seen <= t0 + b / fps for a, b in shots), e
        assert any(t0 + a / fps <= e.last_seen <= t0 + (b + EVERY) / fps for a, b in shots), e
        assert e.first_seen <= e.last_seen and e.source.endswith("short_hamilton_clip.mp4")
    lin = next(e for e in events if e.person == "lin-manuel-miranda")
    assert lin.last_seen >= t0 + 82 / fps  # seen in the first shot and again in the third: one event, extended
    assert runs == [dict(runs[0], status="ended", frames=LABELS["frames"], message=None)]
    assert summary["status"] == "ended" and summary["events"] == len(events)
    assert {n["person"] for n in summary["identifications"]} == logged
    assert all(0 <= n["video_latency_s"] <= 1.0 for n in summary["identifications"])
    assert tracks and len(tracks) == summary["anonymous_tracks"]  # the audience is not in the gallery
    for jpeg, vecs in zip(thumbnails, vectors):
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and min(image.shape[:2]) >= 16
        assert vecs.shape[1] == 128 and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-4)
    errors = [s for s in seen if isinstance(s, Exception)]
    counts = [s for s in seen if not isinstance(s, Exception)]
    assert not errors and counts == sorted(counts)  # read while written; events only ever grew
    assert "new events" in err


def test_csv_export_equals_the_database(hamilton, tmp_path):
    from facespace.attendance import AttendanceLog

    log_path = hamilton[0]
    before = log_path.read_bytes()
    out = tmp_path / "out.csv"
    proc = cli("attendance", "export", str(log_path), "--csv", str(out))
    assert proc.returncode == 0, proc.stderr
    with AttendanceLog(log_path, mode="read") as log:
        expected = [{k: str(v) for k, v in e.to_dict().items()} for e in log.events()]
        lin = [e.to_dict()["id"] for e in log.events(person="lin-manuel-miranda")]
    rows = list(csv.DictReader(out.open(newline="", encoding="utf-8")))
    assert rows == expected and len(rows) >= 2
    assert dt.datetime.fromisoformat(rows[0]["first_seen"]).timestamp() == pytest.approx(start_epoch(), abs=0.01)
    piped = cli("attendance", "export", str(log_path), "--csv", "-", "--person", "lin-manuel-miranda")
    assert [int(r["id"]) for r in csv.DictReader(io.StringIO(piped.stdout))] == lin
    other_day = cli("attendance", "export", str(log_path), "--csv", "-", "--day", "2026-12-02")
    assert other_day.stdout.strip() == ",".join(("id", "person", "first_seen", "last_seen", "track_id", "source"))
    assert log_path.read_bytes() == before  # read-only


def _avi_copy(folder: Path, frames: int) -> Path:
    """The clip's first ``frames`` frames re-encoded as MJPEG AVI (readable when cut short)."""
    capture = cv2.VideoCapture(str(CLIP))
    out = folder / "clip.avi"
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), LABELS["fps"], (640, 360))
    for _ in range(frames):
        ok, frame = capture.read()
        assert ok
        writer.write(frame)
    writer.release()
    capture.release()
    return out


def test_truncated_file_is_reported_and_its_events_kept(cast_gallery, tmp_path, capsys):
    from facespace.attendance import AttendanceLog
    from facespace.cli.main import main

    whole = _avi_copy(tmp_path, 150).read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole[: int(len(whole) * 0.55)])  # about frame 88: after the first shot
    log = tmp_path / "a.db"
    code = main(["attend", str(cut), "-g", str(cast_gallery), "--log", str(log), "--every", str(EVERY),
                 "--start-time", START])
    err = capsys.readouterr().err
    assert code == 3 and "truncated" in err and "of the 150" in err
    with AttendanceLog(log, mode="read") as reader:
        assert {"lin-manuel-miranda", "alex-lacamoire"} <= {e.person for e in reader.events()}
        run = reader.runs()[0]
    assert run["status"] == "truncated" and 60 < run["frames"] < 150 and "truncated" in run["message"]


class _Camera(http.server.BaseHTTPRequestHandler):
    """An HTTP 'camera': the first connection sends part of the video and then stalls, the second
    sends all of it, later ones find nothing (404)."""

    video: bytes = b""
    calls: list = []

    def do_GET(self) -> None:  # noqa: N802 - the http.server name
        self.calls.append(time.time())
        if len(self.calls) > 2:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "video/x-msvideo")
        self.end_headers()
        try:
            if len(self.calls) == 1:
                self.wfile.write(self.video[: len(self.video) // 2])
                self.wfile.flush()
                time.sleep(6)  # stalled, connection open
            else:
                self.wfile.write(self.video)
        except OSError:
            pass

    def log_message(self, *args) -> None:
        pass


def test_stream_stalls_reconnects_then_is_lost(cast_gallery, tmp_path, capsys):
    from facespace.attendance import AttendanceLog
    from facespace.cli.main import main

    handler = type("Camera", (_Camera,), {"video": _avi_copy(tmp_path, 60).read_bytes(), "calls": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    log = tmp_path / "live.db"
    before = time.time()
    try:
        code = main(["attend", f"http://127.0.0.1:{server.server_address[1]}/cam.avi", "-g", str(cast_gallery),
                     "--log", str(log), "--every", str(EVERY), "--reconnect", "2", "--backoff", "0.1",
                     "--stall-timeout", "1"])
    finally:
        server.shutdown()
    err = capsys.readouterr().err
    assert code == 3, err
    assert "reconnected (attempt 1/2)" in err and "could not be reopened in 2 attempt(s)" in err
    assert len(handler.calls) == 4  # the stalled one, the full one, two refused reconnections
    with AttendanceLog(log, mode="read") as reader:
        events, run = reader.events(), reader.runs()[0]
    assert {"lin-manuel-miranda", "alex-lacamoire"} <= {e.person for e in events}
    assert all(before <= e.first_seen <= e.last_seen <= time.time() for e in events)  # the wall clock
    assert run["status"] == "lost" and "stopped after frame" in run["message"]


@pytest.mark.parametrize("args, message", [
    (["no-such-video.mp4"], "no such video file"),
    (["ftp://example.org/cam"], "unsupported scheme"),
    (["7"], "cannot be opened as a video camera"),
    (["NOTES"], "cannot be read as a video"),
    (["http://127.0.0.1:9/cam", "--start-time", START], "--start-time is for a video file"),
    (["CLIP", "--log-is-gallery"], "is not an attendance log"),
])
def test_bad_sources_and_logs_fail_clearly(args, message, cast_gallery, tmp_path, capsys):
    from facespace.cli.main import main

    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video\n" * 100)
    log = tmp_path / "a.db"
    if "--log-is-gallery" in args:
        args = [a for a in args if a != "--log-is-gallery"]
        log = tmp_path / "gallery-copy.db"
        shutil.copyfile(cast_gallery, log)
    before = log.read_bytes() if log.exists() else None
    args = [{"CLIP": str(CLIP), "NOTES": str(notes)}.get(a, a) for a in args]
    code = main(["attend", *args, "-g", str(cast_gallery), "--log", str(log), "--reconnect", "0"])
    err = capsys.readouterr().err
    assert code == 1 and message in err and "Traceback" not in err, err
    if before is not None:
        assert log.read_bytes() == before


@pytest.mark.parametrize("option", [["--every", "0"], ["--interval", "-5"], ["--start-time", "yesterday"],
                                    ["--reconnect", "-1"], ["--min-score", "2"]])
def test_bad_options_exit_2(option, capsys):
    from facespace.cli.main import main

    with pytest.raises(SystemExit) as stop:
        main(["attend", str(CLIP), "-g", "g.db", "--log", "a.db", *option])
    assert stop.value.code == 2 and option[0] in capsys.readouterr().err


def test_server_attendance_endpoints(hamilton, cast_gallery, tmp_path):
    from test_server import KEY, expect_error, running_server

    import httpx

    log = tmp_path / "attendance.db"
    shutil.copyfile(hamilton[0], log)
    gallery = tmp_path / "g.db"
    shutil.copyfile(cast_gallery, gallery)
    with running_server(tmp_path, "--gallery", str(gallery), "--attendance", str(log),
                        "--api-key-env", "FACESPACE_TEST_KEY", env={"FACESPACE_TEST_KEY": KEY}) as (base, _, _):
        client = httpx.Client(base_url=base, headers={"X-API-Key": KEY}, timeout=60)
        expect_error(httpx.get(base + "/api/attendance"), 401, "unauthorized")
        events = client.get("/api/attendance").json()["events"]
        assert {e["person"] for e in events} >= {"lin-manuel-miranda", "alex-lacamoire"}
        assert set(events[0]) == {"id", "person", "first_seen", "last_seen", "track_id", "source"}
        assert client.get("/api/attendance", params={"since_id": events[0]["id"]}).json()["events"] == events[1:]
        assert client.get("/api/attendance", params={"person": "alex-lacamoire"}).json()["events"] == [
            e for e in events if e["person"] == "alex-lacamoire"]
        assert client.get("/api/attendance", params={"day": "2026-12-01"}).json()["events"] == events
        assert client.get("/api/attendance", params={"day": "2026-12-02"}).json()["events"] == []
        expect_error(client.get("/api/attendance", params={"day": "2026-13-40"}), 422)
        expect_error(client.get("/api/attendance", params={"day": "monday"}), 422)
        table = client.get("/api/attendance.csv")
        assert table.headers["content-type"].startswith("text/csv")
        assert list(csv.DictReader(io.StringIO(table.text))) == [{k: str(v) for k, v in e.items()} for e in events]
        tracks = client.get("/api/attendance/tracks").json()["tracks"]
        assert tracks and {"id", "first_seen", "last_seen", "frames", "thumbnail_url"} <= set(tracks[0])
        picture = client.get(tracks[0]["thumbnail_url"])
        assert picture.headers["content-type"] == "image/jpeg"
        assert cv2.imdecode(np.frombuffer(picture.content, np.uint8), cv2.IMREAD_COLOR) is not None
        expect_error(client.get("/api/attendance/tracks/99999/thumbnail"), 404, "unknown_track")
        url = f"/api/attendance/tracks/{tracks[0]['id']}/enrol"
        expect_error(httpx.post(base + url, json={"name": "guest"}), 401)
        expect_error(client.post(url, json={"name": "guest"}, headers={"Origin": "https://evil.example"}), 403)
        expect_error(client.post(url, json={"name": ""}), 422)
        done = client.post(url, json={"name": "guest one"})
        assert done.status_code == 201 and done.json()["added"] >= 1, done.text
        assert "guest one" in {i["name"] for i in client.get("/api/identities").json()["identities"]}
        assert tracks[0]["id"] not in {t["id"] for t in client.get("/api/attendance/tracks").json()["tracks"]}
        expect_error(client.post(url, json={"name": "guest two"}), 409, "already_enrolled")
        expect_error(client.post("/api/attendance/tracks/99999/enrol", json={"name": "x"}), 404, "unknown_track")
        client.close()


def test_server_without_attendance_says_so(pipeline):
    from fastapi.testclient import TestClient

    from facespace.server import Security, create_app

    app = create_app(lambda: pipeline, security=Security(allowed_hosts=("testserver",)))
    with TestClient(app) as client:
        for path in ("/api/attendance", "/api/attendance.csv", "/api/attendance/tracks",
                     "/api/attendance/tracks/1/thumbnail"):
            r = client.get(path)
            assert r.status_code == 404 and r.json()["error"]["type"] == "no_attendance", (path, r.text)
        r = client.post("/api/attendance/tracks/1/enrol", json={"name": "x"})
        assert r.status_code == 404 and r.json()["error"]["type"] == "no_attendance"


def test_events_interval_and_log_refusals(tmp_path):
    """One event per person per stay: a sighting within the interval extends the event, a later one
    starts another; a file that is not a log is refused unchanged."""
    from facespace.attendance import AttendanceError, AttendanceLog

    log = AttendanceLog(tmp_path / "a.db")
    run = log.start_run("cam", 0.0)
    track = log.add_track(run, "cam", 100.0, 101.0, 3, "ann", np.eye(4, dtype=np.float32)[:1], "m", "p", None)
    assert log.record_sighting("ann", 100.0, 101.0, 60, track, "cam", run) == (1, True)
    assert log.record_sighting("ann", 150.0, 155.0, 60, track, "cam", run) == (1, False)
    assert log.record_sighting("ann", 300.0, 301.0, 60, track, "cam", run) == (2, True)
    assert log.record_sighting("bob", 150.0, 151.0, 60, track, "cam", run) == (3, True)
    assert [(e.person, e.first_seen, e.last_seen) for e in log.events()] == [
        ("ann", 100.0, 155.0), ("ann", 300.0, 301.0), ("bob", 150.0, 151.0)]
    assert [e.id for e in log.events(since_id=1)] == [2, 3] and len(log.events(person="ann")) == 2
    log.close()
    for name, content in (("empty.db", b""), ("text.db", b"hello" * 10)):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(AttendanceError, match="not an attendance log"):
            AttendanceLog(tmp_path / name)
        assert (tmp_path / name).read_bytes() == content
    with pytest.raises(AttendanceError, match="no such attendance log"):
        AttendanceLog(tmp_path / "missing.db", mode="read")
    assert not (tmp_path / "missing.db").exists()
