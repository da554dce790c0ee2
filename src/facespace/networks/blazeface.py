"""BlazeFace (Bazarevsky et al., "BlazeFace: Sub-millisecond Neural Face Detection on Mobile GPUs",
2019) as MediaPipe ships it: the short-range (128 px, front camera) and full-range (192 px) face
detectors, and the residual block that they and the face mesh (:mod:`.facemesh`) are built of.

Layouts follow the TFLite graphs (``face_detection_short_range.tflite``,
``face_detection_full_range.tflite``) op for op; TensorFlow's "SAME" padding (more after than
before) is reproduced by :func:`same_pad`. Layers of each kind (conv, depthwise conv, PReLU) are
defined in the order of the original Keras layers, which is the order the converter
(:mod:`facespace.pretrained.convert_tflite`) fills them in. Inputs are NCHW RGB in [-1, 1];
outputs are the graphs' raw ``regressors`` (N, anchors, 16) and score logits (N, anchors, 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import register_model

__all__ = ["BlazeBlock", "BlazeFaceShort", "BlazeFaceFull", "same_pad"]


def same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Zero-pad H and W as TensorFlow's "SAME" does (the odd pixel goes after)."""
    pads = []
    for size in (x.shape[3], x.shape[2]):  # F.pad lists the last dimension first
        total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads) if any(pads) else x


class SameConv(nn.Conv2d):
    """A convolution with TensorFlow "SAME" padding (``depthwise``: one filter per channel)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, depthwise: bool = False) -> None:
        super().__init__(c_in, c_out, kernel, stride, groups=c_in if depthwise else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(same_pad(x, self.kernel_size[0], self.stride[0]))


def activation(kind: str, channels: int) -> nn.Module:
    return nn.PReLU(channels) if kind == "prelu" else nn.ReLU()


class BlazeBlock(nn.Module):
    """``act(main(x) + skip(x))``: main is depthwise 3x3 (stride 1 or 2) then 1x1 to ``c_out``, or,
    with ``mid``, the "double" block (depthwise, 1x1 to ``mid``, act, depthwise, 1x1 to ``c_out``);
    skip is the identity, or 2x2 max pooling at stride 2, zero-padded to ``c_out`` channels."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, mid: int | None = None, act: str = "relu") -> None:
        super().__init__()
        self.stride, self.extra, self.double = stride, c_out - c_in, mid is not None
        self.dw1 = SameConv(c_in, c_in, 3, stride, depthwise=True)
        self.pw1 = nn.Conv2d(c_in, mid or c_out, 1)
        if mid is not None:
            self.act1 = activation(act, mid)
            self.dw2 = SameConv(mid, mid, 3, depthwise=True)
            self.pw2 = nn.Conv2d(mid, c_out, 1)
        self.act = activation(act, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pw1(self.dw1(x))
        if self.double:
            y = self.pw2(self.dw2(self.act1(y)))
        if self.stride == 2:
            x = F.max_pool2d(x, 2, 2, ceil_mode=True)
        if self.extra:
            x = F.pad(x, (0, 0, 0, 0, 0, self.extra))
        return self.act(x + y)


def blocks(channels: list[tuple[int, int, int]], c_in: int, act: str = "relu", mid: dict | None = None) -> nn.Sequential:
    """A chain of :class:`BlazeBlock` from ``(c_out, stride, repeat)`` rows."""
    layers = []
    for c_out, stride, repeat in channels:
        for k in range(repeat):
            layers.append(BlazeBlock(c_in, c_out, stride if k == 0 else 1, (mid or {}).get(c_out), act))
            c_in = c_out
    return nn.Sequential(*layers)


def _flatten(x: torch.Tensor, width: int) -> torch.Tensor:
    """NCHW head output -> (N, H*W*anchors, width), in the TFLite graph's NHWC order."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, width)


class BlazeFaceShort(nn.Module):
    """The short-range (front camera) detector: 128x128 in, 896 anchors (2 per cell of 16x16,
    6 per cell of 8x8), for faces filling much of the picture (within ~2 m)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(SameConv(3, 24, 5, 2), nn.ReLU())
        self.backbone1 = blocks([(24, 1, 1), (28, 1, 1), (32, 2, 1), (36, 1, 1), (42, 1, 1), (48, 2, 1),
                                 (56, 1, 1), (64, 1, 1), (72, 1, 1), (80, 1, 1), (88, 1, 1)], 24)
        self.backbone2 = blocks([(96, 2, 1), (96, 1, 4)], 88)
        self.classifier_8 = nn.Conv2d(88, 2, 1)
        self.classifier_16 = nn.Conv2d(96, 6, 1)
        self.regressor_8 = nn.Conv2d(88, 32, 1)
        self.regressor_16 = nn.Conv2d(96, 96, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x``: (N, 3, 128, 128) in [-1, 1] -> box/keypoint regressors (N, 896, 16), logits (N, 896, 1)."""
        f8 = self.backbone1(self.stem(x))
        f16 = self.backbone2(f8)
        scores = torch.cat([_flatten(self.classifier_8(f8), 1), _flatten(self.classifier_16(f16), 1)], 1)
        boxes = torch.cat([_flatten(self.regressor_8(f8), 16), _flatten(self.regressor_16(f16), 16)], 1)
        return boxes, scores


class _Lateral(nn.Module):
    """One top-down step of the full-range model: upsample the coarse map (after a 1x1 conv and ReLU)
    and add a 1x1-projected finer backbone map."""

    def __init__(self, c_coarse: int, c_fine: int, c_out: int) -> None:
        super().__init__()
        self.coarse = nn.Sequential(nn.Conv2d(c_coarse, c_out, 1), nn.ReLU())
        self.fine = nn.Sequential(nn.Conv2d(c_fine, c_out, 1), nn.ReLU())

    def forward(self, coarse: torch.Tensor, fine: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(self.coarse(coarse), size=fine.shape[2:], mode="bilinear", align_corners=False)
        return up + self.fine(fine)


class BlazeFaceFull(nn.Module):
    """The full-range detector: 192x192 in, 2304 anchors (one per cell of 48x48), with a top-down
    feature pyramid, for smaller faces (within ~5 m)."""

    def __init__(self) -> None:
        super().__init__()
        mid = {32: 8, 48: 12, 64: 16, 96: 24, 128: 32, 144: 36, 192: 48, 256: 64, 384: 96}
        self.stem = nn.Sequential(SameConv(3, 32, 3, 2), nn.ReLU())
        self.stage48 = blocks([(32, 1, 2), (48, 2, 2), (64, 1, 1)], 32, mid=mid)     # 96 -> 48 px
        self.stage24 = blocks([(96, 2, 1), (128, 1, 2)], 64, mid=mid)                # -> 24
        self.stage12 = blocks([(144, 2, 1), (192, 1, 1), (256, 1, 1)], 128, mid=mid)  # -> 12
        self.stage6 = blocks([(384, 2, 4)], 256, mid=mid)                             # -> 6
        self.up12 = _Lateral(384, 256, 96)
        self.head12 = blocks([(96, 1, 2)], 96, mid={96: 48})
        self.up24 = _Lateral(96, 128, 64)
        self.head24 = blocks([(64, 1, 2)], 64, mid={64: 32})
        self.up48 = _Lateral(64, 64, 48)
        self.head48 = blocks([(48, 1, 1)], 48, mid={48: 24})
        self.classifier = nn.Conv2d(48, 1, 1)
        self.regressor = nn.Conv2d(48, 16, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x``: (N, 3, 192, 192) in [-1, 1] -> regressors (N, 2304, 16), logits (N, 2304, 1)."""
        f48 = self.stage48(self.stem(x))
        f24 = self.stage24(f48)
        f12 = self.stage12(f24)
        f6 = self.stage6(f12)
        y = self.head12(self.up12(f6, f12))
        y = self.head24(self.up24(y, f24))
        y = self.head48(self.up48(y, f48))
        return _flatten(self.regressor(y), 16), _flatten(self.classifier(y), 1)


@register_model("blazeface_short", 128, "blazeface")
def blazeface_short(**_: object) -> BlazeFaceShort:
    return BlazeFaceShort()


@register_model("blazeface_full", 192, "blazeface")
def blazeface_full(**_: object) -> BlazeFaceFull:
    return BlazeFaceFull()
