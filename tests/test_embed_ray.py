"""Batch embedding into Parquet datasets: a real local Ray (2 CPUs) against the in-process engine,
over real LFW photos and one corrupt file; resuming, the errors file, and the dataset read by
``gallery import``, ``cluster`` and ``identify``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from shared_data import DATA, REPO

pytest.importorskip("ray")
pytest.importorskip("pyarrow")

from facespace.batch import embed_dataset  # noqa: E402
from facespace.embeddings_io import ERRORS_FILE, done_inputs, read_embeddings  # noqa: E402

LFW = DATA / "lfw" / "lfw-deepfunneled"
PEOPLE = {"Aaron_Peirsol": 4, "Abdullah_Gul": 6, "Adam_Sandler": 4, "Alec_Baldwin": 4, "Alvaro_Uribe": 3}


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "facespace.cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """21 real LFW photos of 5 people in person folders, and one truncated JPEG."""
    if not LFW.is_dir():
        pytest.skip(f"LFW not found at {LFW}")
    root = tmp_path_factory.mktemp("photos")
    for person, count in PEOPLE.items():
        (root / person).mkdir()
        for src in sorted((LFW / person).glob("*.jpg"))[:count]:
            shutil.copy(src, root / person / src.name)
    good = next((root / "Adam_Sandler").iterdir())
    (root / "Adam_Sandler" / "Adam_Sandler_broken.jpg").write_bytes(good.read_bytes()[:2500])
    return root


@pytest.fixture(scope="module")
def local_dataset(photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "emb"
    report = embed_dataset([photos], out, {}, engine="local", part_images=8)
    return out, report


@pytest.fixture(scope="module")
def ray_dataset(photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("ray") / "emb"
    run = cli("embed", str(photos), "--engine", "ray", "--workers", "2", "--out", str(out), "--quiet")
    return out, run


def _by_key(table) -> dict:
    return {(p, int(i)): e for p, i, e in zip(table.paths, table.face_index, table.embeddings)}


def test_ray_rows_equal_the_local_engine(local_dataset, ray_dataset):
    (local, report), (ray_out, run) = local_dataset, ray_dataset
    assert run.returncode == 1, run.stderr  # one unreadable image: reported, not fatal
    assert "Adam_Sandler_broken.jpg" in run.stderr and "Traceback" not in run.stderr
    a, b = read_embeddings(local), read_embeddings(ray_out)
    assert report.inputs == 22 and report.embedded == 21 and len(report.errors) == 1
    assert len(a) >= 21 and (a.model, a.preprocessing_id) == (b.model, b.preprocessing_id)
    ka, kb = _by_key(a), _by_key(b)
    assert set(ka) == set(kb)
    assert max(float(np.abs(ka[k] - kb[k]).max()) for k in ka) < 1e-4
    assert np.allclose(np.linalg.norm(a.embeddings, axis=1), 1, atol=1e-5)
    assert len(set(a.paths)) == 21 and all(len(s) == 64 for s in a.sha256)


def test_errors_file_lists_the_corrupt_image(ray_dataset):
    out, _ = ray_dataset
    lines = [json.loads(line) for line in (out / ERRORS_FILE).read_text().splitlines()]
    assert [os.path.basename(e["path"]) for e in lines] == ["Adam_Sandler_broken.jpg"]
    assert "truncated" in lines[0]["error"] or "corrupt" in lines[0]["error"]


def test_resume_skips_finished_images(photos, local_dataset, ray_dataset, tmp_path):
    """A run that lost its last part (as if killed while writing it) redoes only that part's images."""
    local, _ = local_dataset
    out = tmp_path / "emb"
    shutil.copytree(local, out)
    parts = sorted(out.glob("part-*.parquet"))
    assert len(parts) >= 2  # 22 inputs, a part closed once it holds 8 (at a batch's end)
    lost, _ = done_inputs(parts[-1])
    parts[-1].unlink()
    again = embed_dataset([photos], out, {}, part_images=8)
    assert again.skipped == 22 - len(lost) and again.embedded + len(again.errors) - again.previous_errors == len(lost)
    assert _by_key(read_embeddings(out)).keys() == _by_key(read_embeddings(local)).keys()
    ray_out, _ = ray_dataset
    parts = sorted(ray_out.glob("part-*.parquet"))
    rerun = cli("embed", str(photos), "--engine", "ray", "--out", str(ray_out), "--quiet")
    assert "0 image(s) embedded now" in rerun.stderr and "22 done before" in rerun.stderr, rerun.stderr
    assert sorted(ray_out.glob("part-*.parquet")) == parts


def test_dataset_imports_clusters_and_identifies(ray_dataset, tmp_path):
    out, _ = ray_dataset
    gallery = tmp_path / "g.db"
    run = cli("gallery", "import", str(gallery), str(out))
    assert run.returncode == 0, run.stderr
    assert "5 identities" in run.stdout and "21 embeddings added" in run.stdout
    assert "0 embeddings added" in cli("gallery", "import", str(gallery), str(out)).stdout  # idempotent
    listed = cli("gallery", "list", str(gallery)).stdout
    assert all(f"{person}\t{count}" in listed for person, count in PEOPLE.items())

    clustered = cli("cluster", str(out), "--out", str(tmp_path / "clusters"))
    assert clustered.returncode == 0, clustered.stderr
    report = json.loads((tmp_path / "clusters" / "clusters.json").read_text())
    assert report["faces"] == len(read_embeddings(out)) and report["images"] == 21
    assert 4 <= len(report["clusters"]) <= 10  # five people, and a few stray background faces

    found = cli("identify", "--embeddings", str(out), "-g", str(gallery), "--json")
    assert found.returncode == 0, found.stderr
    lines = [json.loads(line) for line in found.stdout.splitlines()]
    assert len(lines) == 21
    assert all(any(face["identity"] == os.path.basename(os.path.dirname(line["image"])) for face in line["faces"])
               for line in lines)


def test_bad_dataset_and_options_are_refused(tmp_path, photos):
    (tmp_path / "part-000000-x.parquet").write_bytes(b"not parquet")
    run = cli("gallery", "import", str(tmp_path / "g.db"), str(tmp_path))
    assert run.returncode != 0 and "Traceback" not in run.stderr
    run = cli("embed", str(photos), "--engine", "ray", "--out", str(tmp_path / "x.npz"))
    assert run.returncode != 0 and "Parquet dataset" in run.stderr
