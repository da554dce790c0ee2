"""Gallery, identify, cluster and video commands on real photos (LFW, knn_examples, the Hamilton clip)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import LFW, PHOTOS, lfw_image
from facespace.cli.main import main
from facespace.gallery import Gallery

EXAMPLES = PHOTOS / "face_recognition_examples" / "examples"
PEOPLE = {"Aaron_Peirsol": 3, "Serena_Williams": 3, "Colin_Powell": 3}


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """root/<person>/ with the first two LFW images of each person (symlinks)."""
    root = tmp_path_factory.mktemp("tree")
    for person in PEOPLE:
        (root / person).mkdir()
        for n in (1, 2):
            (root / person / f"{n}.jpg").symlink_to(lfw_image(person, n))
    return root


@pytest.fixture(scope="module")
def enrolled(tree, tmp_path_factory, pipeline) -> Path:
    path = tmp_path_factory.mktemp("gal") / "g.db"
    with Gallery(path) as g:
        results = g.enroll_tree(pipeline, tree)
    assert [(r.name, r.added) for r in results] == [(p, 2) for p in sorted(PEOPLE)]
    return path


def test_gallery_commands(enrolled, tmp_path, capsys):
    gallery = tmp_path / "g.db"
    gallery.write_bytes(enrolled.read_bytes())
    assert main(["gallery", "list", str(gallery), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(i["name"], i["embeddings"]) for i in listed["identities"]] == [(p, 2) for p in sorted(PEOPLE)]
    from facespace import FacePipeline

    assert listed["model"] and f"align={FacePipeline().align}" in listed["preprocessing_id"]
    assert main(["gallery", "rename", str(gallery), "Colin_Powell", "Colin Powell"]) == 0
    assert main(["gallery", "export", str(gallery), str(tmp_path / "out.npz")]) == 0
    assert main(["gallery", "remove", str(gallery), "Aaron_Peirsol"]) == 0
    assert main(["gallery", "remove", str(gallery), "Aaron_Peirsol"]) == 1  # unknown now: one-line error
    assert "no identity named" in capsys.readouterr().err
    fresh = tmp_path / "fresh.db"
    assert main(["gallery", "import", str(fresh), str(tmp_path / "out.npz")]) == 0
    with Gallery(fresh) as g:
        assert [i.name for i in g.identities()] == ["Aaron_Peirsol", "Colin Powell", "Serena_Williams"]


def test_identify_command(enrolled, capsys):
    probes = [str(lfw_image(p, 3)) for p in PEOPLE] + [str(lfw_image("George_W_Bush", 1))]
    assert main(["identify", "-g", str(enrolled), "--json", "--top", "2", *probes]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    names = [max(r["faces"], key=lambda f: (f["box"][2] - f["box"][0]))["identity"] for r in lines]
    assert names == list(PEOPLE) + ["unknown"]
    assert all(len(f["candidates"]) == 2 for r in lines for f in r["faces"])


def test_identify_with_other_preprocessing_is_refused(enrolled, capsys):
    code = main(["identify", "-g", str(enrolled), "--align", "centre", str(lfw_image("Aaron_Peirsol", 3))])
    assert code == 1
    err = capsys.readouterr().err
    assert "cannot be compared" in err and "align=centre" in err


def test_identify_knn_examples(tmp_path, pipeline):
    """The face_recognition knn example: enrol train/<person>/, identify the test photos."""
    from facespace.gallery import Identifier

    from PIL import Image

    def small(path: Path) -> np.ndarray:  # these photos are large; 480 px keeps the test quick
        image = Image.open(path).convert("RGB")
        image.thumbnail((480, 480))
        return np.asarray(image)

    knn = EXAMPLES / "knn_examples"
    with Gallery(tmp_path / "knn.db") as g:
        for person in sorted((knn / "train").iterdir()):
            paths = sorted(person.iterdir())
            g.enroll_images(pipeline, person.name, [small(p) for p in paths], sources=[str(p) for p in paths])
        assert sorted((i.name, i.embeddings) for i in g.identities()) == [
            ("alex_lacamoire", 1), ("biden", 2), ("kit_harington", 2), ("obama", 2), ("rose_leslie", 2)]
        ident = Identifier.for_pipeline(g, pipeline)
    found = {}
    for name in ["obama_and_biden.jpg", "kit_with_rose.jpg", "johnsnow_test1.jpg"]:
        faces = pipeline.embed(small(knn / "test" / name))
        found[name] = {r.identity for r in ident.search(np.stack([f.embedding for f in faces]))} - {"unknown"}
    assert found == {"obama_and_biden.jpg": {"obama", "biden"}, "kit_with_rose.jpg": {"kit_harington", "rose_leslie"},
                     "johnsnow_test1.jpg": {"kit_harington"}}


def test_enrolment_keys_images_by_content(tmp_path, pipeline, bad_inputs):
    """A file is read once and keyed by its bytes' sha256: the same photo twice, or as bytes, is one
    embedding; files that cannot be used are reported under their own names, as before."""
    good = lfw_image("Aaron_Peirsol", 1)
    with Gallery(tmp_path / "g.db") as g:
        result = g.enroll_images(pipeline, "aaron", [*bad_inputs.values(), good, good])
        assert (result.added, result.duplicates, len(result.skipped)) == (1, 1, len(bad_inputs))
        for (source, reason), path in zip(result.skipped, bad_inputs.values()):
            assert source == str(path) and reason.startswith(str(path)), reason
        again = g.enroll_images(pipeline, "aaron", [good.read_bytes()])
        assert (again.added, again.duplicates) == (0, 1) and g.get("aaron").embeddings == 1


def test_enrolment_killed_mid_tree_leaves_gallery_intact(tmp_path):
    """kill -9 the enrol command while it works through a tree: committed people are whole, none half-written."""
    root = tmp_path / "tree"
    people = sorted(p.name for p in LFW.iterdir() if len(list(p.iterdir())) >= 4)[:20]
    for person in people:
        (root / person).mkdir(parents=True)
        for f in sorted((LFW / person).iterdir())[:4]:
            (root / person / f.name).symlink_to(f)
    db = tmp_path / "g.db"
    proc = subprocess.Popen([sys.executable, "-m", "facespace.cli.main", "gallery", "enroll", str(db),
                             "--tree", str(root), "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 150
    count = 0
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                with sqlite3.connect(db, timeout=5) as c:
                    count = c.execute("SELECT COUNT(*) FROM identities").fetchone()[0]
            except sqlite3.OperationalError:
                count = 0
            if count >= 2:
                break
        time.sleep(0.2)
    assert proc.poll() is None, f"enrolment ended before it could be killed: {proc.stderr.read()[-500:]}"
    time.sleep(0.2)  # most likely inside the next person's embedding or transaction; well before the end
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    with Gallery(db) as g:
        assert g.integrity_check() == []
        infos = g.identities()
        assert 2 <= len(infos) < len(people)
        assert [i.name for i in infos] == people[:len(infos)]  # people are committed in order, whole
        for info in infos:
            vectors, sources = g.embeddings_of(info.name)
            assert len(sources) == info.embeddings >= 3
            assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    # the natural recovery: run the same command again; the people already in are not stored twice
    rerun = subprocess.run([sys.executable, "-m", "facespace.cli.main", "gallery", "enroll", str(db),
                            "--tree", str(root), "--quiet", "--json"], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    report = {r["name"]: r for r in json.loads(rerun.stdout)["identities"]}
    assert all(report[i.name]["added"] == 0 and report[i.name]["duplicates"] == i.embeddings for i in infos)
    with Gallery(db, mode="read") as g:
        assert g.integrity_check() == []
        assert {i.name: i.embeddings for i in g.identities()} == {
            name: r["added"] + r["duplicates"] for name, r in report.items()}  # each image once
        assert sorted(report) == people


def test_cluster_command(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for person in PEOPLE:
        for n in (1, 2):
            (photos / f"{person}_{n}.jpg").symlink_to(lfw_image(person, n))
    (photos / "broken.jpg").write_text("not an image")
    out = tmp_path / "out"
    code = main(["cluster", str(photos), "--out", str(out), "--quiet"])
    assert code == 1  # one unreadable photo is reported, the rest clustered
    report = json.loads((out / "clusters.json").read_text())
    assert report["errors"][0]["image"].endswith("broken.jpg")
    # LFW photos may show a second face; the main faces of each person must share a cluster
    main_faces = {}
    for c in report["clusters"]:
        for f in c["faces"]:
            area = (f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1])
            if area > main_faces.get(f["image"], (0, None))[0]:
                main_faces[f["image"]] = (area, c["cluster"])
    by_person = {}
    for image, (_, cluster_id) in main_faces.items():
        by_person.setdefault(Path(image).name.rsplit("_", 1)[0], set()).add(cluster_id)
    assert all(len(ids) == 1 for ids in by_person.values()) and len(set.union(*by_person.values())) == 3
    page = (out / "index.html").read_text()
    assert page.count("<img ") == report["faces"] and page.count("<section") == len(report["clusters"])
    for c in report["clusters"]:
        for f in c["faces"]:
            assert (out / f["thumbnail"]).is_file()
            assert (out / f["href"]).resolve() == Path(f["image"]).resolve()


def test_video_tracks_and_identifies(tmp_path, pipeline):
    from facespace.gallery import Identifier
    from facespace.video import annotate_video, process_video

    clip = EXAMPLES / "short_hamilton_clip.mp4"
    with Gallery(tmp_path / "g.db") as g:
        g.enroll_images(pipeline, "lin-manuel-miranda", [EXAMPLES / "lin-manuel-miranda.png"])
        ident = Identifier.for_pipeline(g, pipeline)
    result = process_video(pipeline, clip, every=10, identifier=ident, max_frames=150)
    assert result.frames == 150 and result.fps == pytest.approx(29.97, abs=0.01)
    tracks = result.tracks
    assert tracks and all(t.first_frame % 10 == 0 and t.last_frame < 150 for t in tracks)
    assert all(np.all(np.diff([s.frame for s in t.sightings]) > 0) for t in tracks)
    named = [t for t in tracks if t.name == "lin-manuel-miranda"]
    assert named and max(len(t.sightings) for t in named) >= 3  # followed over several sampled frames
    report = result.to_dict()
    assert json.loads(json.dumps(report))["tracks"][0]["boxes"]
    out = annotate_video(result, tmp_path / "annotated.mp4", max_frames=150)
    capture = cv2.VideoCapture(str(out))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 150
    capture.release()


def test_iou_tracker_links_and_splits():
    from facespace.video import IoUTracker, Sighting, iou_matrix

    assert iou_matrix([[0, 0, 10, 10]], [[5, 0, 15, 10], [20, 20, 30, 30]]).round(3).tolist() == [[0.333, 0.0]]
    e1, e2 = np.eye(4, dtype=np.float32)[0], np.eye(4, dtype=np.float32)[1]
    tracker = IoUTracker(iou_threshold=0.3, max_missed=1)
    assert tracker.update([Sighting(0, np.array([0, 0, 10, 10.]), 1, e1),
                           Sighting(0, np.array([50, 50, 60, 60.]), 1, e2)]) == [0, 1]
    assert tracker.update([Sighting(5, np.array([1, 0, 11, 10.]), 1, e1)]) == [0]
    # an overlapping box with a very different face starts a new track
    assert tracker.update([Sighting(10, np.array([1, 0, 11, 10.]), 1, e2)]) == [2]
    tracks = tracker.close()
    assert [len(t.sightings) for t in tracks] == [2, 1, 1]
    assert tracks[0].box_at(7).tolist() == [1, 0, 11, 10]
