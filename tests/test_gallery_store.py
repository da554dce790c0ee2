"""The gallery backends with synthetic embeddings: enrolment, management, export/import, crashes.

Every test that takes ``gallery`` or ``gallery_backend`` runs twice: on a SQLite file and on a real
PostgreSQL + pgvector database (tests/pg.py, on loopback); the rest are one backend's own.
"""

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
from facespace.gallery import Gallery, GalleryBackend, Identifier, open_gallery
from facespace.gallery.store import GalleryError, IdentityExistsError, UnknownIdentityError
from conftest import lfw_image
from synthetic_faces import people

MODEL = dict(model="facenet-test-128", preprocessing_id="model=facenet-test-128;align=margin")


@pytest.fixture()
def gallery(gallery_backend):
    g = gallery_backend.open()
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


def test_both_backends_offer_the_whole_interface(gallery):
    members = {n for n in vars(GalleryBackend) if not n.startswith("_")} | set(GalleryBackend.__annotations__)
    missing = {name for name in members | {"__len__", "__contains__"} if not hasattr(gallery, name)}
    assert len(members) > 25
    assert not missing, missing
    assert isinstance(gallery, GalleryBackend)


def test_sqlite_gallery_runs_in_wal_mode(tmp_path):
    with Gallery(tmp_path / "g.db") as gallery:
        gallery.add_embeddings("alice", people(1, 1)[0], **MODEL)
        assert gallery._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


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
    assert len(gallery.matrix()) == 1 and gallery.integrity_check() == []  # dave's rows went with him


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
def test_export_import_round_trip(gallery, gallery_backend, tmp_path, suffix):
    x, _ = people(3, 2)
    for i, name in enumerate(["ann", "ben", "cat"]):
        gallery.add_embeddings(name, x[2 * i:2 * i + 2], [f"{name}{j}.jpg" for j in range(2)], **MODEL)
    out = tmp_path / f"export{suffix}"
    assert gallery.export(out) == 3
    with gallery_backend.open("copy") as copy:
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
        with gallery_backend.open("more") as other:
            other.add_embeddings("ann", x[4:6], **MODEL)  # two embeddings ann does not have yet
            other.export(more)
        copy.import_(more, on_conflict="merge")
        assert copy.get("ann").embeddings == 4
        copy.import_(out, on_conflict="replace")
        assert copy.get("ann").embeddings == 2
        with pytest.raises(IdentityExistsError):
            copy.import_(out, on_conflict="error")
        assert copy.get("ann").embeddings == 2  # the failed import changed nothing


def test_import_refuses_other_models_and_junk(gallery, gallery_backend, tmp_path):
    x, _ = people(1, 1)
    gallery.add_embeddings("zed", x, **MODEL)
    other = tmp_path / "other.json"
    with gallery_backend.open("other") as g:
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


def test_postgres_modes_and_databases_that_are_no_gallery(postgres):
    url = postgres.create_database("modes")
    with pytest.raises(GalleryError, match="no such gallery"):
        open_gallery(url, mode="write")
    with pytest.raises(GalleryError, match="no such gallery"):
        open_gallery(url, mode="read")
    with open_gallery(url, mode="create") as g:  # makes the tables
        g.add_embeddings("ann", people(1, 1)[0], **MODEL)
    with open_gallery(url, mode="read") as g:
        assert g.read_only and len(g) == 1
        for change in (lambda: g.remove("ann"), lambda: g.rename("ann", "bo"),
                       lambda: g.add_embeddings("bo", people(1, 1)[0], **MODEL)):
            with pytest.raises(GalleryError, match="read-only"):
                change()
    foreign = postgres.create_database("foreign")
    import psycopg

    with psycopg.connect(foreign, autocommit=True) as conn:  # facespace-like tables, no schema record
        conn.execute("CREATE TABLE facespace_meta (key text PRIMARY KEY, value text)")
    for mode in ("read", "write", "create"):
        with pytest.raises(GalleryError, match="not a facespace gallery"):
            open_gallery(foreign, mode=mode)
    with psycopg.connect(foreign, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('facespace_identities')").fetchone()[0] is None  # nothing added
    with pytest.raises(GalleryError, match="cannot connect"):
        open_gallery(f"postgresql://postgres:s3cret@127.0.0.1:{postgres.port}/absent_db")
    try:
        open_gallery(f"postgresql://postgres:s3cret@127.0.0.1:{postgres.port}/absent_db")
    except GalleryError as exc:
        assert "s3cret" not in str(exc) and "postgres:***@" in str(exc)  # no password in a message


def test_postgres_gallery_reconnects_after_losing_its_connection(postgres):
    """A server restart or network cut ends the gallery's session: that call fails as
    GalleryUnavailableError (a server answers 503), the next one connects again; nothing is lost."""
    import psycopg

    from facespace.gallery.records import GalleryUnavailableError

    url = postgres.create_database("reconnect")
    x, _ = people(2, 1)
    with open_gallery(url) as g:
        g.add_embeddings("ann", x[:1], **MODEL)
        pid = g._conn.info.backend_pid
        with psycopg.connect(postgres.url(), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(GalleryUnavailableError):
            g.add_embeddings("bob", x[1:], **MODEL)
        g.add_embeddings("bob", x[1:], **MODEL)
        assert [i.name for i in g.identities()] == ["ann", "bob"] and g._conn.info.backend_pid != pid


def test_thumbnails_are_kept_renamed_and_removed_with_their_identity(gallery):
    x, _ = people(2, 1)
    gallery.add_embeddings("ann", x[:1], **MODEL)
    gallery.add_embeddings("bob", x[1:], **MODEL)
    jpeg = lfw_image("Aaron_Peirsol", 1).read_bytes()
    assert gallery.thumbnail("ann") is None
    gallery.put_thumbnail("ann", jpeg)
    assert gallery.thumbnail("ann") == jpeg and gallery.thumbnail("bob") is None
    gallery.rename("ann", "Ann Lee")
    assert gallery.thumbnail("Ann Lee") == jpeg
    with pytest.raises(UnknownIdentityError):
        gallery.thumbnail("ann")
    with pytest.raises(UnknownIdentityError):
        gallery.put_thumbnail("nobody", jpeg)
    gallery.remove("Ann Lee")
    gallery.add_embeddings("Ann Lee", x[:1], **MODEL)  # a new identity of the old name has no thumbnail
    assert gallery.thumbnail("Ann Lee") is None


def test_two_connections_see_each_others_commits_by_generation(gallery_backend):
    """What several server workers rely on: a write through one connection moves the generation the
    other reads, and the other's next matrix has the new rows."""
    x, _ = people(3, 2)
    with gallery_backend.open() as one, gallery_backend.open(mode="write") as two:
        one.add_embeddings("ann", x[:2], **MODEL)
        seen = two.generation
        assert len(two.matrix()) == 2
        one.add_embeddings("bob", x[2:4], **MODEL)
        assert two.generation > seen and two.matrix().names == ["ann", "bob"]
        one.remove("ann")
        assert two.matrix().names == ["bob"] and "ann" not in two


def test_postgres_gallery_builds_and_searches_its_hnsw_index(postgres):
    """From ``index_min`` embeddings on, the gallery builds a pgvector HNSW index and ``auto`` search
    goes through it (the plan names the index); on well-separated people it finds what exact search does."""
    from facespace.calibration import Calibration
    from facespace.gallery.pg_store import PgVectorIndex
    from facespace.gallery.search import ExactIndex

    x, _ = people(150, 3, seed=5)
    probes, _ = people(150, 1, seed=5, spread=0.5)  # other faces of the same 150 people
    with open_gallery(postgres.create_database("hnsw"), index_min=300) as g:
        for i in range(99):
            g.add_embeddings(f"p{i:03d}", x[3 * i:3 * i + 3], **MODEL)
        assert not g._index_ready() and g.native_index(g.matrix(), "auto") is None  # 297: exact, in memory
        for i in range(99, 150):
            g.add_embeddings(f"p{i:03d}", x[3 * i:3 * i + 3], **MODEL)
        assert g._index_ready()
        matrix = g.matrix()
        native = g.native_index(matrix, "auto")
        assert isinstance(native, PgVectorIndex) and len(native) == 450
        plan = g._conn.execute("EXPLAIN SELECT id FROM facespace_embeddings ORDER BY vector::vector(128) <-> "
                               "%s::vector(128) LIMIT 5", (probes[0],)).fetchall()
        assert "facespace_embeddings_hnsw" in " ".join(r[0] for r in plan)
        d_hnsw, i_hnsw = native.search(probes, 3)
        d_exact, i_exact = ExactIndex(matrix.vectors).search(probes, 3)
        assert (i_hnsw[:, 0] == i_exact[:, 0]).mean() >= 0.99
        np.testing.assert_allclose(d_hnsw[:, 0], d_exact[:, 0], atol=1e-4)
        calibration = Calibration.load("no-such-model-entry", threshold=1.0)
        identifier = Identifier.from_gallery(g, calibration=calibration, threshold=1.0)
        assert isinstance(identifier.index, PgVectorIndex)
        assert [r.identity for r in identifier.search(probes, k=3)] == [f"p{i:03d}" for i in range(150)]
        stranger = people(1, 1, seed=99)[0]
        assert identifier.search(stranger)[0].identity == "unknown"  # open-set: nobody enrolled is near


# One identity per transaction, each with PER embeddings; "committed N" is printed after each.
ENROLLER = textwrap.dedent("""
    import signal, sys, numpy as np
    from facespace.gallery import open_gallery
    # a shell's background job starts with SIGINT ignored, and Python then keeps it ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    PER = 40
    g = open_gallery(sys.argv[1])
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
def test_killed_enrolment_leaves_gallery_intact(gallery_backend, tmp_path, sig):
    path = gallery_backend.location("crash")
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
    proc.communicate(timeout=30)  # drain its output: a full pipe would hold it in its final flush
    assert committed >= 30
    with open_gallery(path) as g:
        assert g.integrity_check() == []
        infos = g.identities()
        assert len(infos) >= committed + 1  # everything reported committed is there
        assert all(i.embeddings == 40 for i in infos)  # and no identity is half-written
        assert [i.name for i in infos] == [f"person{i:05d}" for i in range(len(infos))]
        assert g.model == "facenet-test-128"
    if gallery_backend.kind == "sqlite":
        raw = sqlite3.connect(path)
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        raw.close()
