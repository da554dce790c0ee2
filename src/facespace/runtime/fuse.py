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

:func:`fuse_pointwise` goes further for the CPU (the torch backends): each folded unit becomes one
oneDNN convolution with its ReLU as a post-op (:class:`ConvReLU`), each residual block's
``relu(x + scale * up(...))`` one up-projection with the scale in its weights and the sum and ReLU as
post-ops (:class:`FusedResidual`), the weights laid out once for oneDNN's kernel, the max pools
compare integers (:class:`NonNegativeMaxPool`) and the stem runs a few images at a time so that its
large maps stay in cache (:class:`ChunkedStem`): in float32 the same embeddings to ~1e-6, at 63 ->
80-85% of this CPU's fp32 peak; in bfloat16 57 -> 86-89% (``benchmarks/embedding_peak.py``).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["fuse_for_inference", "fold_bn_into_conv", "fold_bn_into_linear", "fuse_pointwise"]


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


def _pointwise_op():
    """oneDNN's convolution with fused post-ops (the kernels torch's compiler emits on the CPU), or
    None where this torch build lacks them: the modules below then run the same maths unfused."""
    op = getattr(torch.ops.mkldnn, "_convolution_pointwise", None)
    try:
        return op if op is not None and torch.backends.mkldnn.is_available() and op.overloads() else None
    except (AttributeError, RuntimeError):
        return None


#: The batch size the weights are laid out for (the Embedder's default batch): oneDNN then never
#: reorders them again, at this or any other batch. Measured (bf16, 32 faces, one thread): 217 ms
#: at batch 32, 381 ms one by one, against 250 and 636 ms with the plain layout reordered on every
#: call (and 241 / 398 ms laid out for batch 1).
PACK_BATCH = 32


def _packed(weight: torch.Tensor, args: tuple, input_shape: list[int]) -> torch.Tensor:
    """``weight`` reordered into the blocked layout oneDNN's kernel wants for inputs of
    ``input_shape``, or as it is where this torch build cannot."""
    try:
        return torch._C._nn.mkldnn_reorder_conv2d_weight(weight.to_mkldnn(), *args, input_shape)
    except (AttributeError, RuntimeError, NotImplementedError):
        return weight


class ConvReLU(nn.Module):
    """``relu(conv(x))`` (``conv(x)`` where ``relu`` is False) in one oneDNN call, its ReLU a
    post-op, in ``dtype`` and the channels-last layout; the input is cast to ``dtype``. The weights
    are laid out for the kernel once, at the first call (which tells their input's size)."""

    def __init__(self, conv: nn.Conv2d, dtype: torch.dtype, scale: float = 1.0, relu: bool = True) -> None:
        super().__init__()
        self.weight = (conv.weight.double() * scale).to(dtype).contiguous(memory_format=torch.channels_last)
        self.bias = None if conv.bias is None else (conv.bias.double() * scale).to(dtype)
        self.args = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)
        self.dtype, self.relu = dtype, relu
        self._op = _pointwise_op()
        self._laid_out = self._op is None

    def _weight_for(self, x: torch.Tensor) -> torch.Tensor:
        if not self._laid_out:
            self.weight, self._laid_out = _packed(self.weight, self.args, [PACK_BATCH, *x.shape[1:]]), True
        return self.weight

    def _unfused(self, x: torch.Tensor, other: torch.Tensor | None = None) -> torch.Tensor:
        padding, stride, dilation, groups = self.args
        y = torch.nn.functional.conv2d(x, self.weight, self.bias, stride, padding, dilation, groups)
        y = y if other is None else y + other
        return torch.relu(y) if self.relu else y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.dtype)
        if self._op is None:
            return self._unfused(x)
        return self._op(x, self._weight_for(x), self.bias, *self.args, "relu" if self.relu else "none", [], "")

    def add(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """``relu(conv(x) + other)`` (no ReLU where ``relu`` is False): the residual sum as a post-op,
        accumulated in float32 and rounded once to ``dtype``."""
        if self._op is None:
            return self._unfused(x, other)
        return self._op.binary(x, other, self._weight_for(x), self.bias, *self.args, "add", None,
                               "relu" if self.relu else None, [], "")


_SAME_ORDER_INTS = {torch.bfloat16: torch.int16, torch.float16: torch.int16, torch.float32: torch.int32}


class NonNegativeMaxPool(nn.Module):
    """A max pool (no padding) of non-negative inputs (all three of this network's follow a ReLU)
    as maxima of strided views compared as integers: the bits of non-negative floats order as
    their values do. The same values as ``max_pool2d``; in bfloat16 2.5x faster than it (which
    widens every element to float32 and records the argmax), 7% of the time left over the
    convolutions."""

    def __init__(self, pool: nn.MaxPool2d) -> None:
        super().__init__()
        if pool.padding not in (0, (0, 0)) or pool.dilation not in (1, (1, 1)) or pool.ceil_mode:
            raise ValueError("only unpadded, undilated max pools are rewritten")
        self.kernel = pool.kernel_size if isinstance(pool.kernel_size, int) else pool.kernel_size[0]
        self.stride = pool.stride if isinstance(pool.stride, int) else pool.stride[0]

    def _along(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        steps = (x.shape[dim] - self.kernel) // self.stride + 1
        every_stride = (slice(None),) * dim + (slice(None, None, self.stride),)
        views = [x.narrow(dim, k, self.stride * (steps - 1) + 1)[every_stride] for k in range(self.kernel)]
        out = torch.maximum(views[0], views[1])
        for view in views[2:]:
            torch.maximum(out, view, out=out)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ints = _SAME_ORDER_INTS.get(x.dtype)
        if ints is None or self.kernel < 2:
            return torch.nn.functional.max_pool2d(x, self.kernel, self.stride)
        return self._along(self._along(x.view(ints), 2), 3).view(x.dtype)


#: Images the stem runs at a time (see :class:`ChunkedStem`).
STEM_CHUNK = 8
#: The stem: the layers before the first residual block, on the 160 -> 17 px grids.
STEM = ("conv2d_1a_3x3", "conv2d_2a_3x3", "conv2d_2b_3x3", "maxpool_3a_3x3", "conv2d_3b_1x1", "conv2d_4a_3x3",
        "conv2d_4b_3x3")


class ChunkedStem(nn.Module):
    """The stem's layers run on :data:`STEM_CHUNK` images at a time: their activations (up to 64 x
    77 x 77 values an image, 48 MB at batch 32 in float32) then stay in the caches instead of
    streaming through memory between layers. The same values; measured at batch 32 (one thread):
    430 -> 400 ms in float32, 211 -> 192 ms in bfloat16. The later layers' maps are small, and run
    on the whole batch (chunking them too was no faster)."""

    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(x) <= STEM_CHUNK:
            return self.layers(x)
        return torch.cat([self.layers(part) for part in x.split(STEM_CHUNK)])


class FusedResidual(nn.Module):
    """An Inception-ResNet block ``relu(x + scale * up(concat(branches(x))))`` as branches of
    :class:`ConvReLU` and one up-projection with ``scale`` folded into its weights and the sum and
    ReLU as its post-ops: the residual stream in the weights' dtype. (Merging the branches' parallel
    1x1 convolutions into one wider one was measured too: no faster, the split parts are copied.)"""

    def __init__(self, block: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.branches = nn.ModuleList(getattr(block, n) for n in ("branch_0", "branch_1", "branch_2")
                                      if hasattr(block, n))
        self.up = ConvReLU(block.conv2d_1x1, dtype, block.scale, relu=not isinstance(block.relu, nn.Identity))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up.add(torch.cat([branch(x) for branch in self.branches], dim=1), x)


@torch.no_grad()
def fuse_pointwise(model: nn.Module, dtype: torch.dtype = torch.float32) -> nn.Module:
    """Run a batch-norm-folded InceptionResnetV1 (:func:`fuse_for_inference`) as oneDNN convolutions
    with their ReLUs and residual sums fused, in ``dtype`` (float32, or bfloat16 on CPUs with its
    instructions), in place. In float32 the same function to ~1e-7, with the ReLU and sum passes
    over the activations gone (benchmarks/embedding_peak.py). Pooling and the bottleneck stay
    float32."""
    from ..networks.inception_resnet_v1 import BasicConv2d, Block8, Block17, Block35

    if not getattr(model, "fused", False):
        raise ValueError("fuse_pointwise needs the batch norms folded first (fuse_for_inference)")
    for parent in list(model.modules()):  # blocks first (pre-order), then the units inside them
        for name, child in parent.named_children():
            if isinstance(child, (Block35, Block17, Block8)):
                setattr(parent, name, FusedResidual(child, dtype))
            elif isinstance(child, BasicConv2d):
                setattr(parent, name, ConvReLU(child.conv, dtype))
            elif isinstance(child, nn.MaxPool2d):
                setattr(parent, name, NonNegativeMaxPool(child))
    stem = [getattr(model, name) for name in STEM]
    for name in STEM[1:]:
        setattr(model, name, nn.Identity())
    model.conv2d_1a_3x3 = ChunkedStem(stem)  # features() calls the stem's names in turn
    model.avgpool = _PoolFloat32()
    return model


class _PoolFloat32(nn.Module):
    """Global average pooling in float32: the pooled features and the bottleneck after them stay
    float32 (a bfloat16 bottleneck output moved the embeddings by 7e-4 for no measurable speed)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(x.float(), 1)
