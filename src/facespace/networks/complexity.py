"""Parameter and multiply-add counts of embedding networks.

Multiply-adds are counted per image with forward hooks on every ``Conv2d``
and ``Linear`` layer (a k x k x C_in convolution producing an H x W x C_out map
costs k*k*C_in/groups*H*W*C_out; a linear layer in*out). Pooling,
normalisation, activations and additions are not counted, which is how the
FaceNet paper's "FLOPS" columns are computed (they are multiply-adds).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import nn

from .registry import get_architecture

#: Figures stated in the FaceNet paper (Table 1, Table 2 and section 6.2).
#: ``None`` where the paper gives no number.
PAPER_FIGURES: dict[str, dict[str, Any]] = {
    "nn1": {"params": 140e6, "flops": 1.6e9, "source": "Table 1"},
    "nn2": {"params": 7.5e6, "flops": 1.6e9, "source": "Table 2"},
    "nn3": {"params": None, "flops": None, "source": "section 6.2: NN2 at 160x160 (no counts given)"},
    "nn4": {"params": None, "flops": 285e6, "source": "section 6.2: NN2 at 96x96, 285M FLOPS"},
    "nns1": {"params": 26e6, "flops": 220e6, "source": "section 6.2"},
    "nns2": {"params": 4.3e6, "flops": 20e6, "source": "section 6.2"},
}


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@contextmanager
def recording_mult_adds(*models: nn.Module) -> Iterator[list[tuple[str, str, int]]]:
    """While the block runs, (layer name, output shape, multiply-adds) of every Conv2d/Linear call of
    ``models`` on whatever inputs they get (all images of a batch): what a real run costs, e.g.
    MTCNN's pyramid, whose cost depends on the image."""
    rows: list[tuple[str, str, int]] = []
    hooks = []

    def hook(name: str):
        def run(module: nn.Module, inputs, output) -> None:
            out = output[0] if isinstance(output, (tuple, list)) else output
            if isinstance(module, nn.Conv2d):
                per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
                macs = per_output * out.numel()
            else:
                macs = module.in_features * out.numel()
            rows.append((name, "x".join(str(d) for d in out.shape[1:]), int(macs)))
        return run

    for model in models:
        for name, module in model.named_modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                hooks.append(module.register_forward_hook(hook(name)))
    try:
        yield rows
    finally:
        for h in hooks:
            h.remove()


def layer_mult_adds(model: nn.Module, input_size: int | tuple[int, int]) -> list[tuple[str, str, int]]:
    """(layer name, output shape, multiply-adds) per Conv2d/Linear layer for one image."""
    height, width = (input_size, input_size) if isinstance(input_size, int) else input_size
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        with torch.no_grad(), recording_mult_adds(model) as rows:
            model(torch.zeros(1, 3, height, width, device=device))
    finally:
        model.train(was_training)
    return rows


def count_mult_adds(model: nn.Module, input_size: int | tuple[int, int]) -> int:
    """Multiply-adds of Conv2d and Linear layers for one image of ``input_size``."""
    return sum(macs for _, _, macs in layer_mult_adds(model, input_size))


def _build(name: str, input_size, embedding_size: int | None) -> tuple[nn.Module, tuple[int, int], str]:
    """A registered architecture, or the architecture of a registered pretrained embedder."""
    try:
        spec = get_architecture(name)
        embedding_size = embedding_size or 128
    except ValueError:
        from ..pretrained.registry import get_config  # a registered pretrained name

        config = get_config(name, "embedder")
        spec = get_architecture(config.architecture)
        embedding_size = embedding_size or config.embedding_size
        input_size = input_size or config.input_size
    size = _size(input_size) if input_size else spec.input_size
    return spec.create(embedding_size, size), size, spec.family


def _size(size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def describe_architecture(name: str, input_size: int | tuple[int, int] | None = None,
                          embedding_size: int | None = None, layers: bool = False) -> dict:
    """Parameters and multiply-adds per image of a named architecture.

    ``name`` is a FaceNet paper network (``nn1`` .. ``nns2``),
    ``inception_resnet_v1`` or a registered pretrained embedder name. The
    result holds ``name``, ``architecture``, ``input_size`` (h, w),
    ``embedding_size``, ``parameters``, ``mult_adds``, ``paper`` (the paper's
    stated figures, where there are any) and, with ``layers=True``, the
    per-layer rows ``(layer, output shape, mult_adds)``. No weights are loaded.
    """
    model, size, family = _build(name, input_size, embedding_size)
    rows = layer_mult_adds(model, size)
    out = {
        "name": name,
        "architecture": family,
        "input_size": list(size),
        "embedding_size": embedding_size or getattr(model, "embedding_size", None) or _embedding_dim(model, size),
        "parameters": count_parameters(model),
        "mult_adds": sum(r[2] for r in rows),
        "paper": PAPER_FIGURES.get(name.lower()),
    }
    if layers:
        out["layers"] = rows
    return out


def _embedding_dim(model: nn.Module, size: tuple[int, int]) -> int:
    model.eval()
    with torch.no_grad():
        return int(model(torch.zeros(1, 3, *size)).shape[1])
