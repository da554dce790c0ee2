"""Inference-time simplification of an embedding network: batch norms folded away.

A frozen batch norm after a convolution or linear layer is an affine map per
output channel, so it can be absorbed into that layer's weights and bias::

    bn(conv(x)) = gamma * (W x + b - mean) / sqrt(var + eps) + beta
                = (s * W) x + (s * (b - mean) + beta),   s = gamma / sqrt(var + eps)

:func:`fuse_for_inference` does this for every conv-bn unit of
:class:`~facespace.networks.inception_resnet_v1.InceptionResnetV1` (the Keras
weights keep a BatchNorm after each convolution) and for the bottleneck's
Linear + BatchNorm1d. The result computes the same function in eval mode (to
float32 rounding, ~1e-6) with 132 fewer batch-norm passes over the activations;
it can no longer be trained, so only inference paths use it. The folding is
done in float64 and cast back.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["fuse_for_inference", "fold_bn_into_conv", "fold_bn_into_linear"]


def _scale_shift(bn: nn.BatchNorm1d | nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    var = bn.running_var.double()
    mean = bn.running_mean.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + bn.eps)
    return scale, beta - mean * scale


def fold_bn_into_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A biased copy of ``conv`` computing ``bn(conv(x))`` (bn in eval mode)."""
    scale, shift = _scale_shift(bn)
    with torch.device("meta"):  # no random initialisation: the weights are set just below
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                          padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=True,
                          padding_mode=conv.padding_mode)
    weight = conv.weight.double() * scale.view(-1, 1, 1, 1)
    bias = shift if conv.bias is None else conv.bias.double() * scale + shift
    return _with_weights(fused, weight.to(conv.weight.dtype), bias.to(conv.weight.dtype))


def _with_weights(layer: nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> nn.Module:
    layer.weight = nn.Parameter(weight.contiguous(), requires_grad=False)
    layer.bias = nn.Parameter(bias.contiguous(), requires_grad=False)
    return layer


def fold_bn_into_linear(linear: nn.Linear, bn: nn.BatchNorm1d) -> nn.Linear:
    """A biased copy of ``linear`` computing ``bn(linear(x))`` (bn in eval mode)."""
    scale, shift = _scale_shift(bn)
    with torch.device("meta"):
        fused = nn.Linear(linear.in_features, linear.out_features, bias=True)
    weight = linear.weight.double() * scale.view(-1, 1)
    bias = shift if linear.bias is None else linear.bias.double() * scale + shift
    return _with_weights(fused, weight.to(linear.weight.dtype), bias.to(linear.weight.dtype))


@torch.no_grad()
def fuse_for_inference(model: nn.Module) -> nn.Module:
    """Fold every batch norm of an InceptionResnetV1 into the layer before it, in place.

    Works for both layouts (``folded_bn`` False or True; the latter only has the
    bottleneck's BatchNorm1d left). Returns ``model`` in eval mode; calling it
    twice is harmless. The model's ``fused`` attribute is set to True.
    """
    from ..networks.inception_resnet_v1 import BasicConv2d

    model.eval()
    for module in model.modules():
        if isinstance(module, BasicConv2d) and isinstance(module.bn, nn.BatchNorm2d):
            module.conv = fold_bn_into_conv(module.conv, module.bn)
            module.bn = nn.Identity()
    bn = getattr(model, "bottleneck_bn", None)
    if isinstance(bn, nn.BatchNorm1d):
        model.bottleneck_linear = fold_bn_into_linear(model.bottleneck_linear, bn)
        model.bottleneck_bn = nn.Identity()
    model.fused = True
    return model
