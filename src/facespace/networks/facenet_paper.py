"""The networks of the FaceNet paper (Schroff, Kalenichenko & Philbin, CVPR 2015).

* ``nn1``  -- Zeiler & Fergus style network with 1x1 convolutions, 220x220 input,
  two maxout (p=2) fully connected layers (paper Table 1, 140M params, 1.6B FLOPs);
* ``nn2``  -- GoogLeNet style Inception network, 224x224 input, with L2 pooling in
  the modules the paper's Table 2 marks "L2" (7.5M params, 1.6B FLOPs);
* ``nn3``  -- ``nn2`` at 160x160;
* ``nn4``  -- ``nn2`` at 96x96 (paper: 285M FLOPs);
* ``nns1`` -- "mini Inception", 165x165 (paper: 26M params, 220M FLOPs);
* ``nns2`` -- "tiny Inception", 140x116 (paper: 4.3M params, 20M FLOPs).

The paper gives full layer tables only for NN1 and NN2. NNS1 and NNS2 are
described by input size, parameter and FLOP counts alone, so the versions here
are reconstructions sized to those counts (a narrow Inception trunk followed by
a wide fully connected layer, which is the only way to reach 26M parameters at
220M FLOPs); see ``docs/architectures.md``.

Every network ends in a fully connected layer of ``embedding_size`` (default
128) units followed by L2 normalisation, and accepts any input size: networks
that flatten a feature map size their first fully connected layer from the
``input_size`` given at construction. ``batch_norm=True`` adds batch
normalisation after every convolution (not in the paper, which predates its
wide use, but it makes short training runs from scratch far more stable).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .registry import register_model

FAMILY = "facenet-paper"

Size = int | tuple[int, int]


def _pair(size: Size) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    height, width = size
    return (int(height), int(width))


class ConvUnit(nn.Module):
    """Convolution (+ optional batch norm) + ReLU with "same" padding."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, batch_norm: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, bias=not batch_norm)
        self.bn = nn.BatchNorm2d(out_ch) if batch_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


class L2Pool2d(nn.Module):
    """L2 pooling: the square root of the sum of squares over each window."""

    def __init__(self, kernel: int = 3, stride: int = 1, padding: int = 1, eps: float = 1e-6):
        super().__init__()
        self.kernel, self.stride, self.padding, self.eps = kernel, stride, padding, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.avg_pool2d(x * x, self.kernel, self.stride, self.padding, count_include_pad=True)
        return torch.sqrt(pooled * (self.kernel * self.kernel) + self.eps)


class Maxout(nn.Module):
    """Fully connected maxout layer: ``out`` units, each the max of ``pieces`` linear units."""

    def __init__(self, in_features: int, out_features: int, pieces: int = 2):
        super().__init__()
        self.pieces = pieces
        self.linear = nn.Linear(in_features, out_features * pieces)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        return y.view(y.shape[0], -1, self.pieces).amax(dim=2)


@dataclass(frozen=True)
class InceptionSpec:
    """One row of the paper's Table 2 (0 means the branch is absent).

    ``pool`` is "max" or "l2"; ``proj`` is the 1x1 projection after the pool
    (0: the pooled input passes through unchanged, as in the stride-2 modules).
    """

    n1x1: int
    n3x3red: int
    n3x3: int
    n5x5red: int
    n5x5: int
    pool: str
    proj: int
    stride: int = 1


class Inception(nn.Module):
    """A FaceNet Inception module: 1x1, 3x3, 5x5 and pooling branches, concatenated."""

    def __init__(self, in_ch: int, spec: InceptionSpec, batch_norm: bool = False):
        super().__init__()
        s, bn = spec.stride, batch_norm
        self.branches = nn.ModuleList()
        if spec.n1x1:
            self.branches.append(ConvUnit(in_ch, spec.n1x1, 1, s, bn))
        if spec.n3x3:
            self.branches.append(nn.Sequential(ConvUnit(in_ch, spec.n3x3red, 1, 1, bn),
                                               ConvUnit(spec.n3x3red, spec.n3x3, 3, s, bn)))
        if spec.n5x5:
            self.branches.append(nn.Sequential(ConvUnit(in_ch, spec.n5x5red, 1, 1, bn),
                                               ConvUnit(spec.n5x5red, spec.n5x5, 5, s, bn)))
        pool: nn.Module = nn.MaxPool2d(3, s, 1) if spec.pool == "max" else L2Pool2d(3, s, 1)
        if spec.proj:
            self.branches.append(nn.Sequential(pool, ConvUnit(in_ch, spec.proj, 1, 1, bn)))
        else:
            self.branches.append(pool)
        self.out_channels = spec.n1x1 + spec.n3x3 + spec.n5x5 + (spec.proj or in_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], dim=1)


class Embedding(nn.Module):
    """Base class: ``features`` -> flatten -> ``head`` -> L2 normalisation."""

    input_size: tuple[int, int]
    embedding_size: int

    def features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        x = torch.flatten(self.features(x), 1)
        x = self.head(x)
        return F.normalize(x, p=2, dim=1) if normalize else x

    def _feature_shape(self) -> tuple[int, ...]:
        was_training = self.training
        self.eval()
        with torch.no_grad():
            shape = tuple(self.features(torch.zeros(1, 3, *self.input_size)).shape[1:])
        self.train(was_training)
        return shape


def _lrn() -> nn.Module:
    return nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)


class NN1(Embedding):
    """Paper Table 1: Zeiler & Fergus network with 1x1 convolutions and maxout FC layers."""

    def __init__(self, embedding_size: int = 128, input_size: Size = 220, batch_norm: bool = False,
                 fc_units: int = 4096, maxout_pieces: int = 2, dropout: float = 0.0):
        super().__init__()
        self.input_size, self.embedding_size = _pair(input_size), embedding_size
        bn = batch_norm
        self.trunk = nn.Sequential(
            ConvUnit(3, 64, 7, 2, bn),                            # conv1
            nn.MaxPool2d(3, 2, 1), _lrn(),                        # pool1, rnorm1
            ConvUnit(64, 64, 1, 1, bn), ConvUnit(64, 192, 3, 1, bn),     # conv2a, conv2
            _lrn(), nn.MaxPool2d(3, 2, 1),                        # rnorm2, pool2
            ConvUnit(192, 192, 1, 1, bn), ConvUnit(192, 384, 3, 1, bn),  # conv3a, conv3
            nn.MaxPool2d(3, 2, 1),                                # pool3
            ConvUnit(384, 384, 1, 1, bn), ConvUnit(384, 256, 3, 1, bn),  # conv4a, conv4
            ConvUnit(256, 256, 1, 1, bn), ConvUnit(256, 256, 3, 1, bn),  # conv5a, conv5
            ConvUnit(256, 256, 1, 1, bn), ConvUnit(256, 256, 3, 1, bn),  # conv6a, conv6
            nn.MaxPool2d(3, 2, 1),                                # pool4
        )
        flat = 1
        for d in self._feature_shape():
            flat *= d
        self.head = nn.Sequential(
            Maxout(flat, fc_units, maxout_pieces), nn.Dropout(dropout),    # fc1
            Maxout(fc_units, fc_units, maxout_pieces), nn.Dropout(dropout),  # fc2
            nn.Linear(fc_units, embedding_size),                            # fc7128
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)


#: Paper Table 2 (NN2): 3a .. 5b.
NN2_MODULES: dict[str, InceptionSpec] = {
    "3a": InceptionSpec(64, 96, 128, 16, 32, "max", 32),
    "3b": InceptionSpec(64, 96, 128, 32, 64, "l2", 64),
    "3c": InceptionSpec(0, 128, 256, 32, 64, "max", 0, stride=2),
    "4a": InceptionSpec(256, 96, 192, 32, 64, "l2", 128),
    "4b": InceptionSpec(224, 112, 224, 32, 64, "l2", 128),
    "4c": InceptionSpec(192, 128, 256, 32, 64, "l2", 128),
    "4d": InceptionSpec(160, 144, 288, 32, 64, "l2", 128),
    "4e": InceptionSpec(0, 160, 256, 64, 128, "max", 0, stride=2),
    "5a": InceptionSpec(384, 192, 384, 48, 128, "l2", 128),
    "5b": InceptionSpec(384, 192, 384, 48, 128, "max", 128),
}


class InceptionNet(Embedding):
    """Stem (conv1, pool, norm, inception(2), norm, pool) + Inception modules + head.

    ``pooling="avg"`` ends with global average pooling and a single FC layer
    (NN2/3/4); ``pooling="flatten"`` flattens the last map into ``fc_units``
    wide hidden FC layer before the embedding layer (the NNS reconstructions).
    """

    def __init__(self, modules: dict[str, InceptionSpec], embedding_size: int = 128, input_size: Size = 224,
                 batch_norm: bool = False, stem: Sequence[int] = (64, 64, 192), stem_kernel: int = 7,
                 pooling: str = "avg", fc_units: int = 0, dropout: float = 0.0, lrn: bool = True):
        super().__init__()
        self.input_size, self.embedding_size = _pair(input_size), embedding_size
        bn = batch_norm
        c1, c2a, c2 = stem
        norm: Callable[[], nn.Module] = _lrn if lrn else nn.Identity
        layers: list[nn.Module] = [ConvUnit(3, c1, stem_kernel, 2, bn), nn.MaxPool2d(3, 2, 1), norm()]
        if c2a:
            layers.append(ConvUnit(c1, c2a, 1, 1, bn))
        layers += [ConvUnit(c2a or c1, c2, 3, 1, bn), norm(), nn.MaxPool2d(3, 2, 1)]
        self.stem = nn.Sequential(*layers)
        blocks, ch = {}, c2
        for name, spec in modules.items():
            block = Inception(ch, spec, bn)
            blocks["inception_" + name] = block
            ch = block.out_channels
        self.blocks = nn.Sequential()
        for name, block in blocks.items():
            self.blocks.add_module(name, block)
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        if pooling == "avg":
            self.head = nn.Linear(ch, embedding_size)
        else:
            flat = 1
            for d in self._feature_shape():
                flat *= d
            self.head = nn.Sequential(nn.Linear(flat, fc_units), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                      nn.Linear(fc_units, embedding_size))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        if self.pooling == "avg":
            x = self.dropout(F.adaptive_avg_pool2d(x, 1))
        return x


@register_model("nn1", 220, FAMILY)
def nn1(embedding_size: int = 128, input_size: Size = 220, **kw) -> NN1:
    return NN1(embedding_size, input_size, **kw)


@register_model("nn2", 224, FAMILY)
def nn2(embedding_size: int = 128, input_size: Size = 224, **kw) -> InceptionNet:
    return InceptionNet(NN2_MODULES, embedding_size, input_size, **kw)


@register_model("nn3", 160, FAMILY)
def nn3(embedding_size: int = 128, input_size: Size = 160, **kw) -> InceptionNet:
    return nn2(embedding_size, input_size, **kw)


@register_model("nn4", 96, FAMILY)
def nn4(embedding_size: int = 128, input_size: Size = 96, **kw) -> InceptionNet:
    return nn2(embedding_size, input_size, **kw)


#: NNS1 reconstruction: NN2's layout at roughly half width, stopping after 4e
#: (6x6 map at 165 px), flattened into a 1360-unit FC layer.
NNS1_MODULES: dict[str, InceptionSpec] = {
    "3a": InceptionSpec(32, 48, 64, 8, 16, "max", 16),
    "3b": InceptionSpec(32, 48, 64, 16, 32, "l2", 32),
    "3c": InceptionSpec(0, 64, 128, 16, 32, "max", 0, stride=2),
    "4a": InceptionSpec(128, 48, 96, 16, 32, "l2", 64),
    "4b": InceptionSpec(112, 56, 112, 16, 32, "l2", 64),
    "4e": InceptionSpec(0, 80, 128, 32, 64, "max", 0, stride=2),
}

#: NNS2 reconstruction: a 5x5 stem, one Inception module and one stride-2
#: module (9x8 map at 140x116), flattened into a 288-unit FC layer.
NNS2_MODULES: dict[str, InceptionSpec] = {
    "3a": InceptionSpec(32, 24, 48, 8, 16, "max", 16),
    "3c": InceptionSpec(0, 32, 64, 16, 32, "max", 0, stride=2),
}


@register_model("nns1", 165, FAMILY)
def nns1(embedding_size: int = 128, input_size: Size = 165, **kw) -> InceptionNet:
    kw.setdefault("fc_units", 1360)
    return InceptionNet(NNS1_MODULES, embedding_size, input_size, stem=(32, 32, 96),
                        pooling="flatten", **kw)


@register_model("nns2", (140, 116), FAMILY)
def nns2(embedding_size: int = 128, input_size: Size = (140, 116), **kw) -> InceptionNet:
    kw.setdefault("fc_units", 288)
    return InceptionNet(NNS2_MODULES, embedding_size, input_size, stem=(16, 0, 32), stem_kernel=5,
                        pooling="flatten", **kw)


