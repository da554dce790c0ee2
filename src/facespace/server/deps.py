"""Dependencies of the routes: the app's :class:`ServerState`, the API-key check, and reading uploads
within the app's :class:`Limits`.

The key is taken from the ``X-API-Key`` or ``Authorization: Bearer`` header only, never from the
URL (URLs end up in access logs and browser histories).
"""

from __future__ import annotations

import hmac
from pathlib import Path

import numpy as np
from fastapi import Depends, Request, UploadFile

from ..errors import ImageLoadError
from ..imageio import image_size
from .errors import ApiError
from .state import Limits, ServerState


def get_state(request: Request) -> ServerState:
    """The state of the app serving this request."""
    return request.app.state.facespace


async def check_key(request: Request) -> None:
    """Refuse the request (401) unless it carries the app's API key, if it has one (async: no thread
    of the server's pool is taken to compare two strings)."""
    api_key = get_state(request).api_key
    if api_key is None:
        return
    given = request.headers.get("x-api-key")
    auth = request.headers.get("authorization", "")
    if given is None and auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    if given is None:
        raise ApiError(401, "unauthorized", "this server needs an API key (X-API-Key header)")
    if not hmac.compare_digest(given.encode(), api_key.encode()):
        raise ApiError(401, "unauthorized", "wrong API key")


AUTH = [Depends(check_key)]


def read_upload(upload: UploadFile, field: str, limits: Limits) -> bytes:
    data = upload.file.read(limits.max_upload_bytes + 1)
    if len(data) > limits.max_upload_bytes:
        raise ApiError(413, "upload_too_large",
                       f"{field} ({upload.filename}) is over the limit of {limits.max_upload_bytes:,} bytes")
    if not data:
        raise ImageLoadError(f"{field} ({upload.filename}): empty upload")
    return data


def load_upload(upload: UploadFile, field: str, limits: Limits) -> np.ndarray:
    """The uploaded image as an RGB array; errors name the form field and the file."""
    from ..imageio import load_image

    try:
        return load_image(read_upload(upload, field, limits), max_pixels=limits.max_pixels)
    except ImageLoadError as exc:
        raise type(exc)(f"{field} ({upload.filename}): {exc}") from None


def read_images(uploads: list[UploadFile], limits: Limits) -> list[bytes]:
    """The ``images`` field's uploads as bytes, for the pipeline to decode chunk by chunk.

    Each is checked from its header (a readable format, within ``max_pixels``), and together
    they must be at most ``max_files`` and ``max_request_pixels`` decoded pixels (413).
    """
    _check_count(len(uploads), limits)
    images = [read_upload(upload, f"images[{i}]", limits) for i, upload in enumerate(uploads)]
    _check_pixels(images, [f"images[{i}] ({u.filename})" for i, u in enumerate(uploads)], limits)
    return images


def read_files(paths: list[Path], labels: list[str], limits: Limits) -> list[bytes]:
    """Image files on the server (an album folder) as bytes, within the same limits as uploads:
    ``max_files``, ``max_upload_bytes`` each, their headers' pixels."""
    _check_count(len(paths), limits)
    images = []
    for path, label in zip(paths, labels):
        try:
            with open(path, "rb") as handle:
                data = handle.read(limits.max_upload_bytes + 1)
        except OSError as exc:
            raise ImageLoadError(f"{label}: cannot read it ({exc.strerror or exc})") from None
        if len(data) > limits.max_upload_bytes:
            raise ApiError(413, "upload_too_large", f"{label} is over the limit of {limits.max_upload_bytes:,} bytes")
        if not data:
            raise ImageLoadError(f"{label}: empty file")
        images.append(data)
    _check_pixels(images, labels, limits)
    return images


def _check_count(files: int, limits: Limits) -> None:
    if files > limits.max_files:
        raise ApiError(413, "too_many_files", f"at most {limits.max_files} images per request")


def _check_pixels(images: list[bytes], labels: list[str], limits: Limits) -> None:
    """Each image readable from its header within ``max_pixels``, all of them within ``max_request_pixels``."""
    pixels = 0
    for data, label in zip(images, labels):
        width, height = image_size(data, limits.max_pixels, label)
        pixels += width * height
    if pixels > limits.max_request_pixels:
        raise ApiError(413, "too_many_pixels", f"the images hold {pixels:,} pixels in all, over the limit of "
                                               f"{limits.max_request_pixels:,} per request")
