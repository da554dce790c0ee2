"""Folder-per-identity face datasets and their augmentation (numpy + OpenCV only).

``root/<identity>/<image>`` with any of the image suffixes of
:data:`facespace.files.IMAGE_SUFFIXES`, read by :func:`facespace.imageio.load_image`
(pixel limit, EXIF orientation, alpha on white); identities are labelled 0..N-1
in sorted name order. Every image is cropped the same way
as evaluation images: the central square covering ``crop_fraction`` of the
shorter side (``facespace.alignment.centre_crop``'s rule), resized to the
network input. Augmentation perturbs that crop: horizontal flip, crop jitter
(scale and shift of the crop square) and colour (brightness, contrast,
saturation). Each sample's augmentation is drawn from its own seed (given by
:class:`~facespace_train.sampler.PKSampler`), so a run is reproducible whatever
the number of loader workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch

from facespace.files import image_files
from facespace.imageio import load_image
from facespace.runtime.preprocess import normalise


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation settings; ``AugmentConfig.off()`` disables all of them."""

    flip: bool = True
    scale_jitter: float = 0.1      # crop side multiplied by U(1-s, 1+s)
    shift_jitter: float = 0.05     # crop centre moved by U(-t, t) * crop side, per axis
    brightness: float = 0.2        # pixel values + U(-b, b) * 255
    contrast: float = 0.2          # (x - mean) * U(1-c, 1+c) + mean
    saturation: float = 0.2        # blend with grey by U(1-s, 1+s)

    @classmethod
    def off(cls) -> "AugmentConfig":
        return cls(False, 0.0, 0.0, 0.0, 0.0, 0.0)


def _size(size: int | Sequence[int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def crop_and_augment(image: np.ndarray, out_size: int | Sequence[int], crop_fraction: float,
                     augment: AugmentConfig | None = None, seed: int | None = None) -> np.ndarray:
    """Centre crop (optionally jittered) + resize + flip + colour, one affine warp.

    With ``augment=None`` this is a plain centre crop of ``crop_fraction`` of the
    shorter side (for a non-square output the crop has the output's aspect ratio).
    """
    out_h, out_w = _size(out_size)
    height, width = image.shape[:2]
    side = min(height, width) * crop_fraction
    crop_h, crop_w = (side, side * out_w / out_h) if out_h >= out_w else (side * out_h / out_w, side)
    cx, cy = width / 2.0, height / 2.0
    flip = False
    rng = np.random.default_rng(seed) if augment is not None else None
    if augment is not None:
        scale = 1.0 + rng.uniform(-augment.scale_jitter, augment.scale_jitter)
        crop_h, crop_w = crop_h * scale, crop_w * scale
        cx += rng.uniform(-augment.shift_jitter, augment.shift_jitter) * crop_w
        cy += rng.uniform(-augment.shift_jitter, augment.shift_jitter) * crop_h
        flip = augment.flip and rng.random() < 0.5
    sx, sy = out_w / crop_w, out_h / crop_h
    src = image
    if min(sx, sy) < 0.5:  # area-like prefilter for strong downscaling
        factor = min(sx, sy) * 1.5
        src = cv2.resize(image, (max(1, round(width * factor)), max(1, round(height * factor))),
                         interpolation=cv2.INTER_AREA)
        fx, fy = src.shape[1] / width, src.shape[0] / height
        cx, cy, crop_w, crop_h = cx * fx, cy * fy, crop_w * fx, crop_h * fy
        sx, sy = out_w / crop_w, out_h / crop_h
    # pixel-centre convention: output pixel j samples source (j + 0.5) / s - 0.5 + left
    left, top = cx - crop_w / 2.0, cy - crop_h / 2.0
    if not flip:
        matrix = np.array([[sx, 0.0, -left * sx + 0.5 * sx - 0.5],
                           [0.0, sy, -top * sy + 0.5 * sy - 0.5]])
    else:  # u' = out_w - 1 - u
        matrix = np.array([[-sx, 0.0, (left + crop_w) * sx - 0.5 * sx - 0.5],
                           [0.0, sy, -top * sy + 0.5 * sy - 0.5]])
    out = cv2.warpAffine(src, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    if augment is not None and (augment.brightness or augment.contrast or augment.saturation):
        x = out.astype(np.float32)
        if augment.saturation:
            grey = x.mean(axis=2, keepdims=True)
            x = grey + (x - grey) * (1.0 + rng.uniform(-augment.saturation, augment.saturation))
        if augment.contrast:
            mean = x.mean()
            x = (x - mean) * (1.0 + rng.uniform(-augment.contrast, augment.contrast)) + mean
        if augment.brightness:
            x = x + rng.uniform(-augment.brightness, augment.brightness) * 255.0
        out = np.clip(x, 0, 255).astype(np.uint8)
    return out


def scan_identity_folders(root: str | Path, min_images: int = 1, max_identities: int | None = None
                          ) -> tuple[list[Path], list[int], list[str]]:
    """(paths, labels, identity names) of ``root/<identity>/<image>``."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist")
    names, paths, labels = [], [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = image_files(folder, recursive=False)
        if len(files) < min_images:
            continue
        if max_identities is not None and len(names) >= max_identities:
            break
        label = len(names)
        names.append(folder.name)
        paths.extend(files)
        labels.extend([label] * len(files))
    if not paths:
        raise ValueError(f"no images found under {root}/<identity>/")
    return paths, labels, names


class IdentityFolderDataset(torch.utils.data.Dataset):
    """Faces in ``root/<identity>/`` folders; items are ``(image tensor, label)``.

    Index it with an int (no augmentation) or ``(index, seed)`` (augmented with
    that seed). ``cache=True`` keeps decoded images in memory, shrunk so the crop
    stays at least ``1.25 x`` the output size (cheap on small inputs).
    """

    def __init__(self, root: str | Path, input_size: int | Sequence[int] = 160, crop_fraction: float = 0.64,
                 augment: AugmentConfig | None = AugmentConfig(), normalisation: str = "fixed",
                 min_images: int = 1, max_identities: int | None = None, cache: bool = False) -> None:
        self.root = Path(root)
        self.paths, self.labels, self.identities = scan_identity_folders(root, min_images, max_identities)
        self.input_size = _size(input_size)
        self.crop_fraction = crop_fraction
        self.augment = augment
        self.normalisation = normalisation
        self.cache = cache
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, index: int) -> np.ndarray:
        if index in self._cache:
            return self._cache[index]
        image = load_image(self.paths[index])
        if self.cache:
            need = max(self.input_size) * 1.25 / self.crop_fraction
            shorter = min(image.shape[:2])
            if shorter > need:
                f = need / shorter
                image = cv2.resize(image, (round(image.shape[1] * f), round(image.shape[0] * f)),
                                   interpolation=cv2.INTER_AREA)
            self._cache[index] = image
        return image

    def crop(self, index: int, seed: int | None = None) -> np.ndarray:
        augment = self.augment if seed is not None else None
        return crop_and_augment(self.image(index), self.input_size, self.crop_fraction, augment, seed)

    def __getitem__(self, item) -> tuple[torch.Tensor, int]:
        index, seed = item if isinstance(item, tuple) else (item, None)
        return normalise(self.crop(index, seed), self.normalisation)[0], self.labels[index]


def collate(batch: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = zip(*batch)
    return torch.stack(images), torch.as_tensor(labels, dtype=torch.long)
