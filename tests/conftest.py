"""Shared fixtures: the real data in ../shared/data and one pipeline per session."""

from __future__ import annotations

import os
import struct
import uuid
import zlib
from pathlib import Path

import pytest

from shared_data import DATA, REPO

LFW = DATA / "lfw" / "lfw-deepfunneled"
PHOTOS = DATA / "photos"


def pytest_sessionstart(session) -> None:
    """The tests run on real data; without it, say where it should be instead of 50 tracebacks."""
    if not (DATA / "lfw").is_dir():
        pytest.exit(f"facespace tests need the shared data at {DATA} (clone the repository beside "
                    "../shared, or set FACESPACE_TEST_DATA to the data folder)", returncode=4)


def lfw_image(name: str, number: int) -> Path:
    return LFW / name / f"{name}_{number:04d}.jpg"


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but carries almost no data (a bomb stand-in)."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.fail(f"test data not found at {DATA}: the tests need ../shared/data beside the repository")
    return DATA


@pytest.fixture(scope="session")
def pipeline():
    from facespace import FacePipeline

    return FacePipeline()


@pytest.fixture()
def bad_inputs(tmp_path: Path) -> dict[str, Path]:
    """One file for each kind of bad input the pipeline must refuse clearly."""
    good = lfw_image("Aaron_Peirsol", 1).read_bytes()
    files = {
        "missing": tmp_path / "does_not_exist.jpg",
        "empty": tmp_path / "empty.jpg",
        "text": tmp_path / "notes.jpg",
        "truncated": tmp_path / "truncated.jpg",
        "bomb": tmp_path / "bomb.png",
    }
    files["empty"].write_bytes(b"")
    files["text"].write_text("this is not an image\n" * 20)
    files["truncated"].write_bytes(good[: len(good) // 3])
    files["bomb"].write_bytes(png_header_only(20000, 20000))
    return files


os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture(scope="session")
def compat_maps(tmp_path_factory):
    """The compatibility maps between the two embedders, fitted once per run on the first 60
    celeba-299 identities (maps are fitted data, not repository files) into a private store that
    ``$FACESPACE_COMPAT_DIR`` names for the session, subprocesses included."""
    from facespace_train.compat_fit import fit_all

    folder = tmp_path_factory.mktemp("compat")
    fit_all(DATA / "celeba-299" / "faces", identities=60, folder=folder)
    before = os.environ.get("FACESPACE_COMPAT_DIR")
    os.environ["FACESPACE_COMPAT_DIR"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("FACESPACE_COMPAT_DIR", None)
    else:
        os.environ["FACESPACE_COMPAT_DIR"] = before


# -- gallery backends: SQLite files, and a real PostgreSQL with pgvector on loopback ------------------


@pytest.fixture(scope="session")
def postgres():
    """One PostgreSQL cluster for the session (:class:`pg.LocalPostgres`, 127.0.0.1, a free port);
    skipped, with the reason, only when the server cannot start here."""
    from pg import LocalPostgres, PostgresUnavailable

    try:
        server = LocalPostgres().start()
    except PostgresUnavailable as exc:
        pytest.skip(f"PostgreSQL with pgvector could not start: {exc}")
    yield server
    server.stop()


class GalleryPlaces:
    """Fresh gallery locations of one backend for one test: ``location(name)`` is a file in the test's
    folder (sqlite) or a new, empty database (postgresql), the same one for the same name."""

    def __init__(self, kind: str, folder: Path, server=None) -> None:
        self.kind, self.folder, self.server, self._made = kind, folder, server, {}

    def location(self, name: str = "g") -> str:
        if name not in self._made:
            if self.kind == "sqlite":
                self._made[name] = str(self.folder / f"{name}.db")
            else:
                self._made[name] = self.server.create_database(f"t_{uuid.uuid4().hex[:16]}")
        return self._made[name]

    def open(self, name: str = "g", mode: str = "create", **options):
        from facespace.gallery import open_gallery

        return open_gallery(self.location(name), mode=mode, **options)


@pytest.fixture(params=["sqlite", "postgresql"])
def gallery_backend(request, tmp_path) -> GalleryPlaces:
    """The gallery suite runs once per backend: SQLite files, and databases on a real PostgreSQL."""
    server = request.getfixturevalue("postgres") if request.param == "postgresql" else None
    return GalleryPlaces(request.param, tmp_path, server)
