"""Inception-ResNet-v1 as used by FaceNet (David Sandberg's ``inception_resnet_v1``).

Layout (input 3x160x160, already normalised)::

    stem      Conv2d_1a_3x3 .. Conv2d_4b_3x3        -> 256 x 17 x 17
    repeat_1  5 x Block35  (residual scale 0.17)    -> 256 x 17 x 17
    mixed_6a  reduction                             -> 896 x  8 x  8
    repeat_2  10 x Block17 (0.10)                   -> 896 x  8 x  8
    mixed_7a  reduction                             -> 1792 x 3 x  3
    repeat_3  5 x Block8   (0.20)
    block8    Block8 (scale 1.0, no ReLU)           -> 1792 x 3 x  3
    global average pool, dropout, Bottleneck linear (no bias), BatchNorm1d

Padding: every stride-2 convolution and pooling of the original is 'VALID'
and every 'SAME' one has stride 1 and an odd kernel, so TF's 'SAME' padding is
the symmetric ``kernel // 2`` here (no asymmetric stride-2 'SAME' case
arises); the converters check this against the source file.

Attribute names follow the TF-slim scopes lower-cased (``branch_1``,
``conv2d_0b_3x3``), so :func:`slim_scope` maps a parameter name back to the
original variable scope.

Batch norm: the Keras weights keep a BatchNorm (``scale=False``: gamma is 1,
eps 1e-3) after every convolution; the frozen TF graph has it folded into the
convolution as a bias. ``folded_bn=True`` builds the latter form: each
conv-bn unit is then a biased convolution followed by ``nn.Identity``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from .registry import register_model

BN_EPS = 1e-3  # TF-slim / Keras default used by facenet; PyTorch's is 1e-5


class BasicConv2d(nn.Module):
    """Conv -> BatchNorm (or nothing, when folded into the conv bias) -> ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int | tuple[int, int],
                 stride: int = 1, padding: str = "same", folded_bn: bool = False):
        super().__init__()
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        if padding == "same":
            if stride != 1 or kh % 2 == 0 or kw % 2 == 0:
                raise ValueError("'same' padding is only symmetric for stride 1 and odd kernels")
            pad = (kh // 2, kw // 2)
        elif padding == "valid":
            pad = (0, 0)
        else:
            raise ValueError(f"padding must be 'same' or 'valid', not {padding!r}")
        self.padding = padding  # TF's name for it, checked by the converters
        self.conv = nn.Conv2d(in_ch, out_ch, (kh, kw), stride=stride, padding=pad, bias=folded_bn)
        self.bn = nn.Identity() if folded_bn else nn.BatchNorm2d(out_ch, eps=BN_EPS)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


def _seq(**layers: nn.Module) -> nn.Sequential:
    return nn.Sequential(OrderedDict(layers))


def _residual(x: torch.Tensor, branch: torch.Tensor, scale: float) -> torch.Tensor:
    """``x + scale * branch``. Under autocast (bfloat16 convolutions) the residual stream is kept in
    float32: summed in bfloat16 by separate ops over the 21 blocks (three roundings a block) it cost
    0.2 points on both development sets, in float32 0.0 and 0.05. (The library's ``torch-bf16``
    backend no longer uses autocast: ``runtime/fuse.py`` adds the residual inside each up-projection
    convolution, rounded once to bfloat16, within 0.1 points: ``benchmarks/results/bf16.json``.)"""
    if torch.is_autocast_enabled(x.device.type):
        return x.float() + scale * branch.float()
    return x + scale * branch


class Block35(nn.Module):
    """Inception-ResNet-A on the 17x17 grid: x + scale * up(concat(branches))."""

    def __init__(self, scale: float = 0.17, folded_bn: bool = False):
        super().__init__()
        c = dict(folded_bn=folded_bn)
        self.scale = scale
        self.branch_0 = _seq(conv2d_1x1=BasicConv2d(256, 32, 1, **c))
        self.branch_1 = _seq(conv2d_0a_1x1=BasicConv2d(256, 32, 1, **c),
                             conv2d_0b_3x3=BasicConv2d(32, 32, 3, **c))
        self.branch_2 = _seq(conv2d_0a_1x1=BasicConv2d(256, 32, 1, **c),
                             conv2d_0b_3x3=BasicConv2d(32, 32, 3, **c),
                             conv2d_0c_3x3=BasicConv2d(32, 32, 3, **c))
        self.conv2d_1x1 = nn.Conv2d(96, 256, 1, bias=True)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = torch.cat([self.branch_0(x), self.branch_1(x), self.branch_2(x)], dim=1)
        return self.relu(_residual(x, self.conv2d_1x1(mixed), self.scale))


class Block17(nn.Module):
    """Inception-ResNet-B on the 8x8 grid (factorised 1x7 / 7x1 branch)."""

    def __init__(self, scale: float = 0.10, folded_bn: bool = False):
        super().__init__()
        c = dict(folded_bn=folded_bn)
        self.scale = scale
        self.branch_0 = _seq(conv2d_1x1=BasicConv2d(896, 128, 1, **c))
        self.branch_1 = _seq(conv2d_0a_1x1=BasicConv2d(896, 128, 1, **c),
                             conv2d_0b_1x7=BasicConv2d(128, 128, (1, 7), **c),
                             conv2d_0c_7x1=BasicConv2d(128, 128, (7, 1), **c))
        self.conv2d_1x1 = nn.Conv2d(256, 896, 1, bias=True)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = torch.cat([self.branch_0(x), self.branch_1(x)], dim=1)
        return self.relu(_residual(x, self.conv2d_1x1(mixed), self.scale))


class Block8(nn.Module):
    """Inception-ResNet-C on the 3x3 grid; the network's last one has no ReLU."""

    def __init__(self, scale: float = 0.20, activation: bool = True, folded_bn: bool = False):
        super().__init__()
        c = dict(folded_bn=folded_bn)
        self.scale = scale
        self.branch_0 = _seq(conv2d_1x1=BasicConv2d(1792, 192, 1, **c))
        self.branch_1 = _seq(conv2d_0a_1x1=BasicConv2d(1792, 192, 1, **c),
                             conv2d_0b_1x3=BasicConv2d(192, 192, (1, 3), **c),
                             conv2d_0c_3x1=BasicConv2d(192, 192, (3, 1), **c))
        self.conv2d_1x1 = nn.Conv2d(384, 1792, 1, bias=True)
        self.relu = nn.ReLU() if activation else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = torch.cat([self.branch_0(x), self.branch_1(x)], dim=1)
        return self.relu(_residual(x, self.conv2d_1x1(mixed), self.scale))


class Mixed6a(nn.Module):
    """Reduction-A: 256 x 17 x 17 -> 896 x 8 x 8."""

    def __init__(self, folded_bn: bool = False):
        super().__init__()
        c = dict(folded_bn=folded_bn)
        self.branch_0 = _seq(conv2d_1a_3x3=BasicConv2d(256, 384, 3, stride=2, padding="valid", **c))
        self.branch_1 = _seq(conv2d_0a_1x1=BasicConv2d(256, 192, 1, **c),
                             conv2d_0b_3x3=BasicConv2d(192, 192, 3, **c),
                             conv2d_1a_3x3=BasicConv2d(192, 256, 3, stride=2, padding="valid", **c))
        self.branch_2 = nn.MaxPool2d(3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch_0(x), self.branch_1(x), self.branch_2(x)], dim=1)


class Mixed7a(nn.Module):
    """Reduction-B: 896 x 8 x 8 -> 1792 x 3 x 3."""

    def __init__(self, folded_bn: bool = False):
        super().__init__()
        c = dict(folded_bn=folded_bn)
        self.branch_0 = _seq(conv2d_0a_1x1=BasicConv2d(896, 256, 1, **c),
                             conv2d_1a_3x3=BasicConv2d(256, 384, 3, stride=2, padding="valid", **c))
        self.branch_1 = _seq(conv2d_0a_1x1=BasicConv2d(896, 256, 1, **c),
                             conv2d_1a_3x3=BasicConv2d(256, 256, 3, stride=2, padding="valid", **c))
        self.branch_2 = _seq(conv2d_0a_1x1=BasicConv2d(896, 256, 1, **c),
                             conv2d_0b_3x3=BasicConv2d(256, 256, 3, **c),
                             conv2d_1a_3x3=BasicConv2d(256, 256, 3, stride=2, padding="valid", **c))
        self.branch_3 = nn.MaxPool2d(3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch_0(x), self.branch_1(x), self.branch_2(x),
                          self.branch_3(x)], dim=1)


class InceptionResnetV1(nn.Module):
    """FaceNet's Inception-ResNet-v1 embedding network.

    ``forward(x)`` takes a float tensor ``N x 3 x 160 x 160`` that is already
    normalised (see :func:`facespace.runtime.preprocess.normalise`) and returns
    L2-normalised embeddings ``N x embedding_size``; ``forward(x,
    normalize=False)`` or :meth:`bottleneck` give the raw bottleneck output
    (after its batch norm, before L2 normalisation).
    """

    def __init__(self, embedding_size: int = 128, dropout: float = 0.2, folded_bn: bool = False):
        super().__init__()
        c = dict(folded_bn=folded_bn)
        self.embedding_size = embedding_size
        self.folded_bn = folded_bn
        self.conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2, padding="valid", **c)
        self.conv2d_2a_3x3 = BasicConv2d(32, 32, 3, padding="valid", **c)
        self.conv2d_2b_3x3 = BasicConv2d(32, 64, 3, **c)
        self.maxpool_3a_3x3 = nn.MaxPool2d(3, stride=2)
        self.conv2d_3b_1x1 = BasicConv2d(64, 80, 1, padding="valid", **c)
        self.conv2d_4a_3x3 = BasicConv2d(80, 192, 3, padding="valid", **c)
        self.conv2d_4b_3x3 = BasicConv2d(192, 256, 3, stride=2, padding="valid", **c)
        self.repeat_1 = nn.Sequential(*[Block35(0.17, **c) for _ in range(5)])
        self.mixed_6a = Mixed6a(**c)
        self.repeat_2 = nn.Sequential(*[Block17(0.10, **c) for _ in range(10)])
        self.mixed_7a = Mixed7a(**c)
        self.repeat_3 = nn.Sequential(*[Block8(0.20, **c) for _ in range(5)])
        self.block8 = Block8(1.0, activation=False, **c)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.bottleneck_linear = nn.Linear(1792, embedding_size, bias=False)
        self.bottleneck_bn = nn.BatchNorm1d(embedding_size, eps=BN_EPS)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The 1792-channel map before pooling."""
        for name in ("conv2d_1a_3x3", "conv2d_2a_3x3", "conv2d_2b_3x3", "maxpool_3a_3x3",
                     "conv2d_3b_1x1", "conv2d_4a_3x3", "conv2d_4b_3x3", "repeat_1",
                     "mixed_6a", "repeat_2", "mixed_7a", "repeat_3", "block8"):
            x = getattr(self, name)(x)
        return x

    def bottleneck(self, x: torch.Tensor) -> torch.Tensor:
        """Raw embeddings: pooled features -> linear -> batch norm (not unit length)."""
        x = self.avgpool(self.features(x)).flatten(1)
        return self.bottleneck_bn(self.bottleneck_linear(self.dropout(x)))

    def forward(self, x: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        x = self.bottleneck(x)
        return F.normalize(x, p=2.0, dim=1, eps=1e-10) if normalize else x


@register_model("inception_resnet_v1", 160, "inception_resnet_v1")
def inception_resnet_v1(embedding_size: int = 128, input_size: int | tuple[int, int] = 160,
                        **kwargs) -> InceptionResnetV1:
    """Inception-ResNet-v1 (any input of at least 75 px: the head pools globally)."""
    return InceptionResnetV1(embedding_size=embedding_size, **kwargs)


def slim_scope(module_path: str) -> str:
    """The TF-slim variable scope of a module, e.g. ``repeat_2.0.branch_1.conv2d_0b_1x7``
    -> ``Repeat_1/block17_1/Branch_1/Conv2d_0b_1x7`` (without ``InceptionResnetV1/``)."""
    repeats = {"repeat_1": "Repeat/block35_{}", "repeat_2": "Repeat_1/block17_{}",
               "repeat_3": "Repeat_2/block8_{}"}
    parts = module_path.split(".")
    scope: list[str] = []
    i = 0
    while i < len(parts):
        part = parts[i]
        if part in repeats:
            scope.append(repeats[part].format(int(parts[i + 1]) + 1))
            i += 2
            continue
        if part == "block8":
            scope.append("Block8")
        elif part.startswith(("bottleneck_", "maxpool_", "avgpool")):
            raise ValueError(f"{module_path} has no slim conv scope")
        else:
            scope.append(part[0].upper() + part[1:])
        i += 1
    return "/".join(scope)


def conv_units(model: nn.Module):
    """``(module path, module)`` for every conv-bn unit and residual up-projection
    of the network, in definition order."""
    for path, module in model.named_modules():
        if isinstance(module, BasicConv2d):
            yield path, module
        elif isinstance(module, nn.Conv2d) and path.endswith("conv2d_1x1"):
            yield path, module  # the biased 1x1 up-projection of a residual block
