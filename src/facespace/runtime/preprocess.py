"""Pixel normalisation for the embedding networks (the registry's ``normalisation``).

``"prewhiten"``  per image ``(x - mean) / max(std, 1 / sqrt(x.size))`` over all
                 pixels and channels (population std), as in Sandberg's facenet
``"fixed"``      ``(x - 127.5) / 128``

Statistics are computed in float64 (from exact integer sums for uint8 pixels, which are
then mapped through a table of their 256 values) and the result is cast to float32, so the
same uint8 pixels always give the same network input. :func:`normalise_array` is the
NumPy form (the ONNX Runtime path, no torch); :func:`normalise` gives a tensor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar, get_args

import numpy as np

from ..errors import check_choice
from ..pretrained.registry import Normalisation

if TYPE_CHECKING:
    import torch

MODES: tuple[str, ...] = get_args(Normalisation)
_Pixels = TypeVar("_Pixels")


def fixed_scale(x: _Pixels) -> _Pixels:
    """``(x - 127.5) / 128``: 0..255 pixel values (an array or a tensor) to about -1..1 (the
    "fixed" rule, also MTCNN's input)."""
    return (x - 127.5) / 128.0


def _uint8_statistics(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row mean and population std of uint8 rows, from exact integer sums."""
    n = flat.shape[1]
    squares = flat.astype(np.uint32)
    squares *= squares
    total = flat.sum(axis=1, dtype=np.int64).astype(np.float64)
    square_total = squares.sum(axis=1, dtype=np.uint64).astype(np.float64)  # exact below 2^53
    return total / n, np.sqrt((n * square_total - total * total) / (n * n))


def _prewhiten_uint8(x: np.ndarray, channels_last: bool) -> np.ndarray:
    """``N x H x W x 3`` uint8 -> ``N x 3 x H x W`` float32 prewhitened through a table of each image's 256
    possible values (computed in float64): the float64 rule's values, ~3x faster. The table is
    read into the output layout directly (a transposing copy afterwards costs as much again)."""
    flat = x.reshape(len(x), -1)
    values = np.arange(256, dtype=np.float64)
    mean, std = _uint8_statistics(flat)
    tables = (values - mean[:, None]) / np.maximum(std, 1.0 / np.sqrt(flat.shape[1]))[:, None]
    tables = tables.astype(np.float32)
    if channels_last:
        out = np.empty(flat.shape, dtype=np.float32)
        for row, table, dest in zip(flat, tables, out):
            np.take(table, row, out=dest)
        return out.reshape(x.shape).transpose(0, 3, 1, 2)
    out = np.empty((len(x), x.shape[3], x.shape[1], x.shape[2]), dtype=np.float32)
    for image, table, dest in zip(x, tables, out):
        for c in range(x.shape[3]):
            np.take(table, image[:, :, c], out=dest[c])
    return out


def _fixed_uint8(x: np.ndarray, channels_last: bool) -> np.ndarray:
    """``(x - 127.5) / 128`` of uint8 pixels in one vectorised pass: exact in float32, so the
    float64 rule's values (MTCNN's many small crops: no per-image table loop)."""
    if channels_last:
        out = np.subtract(x, np.float32(127.5), dtype=np.float32)
        out /= np.float32(128.0)
        return out.transpose(0, 3, 1, 2)
    out = np.empty((x.shape[0], 3) + x.shape[1:3], np.float32)
    np.subtract(x.transpose(0, 3, 1, 2), np.float32(127.5), out=out, dtype=np.float32)
    out /= np.float32(128.0)
    return out


def normalise_array(images: np.ndarray, mode: Normalisation, channels_last: bool = False) -> np.ndarray:
    """RGB ``N x H x W x 3`` (or ``H x W x 3``) pixel values 0..255 -> a contiguous float32
    ``N x 3 x H x W`` network input, in NumPy: the same rule and values as :func:`normalise`.
    ``channels_last``: the same array as a ``N x 3 x H x W`` view of ``N x H x W x 3`` memory (the
    layout the torch CPU network runs in: no copy to make it)."""
    check_choice(mode, Normalisation, "normalisation")
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected H x W x 3 or N x H x W x 3 images, got shape {x.shape}")
    if x.dtype == np.uint8 and mode == "fixed":
        return _fixed_uint8(x, channels_last)
    if x.dtype == np.uint8 and len(x):
        return _prewhiten_uint8(x, channels_last)
    x = x.transpose(0, 3, 1, 2).astype(np.float64)
    if mode == "fixed":
        out = fixed_scale(x)
    else:
        mean = x.mean(axis=(1, 2, 3), keepdims=True)
        std = x.std(axis=(1, 2, 3), keepdims=True)
        out = (x - mean) / np.maximum(std, 1.0 / np.sqrt(x[0].size))
    if channels_last:
        return np.ascontiguousarray(out.transpose(0, 2, 3, 1), dtype=np.float32).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(out, dtype=np.float32)


def normalise(images: "np.ndarray | torch.Tensor", mode: Normalisation,
              channels_last: bool = False) -> "torch.Tensor":
    """RGB images -> a float32 ``N x 3 x H x W`` network input (in channels-last memory where
    ``channels_last``).

    ``images``: a numpy array or tensor of pixel values 0..255 (uint8 or float),
    ``H x W x 3`` or ``N x H x W x 3`` (channels last); a 4-D tensor whose last
    axis is not 3 but whose second is, is taken as already ``N x 3 x H x W``.
    A tensor's device is kept.
    """
    import torch

    if isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and images.device.type == "cpu" \
            and images.shape[-1:] == (3,):
        images = images.numpy()  # one rule for uint8 pixels on the CPU: normalise_array's table
    if not isinstance(images, torch.Tensor) and np.shape(images)[-1:] == (3,):
        return torch.from_numpy(normalise_array(images, mode, channels_last))
    check_choice(mode, Normalisation, "normalisation")
    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.asarray(images))
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4:
        raise ValueError(f"expected H x W x 3 or N x H x W x 3 images, got shape {tuple(x.shape)}")
    if x.shape[-1] == 3:
        x = x.permute(0, 3, 1, 2)
    elif x.shape[1] != 3:
        raise ValueError(f"expected 3 colour channels, got shape {tuple(x.shape)}")
    x = x.to(torch.float64)
    if mode == "fixed":
        out = fixed_scale(x)
    else:
        n = x[0].numel()
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True, correction=0)
        out = (x - mean) / std.clamp(min=1.0 / np.sqrt(n))
    return out.to(torch.float32).contiguous(memory_format=torch.channels_last if channels_last
                                            else torch.contiguous_format)
