"""Gallery reliability: idempotent enrolment and import (schema 2 and its migration), commands that
leave files that are not galleries alone, and clear refusals of bad outputs, inputs and arguments.

Real files, real SQLite galleries, the real ``facespace`` command in subprocesses; disk full is a
real write failure: ``RLIMIT_FSIZE`` in the child, with SIGXFSZ ignored, makes writes fail with EFBIG.
The tests taking ``gallery_backend`` run on a SQLite file and on a real PostgreSQL database.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import LFW
from facespace.gallery import Gallery, open_gallery
from facespace.gallery.records import vector_hash
from facespace.gallery.schema import GALLERY_MODES, SCHEMA_VERSION
from facespace.gallery.store import GalleryError
from synthetic_faces import people

MODEL = dict(model="facenet-test-128", preprocessing_id="model=facenet-test-128;align=margin")

# -- helpers -------------------------------------------------------------------


def facespace(*args: str | Path, file_limit: int | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """The real command in a child process; ``file_limit``: RLIMIT_FSIZE there, SIGXFSZ ignored."""
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, resource.RLIM_INFINITY))

    env = {**os.environ, "TQDM_DISABLE": "1"}
    return subprocess.run([sys.executable, "-m", "facespace.cli.main", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env, preexec_fn=limit if file_limit else None)


def one_error_line(proc: subprocess.CompletedProcess, *expected: str, code: int = 1) -> str:
    """The command failed with ``code`` and said why on one line, with no traceback."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    error = [line for line in lines if line.startswith("facespace: error:") or "error:" in line]
    assert len(error) == 1 and (code == 2 or len(lines) == 1), proc.stderr
    for text in expected:
        assert text in error[0], error[0]
    return error[0]


def fingerprint(path: Path) -> tuple[str, int, int]:
    """What must not change when a command is refused: the bytes (sha256), size and mtime."""
    stat = path.stat()
    return hashlib.sha256(path.read_bytes()).hexdigest(), stat.st_size, stat.st_mtime_ns


def synthetic_gallery(path, n_people: int = 3, per: int = 2):
    """A gallery at ``path`` (a file or a URL) of ``n_people`` synthetic people; returns ``path``."""
    x, _ = people(n_people, per)
    with open_gallery(path) as g:
        for i in range(n_people):
            g.add_embeddings(f"person{i}", x[i * per:(i + 1) * per], [f"p{i}_{j}.jpg" for j in range(per)],
                             **MODEL)
    return path


def rows(location) -> int:
    """Embeddings stored in the gallery at ``location`` (a file or a URL)."""
    with open_gallery(location, mode="read") as g:
        return len(g.matrix())



def lfw_tree(root: Path, n_people: int, per: int) -> dict[str, int]:
    """root/<person>/ with ``per`` LFW images each (symlinks); {person: images}."""
    chosen = sorted(p.name for p in LFW.iterdir() if len(list(p.iterdir())) >= per)[:n_people]
    for person in chosen:
        (root / person).mkdir(parents=True)
        for f in sorted((LFW / person).iterdir())[:per]:
            (root / person / f.name).symlink_to(f)
    return {person: per for person in chosen}


def v1_gallery(path: Path) -> np.ndarray:
    """A schema-1 gallery as facespace 1 wrote it, with repeats v1 allowed: ann's first vector three
    times and bob's once (ids 1..5); returns the vectors."""
    x, _ = people(2, 2)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE identities (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created REAL NOT NULL);
        CREATE TABLE embeddings (id INTEGER PRIMARY KEY,
            identity_id INTEGER NOT NULL REFERENCES identities(id) ON DELETE CASCADE,
            vector BLOB NOT NULL, dim INTEGER NOT NULL, source TEXT, created REAL NOT NULL);
        CREATE INDEX embeddings_identity ON embeddings(identity_id);
    """)
    conn.executemany("INSERT INTO meta VALUES (?, ?)", [("schema", "1"), ("generation", "7"), ("dim", "128"),
                                                        ("model", MODEL["model"]),
                                                        ("preprocessing_id", MODEL["preprocessing_id"])])
    conn.executemany("INSERT INTO identities VALUES (?, ?, ?)", [(1, "ann", 1.0), (2, "bob", 2.0)])
    embeddings = [(1, x[0], "a.jpg", 10.0), (1, x[1], "a2.jpg", 11.0), (1, x[0], "a.jpg", 12.0),
                  (1, x[0], "a.jpg", 13.0), (2, x[2], "b.jpg", 14.0)]
    conn.executemany("INSERT INTO embeddings (identity_id, vector, dim, source, created) VALUES (?, ?, 128, ?, ?)",
                     [(i, v.astype("<f4").tobytes(), s, t) for i, v, s, t in embeddings])
    conn.close()
    return x


# -- 1. enrolment and import are idempotent --------------------------------------------


def test_the_same_embeddings_are_stored_once(gallery_backend):
    x, _ = people(2, 2)
    with gallery_backend.open() as g:
        first = g.store_embeddings("ann", x[:2], ["a.jpg", "b.jpg"], **MODEL)
        generation = g.generation
        again = g.store_embeddings("ann", x[:2], ["a.jpg", "b.jpg"], **MODEL)
        assert (first.added, first.duplicates, again.added, again.duplicates) == (2, 0, 0, 2)
        assert g.get("ann").embeddings == 2 and g.generation == generation  # nothing changed, nothing bumped
        # keyed by content hash when given (a file's sha256): the same file twice is one embedding
        g.add_embeddings("bob", x[2:3], hashes=["f" * 64], **MODEL)
        assert g.store_embeddings("bob", x[3:4], hashes=["f" * 64], **MODEL).duplicates == 1
        # the same vector under another identity is that identity's own
        assert g.store_embeddings("carl", x[:1], **MODEL).added == 1
        assert [(i.name, i.embeddings) for i in g.identities()] == [("ann", 2), ("bob", 1), ("carl", 1)]
        stored = g.embedding_rows("ann")
        assert dict(zip(stored.sources, stored.hashes))["a.jpg"] == vector_hash(x[0]) and g.integrity_check() == []


def test_the_sqlite_content_key_is_unique(tmp_path):
    with Gallery(tmp_path / "g.db") as g:
        unique = g._conn.execute("SELECT sql FROM sqlite_master WHERE name='embeddings_content'").fetchone()[0]
        assert "UNIQUE" in unique


@pytest.mark.parametrize("gallery_backend,suffix", [("sqlite", ".json"), ("sqlite", ".npz"), ("postgresql", ".json")],
                         indirect=["gallery_backend"])  # the file formats are the backends' common code
def test_importing_an_export_twice_adds_nothing(gallery_backend, tmp_path, suffix):
    source = synthetic_gallery(gallery_backend.location("source"), n_people=3, per=2)
    out = tmp_path / f"export{suffix}"
    assert facespace("gallery", "export", source, out).returncode == 0
    target = gallery_backend.location("target")
    first = facespace("gallery", "import", target, out)
    second = facespace("gallery", "import", target, out)
    assert first.returncode == second.returncode == 0, second.stderr
    assert rows(target) == 6
    assert "6 embeddings added, 0 duplicates skipped" in first.stdout
    assert "3 identities" in second.stdout and "0 embeddings added, 6 duplicates skipped" in second.stdout
    # back into the gallery it came from: the export carries each embedding's key, so nothing doubles
    home = facespace("gallery", "import", source, out)
    assert rows(source) == 6 and "0 embeddings added, 6 duplicates skipped" in home.stdout


def test_two_enrollers_at_once_store_each_image_once(gallery_backend, tmp_path):
    """Two real `gallery enroll` processes on one tree and one (not yet existing) gallery."""
    tree = tmp_path / "tree"
    expected = lfw_tree(tree, n_people=4, per=2)
    db = gallery_backend.location()
    command = [sys.executable, "-m", "facespace.cli.main", "gallery", "enroll", str(db), "--tree", str(tree),
               "--quiet", "--json"]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outputs]
    reports = [json.loads(out)["identities"] for out, _ in outputs]
    added = sum(r["added"] for report in reports for r in report)
    duplicates = sum(r["duplicates"] for report in reports for r in report)
    assert added == 8 and duplicates == 8  # each image stored by one of them, skipped by the other
    with open_gallery(db, mode="read") as g:
        assert {i.name: i.embeddings for i in g.identities()} == expected
        assert g.integrity_check() == []
    assert rows(db) == sum(expected.values())
    assert not list(tmp_path.glob(".g.db.*"))  # no temporary left by creating the gallery


# -- 1b. schema 2: migrating a version-1 gallery -------------------------------------------


def test_version_1_gallery_is_readable_read_only_and_unchanged(tmp_path):
    path = tmp_path / "v1.db"
    v1_gallery(path)
    before = fingerprint(path)
    with Gallery(path, mode="read") as g:
        assert [(i.name, i.embeddings) for i in g.identities()] == [("ann", 4), ("bob", 1)]
        assert len(g.matrix()) == 5 and g.integrity_check() == []
        g.export(tmp_path / "v1.json")  # keyed by vector on the way out
        with pytest.raises(GalleryError, match="read-only"):
            g.add_embeddings("carl", np.ones((1, 128), np.float32), **MODEL)
    assert fingerprint(path) == before
    exported = json.loads((tmp_path / "v1.json").read_text())
    assert all(len(e["hash"]) == 64 for p in exported["identities"] for e in p["embeddings"])
    assert facespace("gallery", "list", path).returncode == 0 and fingerprint(path) == before
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0] == "1"


def test_version_1_gallery_is_migrated_on_first_write_open(tmp_path):
    path = tmp_path / "v1.db"
    x = v1_gallery(path)
    with Gallery(path, mode="write") as g:
        assert g.generation == 8 and g.integrity_check() == []
        ids = g._conn.execute("SELECT id, source, content_hash FROM embeddings ORDER BY id").fetchall()
        assert ids == [(1, "a.jpg", vector_hash(x[0])), (2, "a2.jpg", vector_hash(x[1])),
                       (5, "b.jpg", vector_hash(x[2]))]  # of ann's three repeats the oldest stays
        assert g.store_embeddings("ann", x[:1], **MODEL).duplicates == 1  # and the key now holds
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0] == str(SCHEMA_VERSION)
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert "embeddings_content" in indexes


MIGRATE = "import sys; from facespace.gallery import Gallery; Gallery(sys.argv[1], mode='write')"


def test_failed_migration_leaves_the_version_1_gallery_as_it_was(tmp_path):
    """The migration is one transaction: a full disk halfway leaves schema 1, every row, no new column."""
    path = tmp_path / "v1.db"
    v1_gallery(path)
    with sqlite3.connect(path, isolation_level=None) as conn:  # enough rows that their rewrite overflows
        vectors = people(1, 300, seed=3)[0]
        conn.executemany("INSERT INTO embeddings (identity_id, vector, dim, source, created) VALUES (2, ?, 128, ?, 0)",
                         [(v.astype("<f4").tobytes(), f"x{i}.jpg") for i, v in enumerate(vectors)])

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (48 << 10, resource.RLIM_INFINITY))

    proc = subprocess.run([sys.executable, "-c", MIGRATE, str(path)], capture_output=True, text=True,
                          preexec_fn=limit, timeout=120)
    assert proc.returncode == 1 and "GalleryError" in proc.stderr and "rolled back" in proc.stderr
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0] == "1"
        assert "content_hash" not in [r[1] for r in conn.execute("PRAGMA table_info(embeddings)")]
        assert conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0] == 305
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# -- 2. files that are not galleries are left alone -------------------------------------------


@pytest.fixture()
def unrelated_db(tmp_path) -> Path:
    """Somebody else's SQLite database, in the default (rollback journal) mode."""
    path = tmp_path / "notes.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
        conn.executemany("INSERT INTO notes (text) VALUES (?)", [("buy milk",), ("call bob",)])
    conn.close()
    os.utime(path, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))  # an mtime a write would change
    return path


def gallery_commands(path: Path, tmp_path: Path) -> list[list]:
    export = tmp_path / "e.json"
    with Gallery(synthetic_gallery(tmp_path / "src.db"), mode="read") as g:
        g.export(export)
    image = LFW / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg"
    return [["gallery", "list", path], ["gallery", "list", path, "--json"],
            ["gallery", "export", path, tmp_path / "o.json"], ["identify", "-g", path, image],
            ["gallery", "remove", path, "x"], ["gallery", "rename", path, "a", "b"],
            ["gallery", "import", path, export], ["gallery", "enroll", path, image, "--name", "x"]]


def test_commands_refuse_an_unrelated_sqlite_database_unchanged(unrelated_db, tmp_path):
    before = fingerprint(unrelated_db)
    for command in gallery_commands(unrelated_db, tmp_path):
        one_error_line(facespace(*command), "not a facespace gallery")
        assert fingerprint(unrelated_db) == before, command
    with sqlite3.connect(unrelated_db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")] == ["notes"]
    conn.close()
    assert sorted(p.name for p in tmp_path.glob("notes.db*")) == ["notes.db"]  # no -wal, -shm, -journal
    for mode in GALLERY_MODES:
        with pytest.raises(GalleryError, match="not a facespace gallery"):
            Gallery(unrelated_db, mode=mode)
    with pytest.raises(GalleryError, match="not a facespace gallery"):
        Gallery(unrelated_db)  # the default, used by the server and the video command
    assert fingerprint(unrelated_db) == before


@pytest.mark.parametrize("content", [b"", b"just some notes\n" * 50, b"SQLite format 3\x00" + b"\x07" * 2000],
                         ids=["empty", "text", "bad-sqlite"])
def test_commands_refuse_a_file_that_is_no_gallery_unchanged(tmp_path, content):
    path = tmp_path / "g.db"
    path.write_bytes(content)
    os.utime(path, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    before = fingerprint(path)
    for command in gallery_commands(path, tmp_path):
        one_error_line(facespace(*command), "not a facespace gallery")
        assert fingerprint(path) == before, command
    assert sorted(p.name for p in tmp_path.glob("g.db*")) == ["g.db"]
    with pytest.raises(GalleryError, match="not a facespace gallery"):
        Gallery(path, mode="create")  # an existing empty file is refused, not turned into a gallery
    assert fingerprint(path) == before


def test_read_only_commands_change_nothing_and_create_nothing(tmp_path):
    path = synthetic_gallery(tmp_path / "g.db")
    before = fingerprint(path)
    for command in (["gallery", "list", path], ["gallery", "export", path, tmp_path / "out.npz"]):
        assert facespace(*command).returncode == 0
    assert fingerprint(path) == before
    missing = tmp_path / "missing.db"
    one_error_line(facespace("gallery", "list", missing), "no such gallery")
    one_error_line(facespace("identify", "-g", missing, tmp_path / "x.jpg"), "no such gallery")
    assert not missing.exists()
    with Gallery(path, mode="read") as g:
        assert g.read_only and len(g) == 3
        with pytest.raises(GalleryError, match="read-only"):
            g.remove("person0")
    with Gallery(tmp_path / "new" / "made.db") as g:  # the default still creates a missing gallery
        assert len(g) == 0
    with pytest.raises(GalleryError, match="no such gallery"):
        Gallery(tmp_path / "absent.db", mode="write")


# -- 3. outputs, inputs and arguments ---------------------------------------------------------


def unwritable_folder(tmp_path: Path) -> Path:
    if os.geteuid() == 0:  # root writes anywhere chmod allows; sysfs refuses even root
        return Path("/sys")
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    return folder


def test_export_to_a_bad_path_is_one_clear_error(tmp_path):
    path = synthetic_gallery(tmp_path / "g.db")
    (tmp_path / "folder.json").mkdir()
    (tmp_path / "file.txt").write_text("a file, not a folder")
    cases = {unwritable_folder(tmp_path) / "out.json": "cannot write the export",
             tmp_path / "folder.json": "is a folder",
             tmp_path / "file.txt" / "out.json": "cannot write the export",
             tmp_path / "out.csv": "export to .json or .npz"}
    for out, message in cases.items():
        one_error_line(facespace("gallery", "export", path, out), message)
        assert not list(out.parent.glob(f".{out.name}.*")) if out.parent.is_dir() else True
    made = facespace("gallery", "export", path, tmp_path / "new" / "folder" / "out.json")  # missing folders are made
    assert made.returncode == 0 and (tmp_path / "new" / "folder" / "out.json").is_file()


@pytest.mark.parametrize("suffix", [".json", ".npz"])
def test_export_on_a_full_disk_keeps_the_earlier_export(tmp_path, suffix):
    path = tmp_path / "g.db"
    x, _ = people(100, 3)
    with Gallery(path) as g:
        for i in range(100):
            g.add_embeddings(f"p{i:03d}", x[3 * i:3 * i + 3], **MODEL)
    out = tmp_path / f"out{suffix}"
    assert facespace("gallery", "export", path, out).returncode == 0
    earlier = fingerprint(out)
    assert earlier[1] > 96 << 10  # larger than the limit below
    one_error_line(facespace("gallery", "export", path, out, file_limit=64 << 10), "cannot write the export",
                   "the earlier file is unchanged")
    assert fingerprint(out) == earlier
    assert sorted(p.name for p in tmp_path.iterdir() if ".part" in p.name) == []
    fresh = tmp_path / f"fresh{suffix}"
    one_error_line(facespace("gallery", "export", path, fresh, file_limit=64 << 10), "nothing was written")
    assert not fresh.exists() and sorted(p.name for p in tmp_path.iterdir() if ".part" in p.name) == []


def corrupt_exports(folder: Path) -> dict[str, Path]:
    """One file for each way an import file can be broken."""
    folder.mkdir()
    with Gallery(synthetic_gallery(folder / "good.db"), mode="read") as g:
        g.export(folder / "good.json")
        g.export(folder / "good.npz")
    text = (folder / "good.json").read_text()
    files = {"junk.json": os.urandom(3000), "junk.npz": os.urandom(3000), "truncated.json": text[: len(text) // 2],
             "list.json": "[1, 2, 3]", "no-identities.json": json.dumps({"format": "facespace-gallery"})}
    data = json.loads(text)
    data["identities"][0]["embeddings"][0]["vector"] = ["a", "b"]
    files["bad-vector.json"] = json.dumps(data)
    data["identities"][0]["embeddings"][0]["vector"] = [0.0] * 128
    files["zero-vector.json"] = json.dumps(data)
    for name, content in files.items():
        (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    with np.load(folder / "good.npz") as npz:
        arrays = dict(npz)
    np.savez(folder / "missing-arrays.npz", vectors=arrays["vectors"])
    np.savez(folder / "short-names.npz", **{**arrays, "names": arrays["names"][:2]})
    np.savez(folder / "header-not-json.npz", **{**arrays, "header": np.arange(3)})
    np.savez(folder / "flat-vectors.npz", **{**arrays, "vectors": arrays["vectors"].ravel()})
    raw = folder / "array.npz"
    np.save(raw.with_suffix(".npy"), arrays["vectors"])
    raw.with_suffix(".npy").rename(raw)  # an .npy under an .npz name
    with open(folder / "cut.npz", "wb") as handle:
        handle.write((folder / "good.npz").read_bytes()[:700])
    return {p.name: p for p in sorted(folder.iterdir()) if not p.name.startswith("good")}


def test_a_corrupt_import_file_is_one_clear_error(tmp_path):
    files = corrupt_exports(tmp_path / "files")
    existing = synthetic_gallery(tmp_path / "existing.db")
    before = fingerprint(existing)
    for name, bad in files.items():
        one_error_line(facespace("gallery", "import", tmp_path / "new.db", bad), str(bad))
        assert not (tmp_path / "new.db").exists(), name  # refused before a gallery was made
        one_error_line(facespace("gallery", "import", existing, bad))
        assert fingerprint(existing) == before, name


IDENTIFY_ARGUMENTS = [("--far", "5"), ("--far", "0"), ("--far", "nan"), ("--far", "1"), ("--top", "0"),
                      ("--top", "-3"), ("--threshold", "inf"), ("--threshold", "nan"), ("--threshold", "-5")]


@pytest.mark.parametrize("option,value", IDENTIFY_ARGUMENTS)
def test_identify_refuses_bad_search_options_up_front(tmp_path, option, value):
    """Exit 2 with the option named, before any work: the gallery given does not even exist."""
    proc = facespace("identify", "-g", tmp_path / "missing.db", option, value, tmp_path / "x.jpg")
    line = one_error_line(proc, f"argument {option}", code=2)
    assert value in line and "no such gallery" not in proc.stderr


def test_enrolment_on_a_full_disk_is_one_clear_error_and_the_gallery_intact(tmp_path, pipeline):
    """`gallery enroll` whose SQLite writes fail (EFBIG under RLIMIT_FSIZE): one line, exit 1; the people
    committed before are whole and the one being written is not there at all."""
    tree = tmp_path / "tree"
    expected = lfw_tree(tree, n_people=10, per=2)
    db = tmp_path / "g.db"
    Gallery(db).close()
    proc = facespace("gallery", "enroll", db, "--tree", tree, "--quiet", file_limit=64 << 10)
    one_error_line(proc, str(db), "cannot write to the gallery", "rolled back")
    with Gallery(db, mode="read") as g:
        assert g.integrity_check() == []
        infos = g.identities()
        assert len(infos) < len(expected)
        assert [i.name for i in infos] == list(expected)[:len(infos)]
        assert all(i.embeddings == expected[i.name] for i in infos)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_migrated_gallery_does_not_take_the_same_photo_twice(tmp_path):
    """Migrated rows are keyed by their vectors, a new enrolment by the photo's hash: the same photo
    (the same vector) enrolled again after the upgrade is still a duplicate."""
    from facespace.gallery.records import content_hash

    path = tmp_path / "v1.db"
    vectors = v1_gallery(path)
    with Gallery(path, mode="write") as gallery:
        before = gallery.get("ann").embeddings
        stored = gallery.store_embeddings("ann", vectors[0:1], ["a.jpg"], model=MODEL["model"],
                                          preprocessing_id=MODEL["preprocessing_id"],
                                          hashes=[content_hash(b"the bytes of a.jpg")])
        assert (stored.added, stored.duplicates) == (0, 1)
        assert gallery.get("ann").embeddings == before and gallery.integrity_check() == []


@pytest.mark.parametrize("shape", ["wal", "meta-only"])
def test_foreign_databases_keep_their_journal_and_get_no_side_files(tmp_path, shape):
    """A foreign WAL database got -wal/-shm files from the refusing probe; one with a facespace-like
    meta table had its journal switched to WAL before the refusal."""
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    if shape == "wal":
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE notes (text TEXT)")
    else:
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
        conn.execute("INSERT INTO meta VALUES ('schema', '1')")
    conn.commit()
    conn.close()
    journal = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True).execute("PRAGMA journal_mode").fetchone()
    before = fingerprint(path), sorted(p.name for p in tmp_path.iterdir())
    for mode in ("read", "write", "create"):
        with pytest.raises(GalleryError, match="not a facespace gallery"):
            Gallery(path, mode=mode)
    assert (fingerprint(path), sorted(p.name for p in tmp_path.iterdir())) == before
    assert sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True).execute("PRAGMA journal_mode").fetchone() == journal
