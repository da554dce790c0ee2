"""Pixel normalisation for the embedding networks (the registry's ``normalisation``).

``"prewhiten"``  per image ``(x - mean) / max(std, 1 / sqrt(x.size))`` over all
                 pixels and channels (population std), as in Sandberg's facenet
``"fixed"``      ``(x - 127.5) / 128``

Statistics are computed in float64 and the result is cast to float32, so the
same uint8 pixels always give the same network input.
"""

from __future__ import annotations

from typing import get_args

import numpy as np
import torch

from ..errors import check_choice
from ..pretrained.registry import Normalisation

MODES: tuple[str, ...] = get_args(Normalisation)


def fixed_scale(x: torch.Tensor) -> torch.Tensor:
    """``(x - 127.5) / 128``: 0..255 pixel values to about -1..1 (the "fixed" rule, also MTCNN's input)."""
    return (x - 127.5) / 128.0


def normalise(images: np.ndarray | torch.Tensor, mode: Normalisation) -> torch.Tensor:
    """RGB images -> a float32 ``N x 3 x H x W`` network input.

    ``images``: a numpy array or tensor of pixel values 0..255 (uint8 or float),
    ``H x W x 3`` or ``N x H x W x 3`` (channels last); a 4-D tensor whose last
    axis is not 3 but whose second is, is taken as already ``N x 3 x H x W``.
    A tensor's device is kept.
    """
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
