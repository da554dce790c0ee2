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


def _biased_like(layer: nn.Conv2d | nn.Linear) -> nn.Module:
    """An uninitialised (meta) copy of ``layer``'s shape with a bias: the folded layer's layout."""
    with torch.device("meta"):
        if isinstance(layer, nn.Linear):
            return nn.Linear(layer.in_features, layer.out_features, bias=True)
        return nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                         padding=layer.padding, dilation=layer.dilation, groups=layer.groups, bias=True,
                         padding_mode=layer.padding_mode)


def _fold(layer: nn.Conv2d | nn.Linear, bn: nn.BatchNorm1d | nn.BatchNorm2d) -> nn.Module:
    """A biased copy of ``layer`` computing ``bn(layer(x))`` (bn in eval mode); on the meta
    device only the layout (no arithmetic: meta maths would import torch's compiler, ~1 s)."""
    fused = _biased_like(layer)
    if layer.weight.is_meta:
        return fused
    scale, shift = _scale_shift(bn)
    weight = layer.weight.double() * scale.view(-1, *([1] * (layer.weight.dim() - 1)))
    bias = shift if layer.bias is None else layer.bias.double() * scale + shift
    fused.weight = nn.Parameter(weight.to(layer.weight.dtype).contiguous(), requires_grad=False)
    fused.bias = nn.Parameter(bias.to(layer.weight.dtype).contiguous(), requires_grad=False)
    return fused


def fold_bn_into_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A biased copy of ``conv`` computing ``bn(conv(x))`` (bn in eval mode)."""
    return _fold(conv, bn)


def fold_bn_into_linear(linear: nn.Linear, bn: nn.BatchNorm1d) -> nn.Linear:
    """A biased copy of ``linear`` computing ``bn(linear(x))`` (bn in eval mode)."""
    return _fold(linear, bn)


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
