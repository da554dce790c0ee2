"""Files: atomic writes, checksums and which files count as images.

Every file facespace writes (weights, converted caches, ONNX graphs, shards of
the evaluation cache, exports, checkpoints, aligned crops) goes through
:func:`atomic_path`, so a crash or a full disk never leaves a half-written
file under the final name, and concurrent writers never share a temporary.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["IMAGE_SUFFIXES", "atomic_path", "atomic_write_bytes", "sha256_of", "is_image_file", "image_files",
           "manifest_path", "write_manifest", "has_valid_manifest"]

#: File name endings read as images when a folder is scanned (lower case).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})

_CHUNK = 1 << 20


@contextmanager
def atomic_path(path: str | os.PathLike, mkdir: bool = True) -> Iterator[Path]:
    """A fresh temporary path beside ``path``: write it inside the block, and it replaces ``path``
    when the block ends without error (it is removed otherwise).

    The temporary name starts with a dot and keeps the suffix (``.x.npz.<id>.part.npz``), so
    writers that insist on an extension work and folder globs (``shard-*.npz``) never see it.
    """
    path = Path(path)
    if mkdir:
        path.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}.part{path.suffix}"
    stem = path.name if len(os.fsencode(path.name)) <= 200 else hashlib.sha1(os.fsencode(path.name)).hexdigest()
    tmp = path.with_name(f".{stem}.{tag}")  # a legal name stays legal with the tag added
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_path(path: str | os.PathLike) -> Path:
    """The sidecar that records what a derived file (a converted or exported cache) was made from."""
    path = Path(path)
    return path.with_name(path.name + ".manifest.json")


def _stamp(path: Path) -> list[int]:
    """What changes whenever a file's bytes can have changed: size, modification and status-change
    times (the latter cannot be set back by a user) and inode (a replaced file)."""
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def write_manifest(path: str | os.PathLike, sources: dict) -> None:
    """Record the sha256 of ``path`` itself and ``sources`` (what it was made from) beside it,
    with the file's :func:`_stamp` at the time it was hashed.

    Written after the file, so a crash in between leaves a file without a manifest: not trusted.
    """
    path = Path(path)
    record = {"sha256": sha256_of(path), "sources": sources, "stat": _stamp(path)}
    atomic_write_bytes(manifest_path(path), json.dumps(record, sort_keys=True, indent=1).encode())


def has_valid_manifest(path: str | os.PathLike, sources: dict) -> bool:
    """True when ``path`` exists, its manifest names the same ``sources`` and its bytes still
    have the recorded sha256 (so a truncated, overwritten or tampered cache is never used).

    The bytes are hashed again only when the file's stamp (size, times, inode) differs from the
    one recorded when they were last hashed: any write to the file changes it, and hashing a
    91 MB graph on every start cost 0.2 s of a 1.5 s cold start. A file that hashes right under
    a new stamp gets the new stamp recorded (where the cache can be written).
    """
    path = Path(path)
    try:
        record = json.loads(manifest_path(path).read_text())
        if not path.is_file() or record.get("sources") != json.loads(json.dumps(sources)):
            return False
        stamp = _stamp(path)
        if record.get("stat") == stamp:
            return True
        if record.get("sha256") != sha256_of(path):
            return False
    except (OSError, ValueError, AttributeError):
        return False
    try:  # remember that these bytes were checked; a read-only cache just hashes again next time
        atomic_write_bytes(manifest_path(path), json.dumps({**record, "stat": stamp}, sort_keys=True,
                                                           indent=1).encode())
    except OSError:
        pass
    return True


def is_image_file(path: Path) -> bool:
    """A regular file whose name ends in one of :data:`IMAGE_SUFFIXES` (hidden files are not)."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") and path.is_file()


def image_files(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """The image files under ``folder`` (recursively by default), sorted."""
    folder = Path(folder)
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if is_image_file(p))
