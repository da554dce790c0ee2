"""Identity thumbnails (gallery schema 3): stored, renamed and removed with the identity, made at
enrolment from the face of the first usable photo; schema-2 galleries still open and migrate."""

from __future__ import annotations

import io
import sqlite3

import numpy as np
import pytest
from PIL import Image

from conftest import lfw_image
from facespace.gallery import Gallery
from facespace.gallery.schema import SCHEMA_VERSION
from facespace.gallery.store import GalleryError, UnknownIdentityError
from facespace.thumbnails import THUMBNAIL_SIZE, face_thumbnail, thumbnail_jpeg
from test_gallery_reliability import MODEL, fingerprint, v1_gallery


def jpeg(colour: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (colour, 0, 0)).save(out, format="JPEG")
    return out.getvalue()


def test_thumbnail_goes_with_its_identity(tmp_path):
    with Gallery(tmp_path / "g.db") as g:
        g.add_embeddings("ann", np.eye(2, 128, dtype=np.float32), **MODEL)
        g.add_embeddings("bob", np.eye(1, 128, 5, dtype=np.float32), **MODEL)
        assert g.thumbnail("ann") is None
        with pytest.raises(UnknownIdentityError):
            g.thumbnail("nobody")
        generation = g.generation
        g.put_thumbnail("ann", jpeg(10))
        g.put_thumbnail("ann", jpeg(200))  # replaced, not added
        g.put_thumbnail("bob", jpeg(90))
        assert g.thumbnail("ann") == jpeg(200) and g.generation == generation  # pictures are no embeddings
        with pytest.raises(UnknownIdentityError):
            g.put_thumbnail("nobody", jpeg(1))
        with pytest.raises(GalleryError):
            g.put_thumbnail("ann", b"")
        g.rename("ann", "anne")
        assert g.thumbnail("anne") == jpeg(200)
        with pytest.raises(UnknownIdentityError):  # the old name is gone, with its picture
            g.thumbnail("ann")
        g.remove("anne")
        assert g._conn.execute("SELECT COUNT(*) FROM thumbnails").fetchone()[0] == 1  # bob's only
        g.add_embeddings("anne", np.eye(1, 128, 9, dtype=np.float32), **MODEL)
        assert g.thumbnail("anne") is None and g.thumbnail("bob") == jpeg(90) and g.integrity_check() == []


def schema_2_gallery(path) -> None:
    """A gallery as schema 2 left it: today's tables but ``thumbnails``, schema row 2."""
    with Gallery(path) as g:
        g.add_embeddings("ann", np.eye(1, 128, dtype=np.float32), **MODEL)
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE thumbnails")
        conn.execute("UPDATE meta SET value='2' WHERE key='schema'")


def test_schema_2_gallery_reads_unchanged_and_migrates_on_write(tmp_path):
    path = tmp_path / "v2.db"
    schema_2_gallery(path)
    before = fingerprint(path)
    with Gallery(path, mode="read") as g:
        assert g.thumbnail("ann") is None and [i.name for i in g.identities()] == ["ann"]
    assert fingerprint(path) == before
    with Gallery(path, mode="write") as g:
        g.put_thumbnail("ann", jpeg(50))
        assert g.thumbnail("ann") == jpeg(50) and g.get("ann").embeddings == 1
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0] == str(SCHEMA_VERSION) == "3"
    v1 = tmp_path / "v1.db"  # schema 1 goes all the way up
    v1_gallery(v1)
    with Gallery(v1, mode="write") as g:
        g.put_thumbnail("bob", jpeg(7))
        assert g.thumbnail("bob") == jpeg(7) and g.integrity_check() == []


def test_enrolment_stores_the_first_usable_face_as_thumbnail(tmp_path, pipeline, bad_inputs):
    photos = [bad_inputs["text"], lfw_image("Colin_Powell", 1), lfw_image("Colin_Powell", 2)]
    with Gallery(tmp_path / "g.db") as g:
        result = g.enroll_images(pipeline, "Colin Powell", photos)
        assert result.added == 2 and len(result.skipped) == 1
        stored = Image.open(io.BytesIO(g.thumbnail("Colin Powell")))
        assert stored.format == "JPEG" and stored.size == (THUMBNAIL_SIZE, THUMBNAIL_SIZE)
        face = pipeline.detect(lfw_image("Colin_Powell", 1))[0]
        expected = np.asarray(face_thumbnail(pipeline.load(lfw_image("Colin_Powell", 1)), face.box), float)
        assert np.abs(np.asarray(stored, float) - expected).mean() < 6  # that face, JPEG-close
        first = g.thumbnail("Colin Powell")
        g.enroll_images(pipeline, "Colin Powell", [lfw_image("Colin_Powell", 3)])
        assert g.thumbnail("Colin Powell") == first  # kept while the identity has one
        g.enroll_images(pipeline, "Colin Powell", [lfw_image("Colin_Powell", 3)], replace=True)
        assert g.thumbnail("Colin Powell") != first  # new photos, new picture


def test_face_thumbnail_at_the_border_keeps_its_square():
    image = np.full((100, 100, 3), 200, np.uint8)
    small = face_thumbnail(image, [80, 80, 120, 120], size=32)  # half outside the image
    assert small.size == (32, 32) and np.asarray(small)[0, 0].tolist() == [200, 200, 200]
    assert np.asarray(small)[-1, -1].tolist() == [0, 0, 0]
    assert Image.open(io.BytesIO(thumbnail_jpeg(image, [10, 10, 50, 60]))).size == (96, 96)
