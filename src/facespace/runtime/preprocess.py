"""Pixel normalisation for the embedding networks (the registry's ``normalisation``).

``"prewhiten"``  per image ``(x - mean) / max(std, 1 / sqrt(x.size))`` over all
                 pixels and channels (population std), as in Sandberg's facenet
``"fixed"``      ``(x - 127.5) / 128``

Statistics are computed in float64 (exactly, from integer sums, for uint8 pixels) and the
result in float32, so the same uint8 pixels always give the same network input.
:func:`normalise_array` is the NumPy form (the ONNX Runtime path, no torch; torch's too for
channels-last input on the CPU); :func:`normalise` gives a tensor.
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


def normalise_array(images: np.ndarray, mode: Normalisation) -> np.ndarray:
    """RGB ``N x H x W x 3`` (or ``H x W x 3``) pixel values 0..255 -> a contiguous float32
    ``N x 3 x H x W`` network input, in NumPy (the ONNX Runtime path, and torch's on the CPU)."""
    check_choice(mode, Normalisation, "normalisation")
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected H x W x 3 or N x H x W x 3 images, got shape {x.shape}")
    out = np.empty((x.shape[0], 3) + x.shape[1:3], np.float32)
    if mode == "fixed":  # exact in float32 for integer pixel values
        np.subtract(x.transpose(0, 3, 1, 2), np.float32(127.5), out=out, dtype=np.float32)
        out /= np.float32(128.0)
        return out
    mean, std = _pixel_statistics(x.reshape(x.shape[0], -1))
    scale = 1.0 / np.maximum(std, 1.0 / np.sqrt(x[0].size))
    np.subtract(x.transpose(0, 3, 1, 2), mean.astype(np.float32)[:, None, None, None], out=out, dtype=np.float32)
    out *= scale.astype(np.float32)[:, None, None, None]
    return out


def _pixel_statistics(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's mean and population std in float64. For uint8 pixels from exact integer sums
    (a fifth of the time of NumPy's two passes over a float64 copy, the embedder's largest cost
    after the network); other dtypes through NumPy's own."""
    if flat.dtype != np.uint8:
        return flat.mean(axis=1, dtype=np.float64), flat.std(axis=1, dtype=np.float64)
    n = flat.shape[1]
    total = flat.sum(axis=1, dtype=np.int64)
    squares = flat.astype(np.uint16)
    squares *= squares  # 255 ** 2 fits in 16 bits
    # n * sum(x^2) - sum(x)^2 is an exact integer below 2^53 for crops up to 3 x 600 x 600
    spread = n * squares.sum(axis=1, dtype=np.int64) - total * total
    return total / n, np.sqrt(spread / float(n * n))


def normalise(images: "np.ndarray | torch.Tensor", mode: Normalisation) -> "torch.Tensor":
    """RGB images -> a float32 ``N x 3 x H x W`` network input.

    ``images``: a numpy array or tensor of pixel values 0..255 (uint8 or float),
    ``H x W x 3`` or ``N x H x W x 3`` (channels last); a 4-D tensor whose last
    axis is not 3 but whose second is, is taken as already ``N x 3 x H x W``.
    A tensor's device is kept.
    """
    import torch

    if isinstance(images, torch.Tensor) and images.device.type == "cpu" and images.shape[-1:] == (3,):
        images = images.numpy()
    if not isinstance(images, torch.Tensor) and np.shape(images)[-1:] == (3,):
        return torch.from_numpy(normalise_array(images, mode))
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
    return out.to(torch.float32).contiguous()
