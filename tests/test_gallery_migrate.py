"""Migrating a gallery to another model, and identifying across model versions: real SQLite galleries,
real weights, real LFW photos, the real CLI in subprocesses and a real uvicorn server."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import lfw_image
from facespace.gallery import Gallery, Identifier
from facespace.gallery.migrate import migrate_gallery
from facespace.gallery.records import GalleryError

pytestmark = pytest.mark.usefixtures("compat_maps")  # the maps are fitted per run: see conftest

OLD_MODEL, NEW_MODEL = "facenet-casia-512", "facenet-msceleb-128"
PEOPLE = ("Colin_Powell", "Gerhard_Schroeder", "Tony_Blair")


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "facespace.cli.main", *args], capture_output=True, text=True,
                          timeout=600)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """3 people x 2 photos, copied (so their recorded sources are ours)."""
    root = tmp_path_factory.mktemp("people")
    for person in PEOPLE:
        (root / person).mkdir()
        for n in (1, 2):
            shutil.copy(lfw_image(person, n), root / person)
    return root


@pytest.fixture(scope="module")
def old_db(tree, tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("old") / "people.db"
    cli("gallery", "enroll", str(db), "--tree", str(tree), "--model", OLD_MODEL, "--quiet")
    return db


@pytest.fixture(scope="module")
def migrated(old_db) -> tuple[Path, subprocess.CompletedProcess, str]:
    before = sha(old_db)
    done = cli("gallery", "migrate", str(old_db), "--to", NEW_MODEL)
    return old_db.with_name(f"people.{NEW_MODEL}.db"), done, before


def test_migrate_through_map_records_model_and_counts(migrated, old_db, pipeline):
    new_db, done, before = migrated
    assert sha(old_db) == before  # the old gallery is untouched
    assert "migrated 3 identities (6 embeddings)" in done.stdout and "through map" in done.stdout
    with Gallery(new_db, mode="read") as g:
        assert g.model == NEW_MODEL and g.preprocessing_id == pipeline.preprocessing_id and g.dim == 128
        assert [(i.name, i.embeddings) for i in g.identities()] == [(p, 2) for p in PEOPLE]
        assert g.integrity_check() == []
    with Gallery(old_db, mode="read") as g:
        assert g.model == OLD_MODEL and g.dim == 512


def test_migrated_gallery_identifies_a_third_photo(migrated, pipeline):
    with Gallery(migrated[0], mode="read") as g:
        identifier = Identifier.for_pipeline(g, pipeline)
    assert identifier.map_name is None
    probe = pipeline.embed(lfw_image("Tony_Blair", 3))[0].embedding
    assert identifier.search(probe)[0].identity == "Tony_Blair"


def test_migrate_refuses_an_existing_out(migrated, old_db):
    done = cli("gallery", "migrate", str(old_db), "--to", NEW_MODEL, "--out", str(migrated[0]), check=False)
    assert done.returncode == 1 and "already exists" in done.stderr
    with pytest.raises(GalleryError):
        migrate_gallery(old_db, migrated[0], NEW_MODEL)


def test_re_embed_equals_a_direct_enrolment(old_db, tree, tmp_path, pipeline):
    result = migrate_gallery(old_db, tmp_path / "re.db", NEW_MODEL, pipeline=pipeline)
    assert (result.re_embedded, result.mapped, result.identities, result.embeddings) == (3, 0, 3, 6)
    with Gallery(tmp_path / "direct.db") as direct:
        direct.enroll_tree(pipeline, tree)
    with Gallery(tmp_path / "re.db", mode="read") as re_embedded, Gallery(tmp_path / "direct.db", mode="read") as d:
        assert re_embedded.preprocessing_id == d.preprocessing_id
        for person in PEOPLE:
            np.testing.assert_allclose(re_embedded.embeddings_of(person)[0], d.embeddings_of(person)[0], atol=1e-5)


def test_kill_9_mid_migration_leaves_old_intact_and_no_new(old_db, tmp_path):
    before, new_db = sha(old_db), tmp_path / "new.db"
    proc = subprocess.Popen([sys.executable, "-m", "facespace.cli.main", "gallery", "migrate", str(old_db),
                             "--to", NEW_MODEL, "--out", str(new_db), "--re-embed"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list(tmp_path.glob(".new.db.*")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # the temporary gallery exists; the photos are being embedded
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL, "the migration finished before it could be killed"
    assert sha(old_db) == before and not new_db.exists()


def test_identify_across_versions_through_the_cli(old_db):
    photo = str(lfw_image("Tony_Blair", 3))
    text = cli("identify", "-g", str(old_db), "--model", NEW_MODEL, photo)
    assert f"gallery of {OLD_MODEL} searched through map" in text.stdout and "Tony_Blair" in text.stdout
    line = json.loads(cli("identify", "-g", str(old_db), "--model", NEW_MODEL, photo, "--json").stdout)
    assert line["map"].startswith(f"{OLD_MODEL}-to-{NEW_MODEL}")
    assert line["faces"][0]["identity"] == "Tony_Blair"


@pytest.fixture(scope="module")
def forged_db(old_db, tmp_path_factory) -> Path:
    """A copy of the old gallery whose model no map knows."""
    db = tmp_path_factory.mktemp("forged") / "forged.db"
    shutil.copy(old_db, db)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET value='facenet-unknown' WHERE key='model'")
    conn.close()
    return db


def test_identify_without_a_map_is_refused(forged_db):
    done = cli("identify", "-g", str(forged_db), "--model", NEW_MODEL, str(lfw_image("Tony_Blair", 3)), check=False)
    assert done.returncode == 1 and "facenet-unknown" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "map" not in done.stdout


def test_identify_across_versions_through_the_server(old_db, forged_db, tmp_path):
    httpx = pytest.importorskip("httpx")
    from test_server import running_server

    upload = {"image": ("t.jpg", lfw_image("Tony_Blair", 3).read_bytes(), "image/jpeg")}
    with running_server(tmp_path, "--gallery", str(old_db)) as (base, _, _):
        body = httpx.post(base + "/api/identify", files=upload, timeout=120).json()
    assert body["map"].startswith(f"{OLD_MODEL}-to-{NEW_MODEL}") and body["faces"][0]["identity"] == "Tony_Blair"
    with running_server(tmp_path, "--gallery", str(forged_db)) as (base, _, _):
        refused = httpx.post(base + "/api/identify", files=upload, timeout=120)
    assert refused.status_code == 409 and refused.json()["error"]["type"] == "model_mismatch"


# -- maps fitted for another crop, int8 galleries --------------------------------------------------
def _stale_store(folder: Path, crop_id: str) -> Path:
    """A map store holding the session's old->new ridge map relabelled as fitted on new-model embeddings
    of another crop (what maps fitted before the default crop changed look like)."""
    from dataclasses import replace

    from facespace.compat import find_map, save_map

    ridge = find_map(OLD_MODEL, NEW_MODEL, kind="ridge")
    save_map(replace(ridge, target_preprocessing=crop_id), folder)
    return folder


def test_migrate_refuses_a_map_fitted_for_another_crop(old_db, tmp_path, pipeline):
    from facespace.compat import load_map
    from facespace.pipeline import FacePipeline

    align_id = FacePipeline(model=NEW_MODEL, align="align").preprocessing_id
    assert align_id != pipeline.preprocessing_id  # today's default crop is not the one the stale map knows
    store = _stale_store(tmp_path / "stale", align_id)
    env = {**os.environ, "FACESPACE_COMPAT_DIR": str(store)}
    done = subprocess.run([sys.executable, "-m", "facespace.cli.main", "gallery", "migrate", str(old_db), "--to",
                           NEW_MODEL, "--out", str(tmp_path / "new.db")], capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 1 and "fit-maps" in done.stderr and "align=align" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "new.db").exists()
    stale = load_map(f"{OLD_MODEL}-to-{NEW_MODEL}-ridge", store)
    with pytest.raises(GalleryError, match="fitted on"):
        migrate_gallery(old_db, tmp_path / "api.db", NEW_MODEL, compat_map=stale,
                        target_preprocessing=pipeline.preprocessing_id)
    # asked for that crop explicitly, the map fits and the new gallery records it
    result = migrate_gallery(old_db, tmp_path / "align.db", NEW_MODEL, compat_map=stale, target_preprocessing=align_id)
    with Gallery(tmp_path / "align.db", mode="read") as g:
        assert result.preprocessing_id == g.preprocessing_id == align_id


@pytest.fixture(scope="module")
def int8_db(tree, tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("int8") / "people.db"
    cli("gallery", "enroll", str(db), "--tree", str(tree), "--model", NEW_MODEL, "--quantize", "int8", "--quiet")
    return db


def test_int8_gallery_round_trip(int8_db, tree, tmp_path, pipeline):
    float_db = tmp_path / "float.db"
    cli("gallery", "enroll", str(float_db), "--tree", str(tree), "--model", NEW_MODEL, "--quiet")
    with sqlite3.connect(int8_db) as conn:
        sizes = {r[0] for r in conn.execute("SELECT length(vector) FROM embeddings")}
    conn.close()
    assert sizes == {128}  # 128 bytes a face
    with Gallery(int8_db, mode="read") as q, Gallery(float_db, mode="read") as f:
        assert (q.encoding, f.encoding) == ("int8", "float32")
        assert q.model == f.model and q.preprocessing_id == f.preprocessing_id == pipeline.preprocessing_id
        assert q.integrity_check() == []
        cosine = np.sum(q.matrix().vectors * f.matrix().vectors, axis=1)
        assert cosine.min() > 0.999 and not np.array_equal(q.matrix().vectors, f.matrix().vectors)
    listing = json.loads(cli("gallery", "list", str(int8_db), "--json").stdout)
    assert listing["encoding"] == "int8"
    text = cli("identify", "-g", str(int8_db), str(lfw_image("Tony_Blair", 3)), "--json").stdout
    assert json.loads(text)["faces"][0]["identity"] == "Tony_Blair"
    # export -> import keeps the codes exactly; a float gallery refuses them, and the reverse
    cli("gallery", "export", str(int8_db), str(tmp_path / "q.npz"))
    cli("gallery", "enroll", str(tmp_path / "q2.db"), str(lfw_image("Colin_Powell", 3)), "--name", "Colin_Powell",
        "--model", NEW_MODEL, "--quantize", "int8", "--quiet")
    cli("gallery", "import", str(tmp_path / "q2.db"), str(tmp_path / "q.npz"))
    with Gallery(int8_db, mode="read") as q, Gallery(tmp_path / "q2.db", mode="read") as q2:
        for person in PEOPLE:
            np.testing.assert_array_equal(q.embeddings_of(person)[0], q2.embeddings_of(person)[0][-2:])
    refused = cli("gallery", "import", str(float_db), str(tmp_path / "q.npz"), check=False)
    assert refused.returncode == 1 and "int8" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    mixed = cli("gallery", "enroll", str(float_db), str(lfw_image("Colin_Powell", 3)), "--name", "Colin_Powell",
                "--model", NEW_MODEL, "--quantize", "int8", "--quiet", check=False)
    assert mixed.returncode == 1 and "float32" in mixed.stderr
    with Gallery(float_db, mode="read") as f:
        assert f.encoding == "float32" and f.get("Colin_Powell").embeddings == 2  # nothing was added


def test_int8_old_gallery_migrates_into_an_int8_gallery(tree, tmp_path, pipeline):
    old = tmp_path / "old8.db"
    cli("gallery", "enroll", str(old), "--tree", str(tree), "--model", OLD_MODEL, "--quantize", "int8", "--quiet")
    done = json.loads(cli("gallery", "migrate", str(old), "--to", NEW_MODEL, "--json").stdout)
    assert (done["identities"], done["embeddings"], done["mapped"]) == (3, 6, 3)
    with Gallery(done["path"], mode="read") as g:
        assert g.encoding == "int8" and g.model == NEW_MODEL and g.preprocessing_id == pipeline.preprocessing_id
        identifier = Identifier.for_pipeline(g, pipeline)
    assert identifier.search(pipeline.embed(lfw_image("Tony_Blair", 3))[0].embedding)[0].identity == "Tony_Blair"


def test_postgresql_refuses_int8(postgres):
    from facespace.gallery import open_gallery

    url = postgres.create_database("t_int8_refused")
    with pytest.raises(GalleryError, match="float32"):
        open_gallery(url, mode="create", encoding="int8")
