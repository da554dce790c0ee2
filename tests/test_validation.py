"""Bad settings and lazily broken inputs raise FacespaceError subclasses, up front (reliability finding 8)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from facespace.errors import FacespaceError, ImageLoadError, ImageTooLargeError, OptionError
from facespace.imageio import load_image
from facespace.pipeline import FacePipeline


@pytest.mark.parametrize("settings, message", [
    ({"batch_size": 0}, "batch_size"),
    ({"device": "foo"}, "unknown device"),
    ({"device": "cuda:7"}, "cuda"),
    ({"align": "sideways"}, "unknown alignment"),
    ({"backend": "tensorrt"}, "unknown backend"),
    ({"fallback": "guess"}, "unknown fallback"),
    ({"face_choice": "prettiest"}, "unknown face choice"),
    ({"threshold": float("nan")}, "threshold"),
    ({"threshold": float("inf")}, "threshold"),
    ({"threshold": -5.0}, "threshold"),
    ({"margin": -1}, "margin"),
    ({"centre_fraction": 0.0}, "centre_fraction"),
    ({"max_pixels": 0}, "max_pixels"),
])
def test_bad_pipeline_settings_are_refused_at_construction(settings, message):
    with pytest.raises(OptionError, match=message) as info:
        FacePipeline(**settings)
    assert isinstance(info.value, FacespaceError)


def test_lazily_truncated_pil_image_is_an_image_error():
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)).save(buffer, "JPEG")
    image = Image.open(io.BytesIO(buffer.getvalue()[:3000]))  # header fine, data cut: fails only on decode
    with pytest.raises(ImageLoadError, match="truncated"):
        load_image(image)


def test_arrays_obey_the_pixel_limit():
    """A NumPy array skipped the pixel limit (a 9000x9000 array ran, 3.2 GB)."""
    with pytest.raises(ImageTooLargeError, match="over the limit"):
        load_image(np.zeros((3000, 3000, 3), np.uint8), max_pixels=4_000_000)
    assert load_image(np.zeros((1000, 1000, 3), np.uint8), max_pixels=4_000_000).shape == (1000, 1000, 3)
