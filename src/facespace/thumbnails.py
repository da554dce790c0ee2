"""Face thumbnails: a square crop around a detected face, small enough to show in a list or a grid.

One rule for every picture of a face a person looks at (the gallery's identity thumbnails, the
web app's album grids, ``facespace cluster``'s HTML report): the box's longer side widened by
30 %, centred on the box, resized to ``size`` x ``size``. Parts of the square outside the image
are filled black by PIL's crop, so a face at the border keeps its place in the square.
"""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np
from PIL import Image

__all__ = ["THUMBNAIL_SIZE", "face_thumbnail", "thumbnail_jpeg"]

#: The side of the gallery's and the web app's face thumbnails, in pixels.
THUMBNAIL_SIZE = 96

_WIDEN = 1.3


def face_thumbnail(image: Image.Image | np.ndarray, box: Sequence[float], size: int = THUMBNAIL_SIZE) -> Image.Image:
    """The face in ``box`` (x1, y1, x2, y2) of ``image`` as a ``size`` x ``size`` RGB image."""
    picture = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1, 1.0) * _WIDEN
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    crop = picture.crop((int(cx - side / 2), int(cy - side / 2), int(cx + side / 2), int(cy + side / 2)))
    return crop.convert("RGB").resize((size, size), Image.BILINEAR)


def thumbnail_jpeg(image: Image.Image | np.ndarray, box: Sequence[float], size: int = THUMBNAIL_SIZE,
                   quality: int = 85) -> bytes:
    """:func:`face_thumbnail` encoded as JPEG bytes (about 3 KB at 96 px)."""
    out = io.BytesIO()
    face_thumbnail(image, box, size).save(out, format="JPEG", quality=quality)
    return out.getvalue()
