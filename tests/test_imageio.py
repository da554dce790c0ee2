"""Every supported input form decodes to RGB uint8; every bad one fails clearly."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from facespace.errors import ImageLoadError, ImageTooLargeError
from facespace.imageio import load_image

from conftest import lfw_image


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    return np.asarray(Image.open(lfw_image("Aaron_Peirsol", 1)).convert("RGB"))


def test_path_bytes_array_and_pil_agree(rgb):
    path = lfw_image("Aaron_Peirsol", 1)
    assert np.array_equal(load_image(path), rgb)
    assert np.array_equal(load_image(str(path)), rgb)
    assert np.array_equal(load_image(path.read_bytes()), rgb)
    assert np.array_equal(load_image(rgb), rgb)
    assert np.array_equal(load_image(Image.fromarray(rgb)), rgb)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "1"])
def test_modes_become_rgb(rgb, mode):
    if mode == "I;16":
        grey = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.uint16) * 257
        image = Image.fromarray(grey)
        assert image.mode.startswith("I;16")
    else:
        image = Image.fromarray(rgb).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="TIFF" if mode in ("CMYK", "I;16") else "PNG")
    out = load_image(buffer.getvalue())
    assert out.dtype == np.uint8 and out.shape == rgb.shape
    # every mode keeps the picture: close to the original's brightness
    assert abs(float(out.mean()) - float(rgb.mean())) < 40


def test_sixteen_bit_keeps_range(rgb):
    grey = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.uint16) * 257
    out = load_image(grey)
    assert np.array_equal(out[:, :, 0], (grey >> 8).astype(np.uint8))


def test_exif_orientation_is_honoured(rgb):
    image = Image.fromarray(rgb[:, :200])  # 250 high, 200 wide
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes())
    out = load_image(buffer.getvalue())
    assert out.shape[:2] == (200, 250)


def test_transparent_pixels_become_white():
    rgba = np.zeros((10, 10, 4), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buffer, format="PNG")
    assert (load_image(buffer.getvalue()) == 255).all()


@pytest.mark.parametrize("kind,message", [
    ("missing", "no such file"),
    ("empty", "empty file"),
    ("text", "not an image"),
    ("truncated", "truncated"),
])
def test_bad_files_raise_clear_errors(bad_inputs, kind, message):
    with pytest.raises(ImageLoadError, match=message):
        load_image(bad_inputs[kind])


def test_decompression_bomb_is_refused_before_decoding(bad_inputs):
    with pytest.raises(ImageTooLargeError, match="20000x20000"):
        load_image(bad_inputs["bomb"])


def test_bad_arrays_and_types():
    with pytest.raises(ImageLoadError):
        load_image(np.zeros((5, 5, 7), dtype=np.uint8))
    with pytest.raises(ImageLoadError):
        load_image(np.full((4, 4), np.nan))
    with pytest.raises(ImageLoadError):
        load_image(12345)  # type: ignore[arg-type]
    with pytest.raises(ImageLoadError, match="0 bytes"):
        load_image(b"")


def test_pillow_bomb_guard_is_left_alone(bad_inputs):
    """Importing facespace must not switch off Pillow's decompression-bomb guard for the application."""
    import subprocess
    import sys

    code = ("from PIL import Image; before = Image.MAX_IMAGE_PIXELS; import facespace, facespace.imageio; "
            "import facespace.pipeline; print(before == Image.MAX_IMAGE_PIXELS and before is not None)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
    # An image over Pillow's own limit is still refused as too large, with our message.
    with pytest.raises(ImageTooLargeError, match="over the limit"):
        load_image(bad_inputs["bomb"], max_pixels=10**12)
