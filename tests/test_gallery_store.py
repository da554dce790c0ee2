"""The SQLite gallery with synthetic embeddings: enrolment, management, export/import, crashes."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from facespace.errors import ModelMismatchError
from facespace.gallery import Gallery
from facespace.gallery.store import GalleryError, IdentityExistsError, UnknownIdentityError
from synthetic_faces import people

MODEL = dict(model="facenet-test-128", preprocessing_id="model=facenet-test-128;align=margin")


@pytest.fixture()
def gallery(tmp_path):
    g = Gallery(tmp_path / "g.db")
    yield g
    g.close()


def test_enrol_list_and_matrix(gallery):
    x, _ = people(3, 2)
    gallery.add_embeddings("alice", x[:2], ["a1.jpg", "a2.jpg"], **MODEL)
    gallery.add_embeddings("bob", x[2:4], **MODEL)
    gallery.add_embeddings("alice", x[4:5], ["a3.jpg"], **MODEL)  # a third embedding for alice
    assert [(i.name, i.embeddings) for i in gallery.identities()] == [("alice", 3), ("bob", 2)]
    assert gallery.model == MODEL["model"] and gallery.preprocessing_id == MODEL["preprocessing_id"]
    assert gallery.dim == 128 and len(gallery) == 2 and "bob" in gallery
    m = gallery.matrix()
    assert m.names == ["alice", "bob"] and m.labels.tolist() == [0, 0, 0, 1, 1]
    np.testing.assert_allclose(m.vectors[:2], x[:2], atol=1e-6)
    vectors, sources = gallery.embeddings_of("alice")
    assert sources == ["a1.jpg", "a2.jpg", "a3.jpg"] and vectors.shape == (3, 128)
    assert gallery.integrity_check() == []
    mode = gallery._conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_replace_rename_remove(gallery):
    x, _ = people(2, 3)
    gallery.add_embeddings("carol", x[:3], **MODEL)
    gallery.add_embeddings("carol", x[3:4], replace=True, **MODEL)
    assert gallery.get("carol").embeddings == 1
    generation = gallery.generation
    gallery.rename("carol", "Carol King")
    assert gallery.generation == generation + 1
    assert "carol" not in gallery and gallery.get("Carol King").embeddings == 1
    gallery.add_embeddings("dave", x[4:6], **MODEL)
    with pytest.raises(IdentityExistsError):
        gallery.rename("dave", "Carol King")
    with pytest.raises(UnknownIdentityError, match="nobody"):
        gallery.rename("nobody", "x")
    assert gallery.remove("dave") == 2
    with pytest.raises(UnknownIdentityError):
        gallery.remove("dave")
    assert gallery._conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0] == 1


def test_bad_names_and_vectors(gallery):
    x, _ = people(1, 1)
    for bad in ["", "  ", " padded", "tab\tname"]:
        with pytest.raises(GalleryError):
            gallery.add_embeddings(bad, x, **MODEL)
    with pytest.raises(GalleryError, match="NaN"):
        gallery.add_embeddings("nan", np.full((1, 128), np.nan, np.float32), **MODEL)
    with pytest.raises(GalleryError, match="zero length"):
        gallery.add_embeddings("zero", np.zeros((1, 128), np.float32), **MODEL)
    assert len(gallery) == 0 and gallery.model is None  # nothing, not even metadata, was written


def test_model_mismatch_is_refused(gallery):
    x, _ = people(1, 2)
    gallery.add_embeddings("erin", x[:1], **MODEL)
    with pytest.raises(ModelMismatchError, match="facenet-other"):
        gallery.add_embeddings("frank", x[1:], model="facenet-other", preprocessing_id="p", )
    with pytest.raises(ModelMismatchError, match="preprocessing"):
        gallery.check_compatible(MODEL["model"], "model=facenet-test-128;align=align")
    with pytest.raises(ModelMismatchError, match="64-dimensional|128-dimensional"):
        gallery.add_embeddings("gina", np.ones((1, 64), np.float32), **MODEL)
    gallery.check_compatible(**MODEL, dim=128)
    assert [i.name for i in gallery.identities()] == ["erin"]


@pytest.mark.parametrize("suffix", [".json", ".npz"])
def test_export_import_round_trip(gallery, tmp_path, suffix):
    x, _ = people(3, 2)
    for i, name in enumerate(["ann", "ben", "cat"]):
        gallery.add_embeddings(name, x[2 * i:2 * i + 2], [f"{name}{j}.jpg" for j in range(2)], **MODEL)
    out = tmp_path / f"export{suffix}"
    assert gallery.export(out) == 3
    with Gallery(tmp_path / "copy.db") as copy:
        assert copy.import_(out) == 3
        assert copy.model == gallery.model and copy.preprocessing_id == gallery.preprocessing_id
        a, b = gallery.matrix(), copy.matrix()
        assert a.names == b.names and a.labels.tolist() == b.labels.tolist()
        np.testing.assert_allclose(a.vectors, b.vectors, atol=1e-6)
        assert copy.embeddings_of("ben")[1] == ["ben0.jpg", "ben1.jpg"]
        assert copy.import_(out, on_conflict="skip") == 0
        again = copy.import_file(out, on_conflict="merge")  # the same file again adds nothing (was: 4)
        assert (again.identities, again.added, again.duplicates) == (3, 0, 6)
        assert copy.get("ann").embeddings == 2
        more = tmp_path / f"more{suffix}"
        with Gallery(tmp_path / "more.db") as other:
            other.add_embeddings("ann", x[4:6], **MODEL)  # two embeddings ann does not have yet
            other.export(more)
        copy.import_(more, on_conflict="merge")
        assert copy.get("ann").embeddings == 4
        copy.import_(out, on_conflict="replace")
        assert copy.get("ann").embeddings == 2
        with pytest.raises(IdentityExistsError):
            copy.import_(out, on_conflict="error")
        assert copy.get("ann").embeddings == 2  # the failed import changed nothing


def test_import_refuses_other_models_and_junk(gallery, tmp_path):
    x, _ = people(1, 1)
    gallery.add_embeddings("zed", x, **MODEL)
    other = tmp_path / "other.json"
    with Gallery(tmp_path / "other.db") as g:
        g.add_embeddings("yan", x, model="other-model", preprocessing_id="p")
        g.export(other)
    with pytest.raises(ModelMismatchError):
        gallery.import_(other)
    junk = tmp_path / "junk.json"
    junk.write_text(json.dumps({"hello": 1}))
    with pytest.raises(GalleryError, match="not a facespace gallery export"):
        gallery.import_(junk)
    with pytest.raises(GalleryError):
        gallery.export(tmp_path / "x.csv")


def test_not_a_gallery(tmp_path):
    bad = tmp_path / "notes.db"
    bad.write_text("this is not sqlite " * 100)
    with pytest.raises(GalleryError, match="not a facespace gallery"):
        Gallery(bad)
    with pytest.raises(GalleryError, match="no such gallery"):
        Gallery(tmp_path / "missing.db", create=False)


# One identity per transaction, each with PER embeddings; "committed N" is printed after each.
ENROLLER = textwrap.dedent("""
    import sys, numpy as np
    from facespace.gallery import Gallery
    PER = 40
    g = Gallery(sys.argv[1])
    rng = np.random.default_rng(0)
    i = 0
    while True:
        x = rng.normal(size=(PER, 128)).astype(np.float32)
        g.add_embeddings(f"person{i:05d}", x, [f"img{j}" for j in range(PER)],
                         model="facenet-test-128", preprocessing_id="p")
        print(f"committed {i}", flush=True)
        i += 1
""")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_enrolment_leaves_gallery_intact(tmp_path, sig):
    path = tmp_path / "crash.db"
    script = tmp_path / "enrol.py"
    script.write_text(ENROLLER)
    proc = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True)
    committed = -1
    deadline = time.time() + 60
    while committed < 30 and time.time() < deadline:
        line = proc.stdout.readline()
        if line.startswith("committed"):
            committed = int(line.split()[1])
    time.sleep(0.013)  # land somewhere inside a later enrolment
    proc.send_signal(sig)
    proc.wait(timeout=30)
    proc.stdout.close()
    assert committed >= 30
    with Gallery(path) as g:
        assert g.integrity_check() == []
        infos = g.identities()
        assert len(infos) >= committed + 1  # everything reported committed is there
        assert all(i.embeddings == 40 for i in infos)  # and no identity is half-written
        assert [i.name for i in infos] == [f"person{i:05d}" for i in range(len(infos))]
        assert g.model == "facenet-test-128"
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    raw.close()
