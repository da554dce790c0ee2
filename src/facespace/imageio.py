"""Reading any supported image input into an RGB uint8 array.

Accepts a path, raw bytes, a NumPy array or a PIL image; honours EXIF
orientation; converts greyscale, RGBA, palette, CMYK and 16-bit images to RGB;
and refuses images with more pixels than ``max_pixels`` before decoding them,
so a decompression bomb cannot exhaust memory. Pillow's own global guard
(``Image.MAX_IMAGE_PIXELS``) is left as the application has it; an image over
it is refused as too large too.
"""

from __future__ import annotations

import io
import os
import stat
import sys
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageLoadError, ImageTooLargeError

ImageInput = Union[str, os.PathLike, bytes, bytearray, np.ndarray, Image.Image]

#: Default pixel limit: 64 megapixels (an 8000x8000 photo) is accepted.
DEFAULT_MAX_PIXELS = 64_000_000


def describe(source: ImageInput) -> str:
    """A short human name for an input, for messages and reports."""
    if isinstance(source, (str, os.PathLike)):
        return printable_path(source)
    if isinstance(source, (bytes, bytearray)):
        return f"<{len(source)} bytes>"
    if isinstance(source, np.ndarray):
        return f"<array {source.shape} {source.dtype}>"
    if isinstance(source, Image.Image):
        return f"<PIL image {source.size} {source.mode}>"
    return f"<{type(source).__name__}>"


def printable_path(path: str | bytes | os.PathLike) -> str:
    """``path`` as text that prints and encodes anywhere: bytes that are not valid in the file
    system's encoding become ``\\xNN`` (``b"caf\\xe9.jpg"`` -> ``caf\\xe9.jpg``) and control
    characters their escapes, so a message about a file stays one printable line."""
    text = os.fsencode(path).decode(sys.getfilesystemencoding(), "backslashreplace")
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def load_image(source: ImageInput, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Return ``source`` as a contiguous RGB uint8 array of shape (H, W, 3)."""
    if isinstance(source, np.ndarray):
        if source.ndim >= 2 and source.shape[0] * source.shape[1] > max_pixels:
            _check_size((source.shape[1], source.shape[0]), max_pixels, describe(source))
        return _array_to_rgb(source)
    if isinstance(source, Image.Image):
        _check_size(source.size, max_pixels, describe(source))
        try:
            return _pil_to_rgb(source)
        except (OSError, SyntaxError, ValueError, EOFError) as exc:  # decoded lazily: truncated data shows now
            raise ImageLoadError(f"{describe(source)}: corrupt or truncated image ({exc})") from exc
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise ImageLoadError("empty image data (0 bytes)")
        return _decode(io.BytesIO(bytes(source)), describe(source), max_pixels)
    if isinstance(source, (str, os.PathLike)):
        return _load_path(Path(source), max_pixels)
    raise ImageLoadError(f"unsupported image input of type {type(source).__name__}")


def _load_path(path: Path, max_pixels: int) -> np.ndarray:
    """Decode the file at ``path``; every way of failing to open it (missing, a folder, no
    permission, a name too long, a loop of links: any ``OSError``) is one :class:`ImageLoadError`."""
    name = describe(path)
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise ImageLoadError(f"{name}: is a folder, not an image")
        if info.st_size == 0:
            raise ImageLoadError(f"{name}: empty file (0 bytes)")
        with open(path, "rb") as handle:
            return _decode(handle, name, max_pixels)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise ImageLoadError(f"{name}: no such file") from exc
    except PermissionError as exc:
        raise ImageLoadError(f"{name}: permission denied") from exc
    except OSError as exc:
        raise ImageLoadError(f"{name}: cannot be read ({exc.strerror or exc})") from exc


def _check_size(size: tuple[int, int], max_pixels: int, name: str) -> None:
    width, height = size
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"{name}: image is {width}x{height} ({width * height:,} pixels), over the "
            f"limit of {max_pixels:,} pixels"
        )
    if width == 0 or height == 0:
        raise ImageLoadError(f"{name}: image has no pixels ({width}x{height})")


def image_size(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, name: str | None = None) -> tuple[int, int]:
    """(width, height) of encoded image ``data`` from its header alone, refused as :func:`load_image`
    would refuse it (not an image, over ``max_pixels``); the pixel data is not read (a service can
    check uploads cheaply and leave the decoding to a batch)."""
    with _open_checked(io.BytesIO(data), name or describe(data), max_pixels) as image:
        return image.size


def _open_checked(handle, name: str, max_pixels: int) -> Image.Image:
    """The image opened (its header read) and within ``max_pixels``; every failure an ImageLoadError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(handle)
    except Image.DecompressionBombError as exc:
        # Pillow's own guard (left as the application set it) fires at open, before our check.
        size = _header_size(handle)
        if size[0] and size[1]:
            _check_size(size, min(max_pixels, 2 * (Image.MAX_IMAGE_PIXELS or 0)), name)
        raise ImageTooLargeError(f"{name}: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageLoadError(f"{name}: not an image or an unsupported format") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageLoadError(f"{name}: corrupt or truncated image ({exc})") from exc
    _check_size(image.size, max_pixels, name)
    return image


def _decode(handle, name: str, max_pixels: int) -> np.ndarray:
    image = _open_checked(handle, name, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageLoadError(f"{name}: corrupt or truncated image ({exc})") from exc
    return _pil_to_rgb(image, owned=True)


def _header_size(handle) -> tuple[int, int]:
    """(width, height) from the file's header, read by the format plugin that accepts it
    (what ``Image.open`` does, without its bomb check, so a refusal can name the size)."""
    Image.init()
    for plugin in Image.ID:
        factory, accept = Image.OPEN[plugin]
        handle.seek(0)
        if accept is not None and not accept(handle.read(16)):
            continue
        handle.seek(0)
        try:
            return factory(handle, "").size
        except Exception:  # noqa: BLE001 - not this format; Pillow tries the next one the same way
            continue
    return (0, 0)


def _pil_to_rgb(image: Image.Image, owned: bool = False) -> np.ndarray:
    """RGB uint8 pixels of a PIL image; ``owned``: the image is ours to rotate in place (one
    full-size copy fewer, which matters at tens of megapixels), else the caller's is left alone."""
    try:
        if owned:
            ImageOps.exif_transpose(image, in_place=True)
        else:
            image = ImageOps.exif_transpose(image)
    except Exception:  # a malformed EXIF block must not make a readable image unreadable
        pass
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _array_to_rgb(np.asarray(image))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


def _array_to_rgb(array: np.ndarray) -> np.ndarray:
    """Arrays are taken as RGB(A) or greyscale; 16-bit and float ranges are rescaled."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageLoadError(f"array of shape {array.shape} is not an image (want HxW, HxWx3 or HxWx4)")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageLoadError(f"array of shape {array.shape} has no pixels")
    if array.dtype == np.uint8:
        out = array
    elif array.dtype == np.uint16:
        out = (array >> 8).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ImageLoadError("array image contains NaN or infinite values")
        scale = 255.0 if array.max() <= 1.0 else 1.0
        out = np.clip(array * scale, 0, 255).round().astype(np.uint8)
    elif np.issubdtype(array.dtype, np.integer):
        top = 65535 if array.max() > 255 else 255
        out = np.clip(array.astype(np.int64) * 255 // top, 0, 255).astype(np.uint8)
    elif array.dtype == bool:
        out = array.astype(np.uint8) * 255
    else:
        raise ImageLoadError(f"unsupported array dtype {array.dtype}")
    if out.ndim == 2:
        out = np.stack([out] * 3, axis=-1)
    elif out.shape[2] == 4:
        out = out[:, :, :3]
    return np.ascontiguousarray(out)
