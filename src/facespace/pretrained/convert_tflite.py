"""TFLite weights -> a PyTorch state_dict (:mod:`facespace.networks.blazeface`, :mod:`.facemesh`).

The networks define their layers of each kind (CONV_2D, DEPTHWISE_CONV_2D, PRELU) in the order of
the original Keras layers; the graph names its ops' outputs after those layers (``conv2d_12``,
``depthwise_conv2d_3``, ``p_re_lu_7``; heads by their own names, in graph order), so sorting the
graph's weighted ops by that index pairs them with the modules one to one. Every pair's shapes
are checked, so a network that does not match the file is refused rather than filled wrongly.
Float16 weights (behind DEQUANTIZE ops) are widened to float32.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import WeightsError
from .tflite import Operator, TFLiteModel, read_tflite

__all__ = ["convert_tflite"]

_KERAS_NAME = re.compile(r"^(conv2d|depthwise_conv2d|p_re_lu)(?:_(\d+))?$")
_KINDS = ("CONV_2D", "DEPTHWISE_CONV_2D", "PRELU")


def _kind(module: nn.Module) -> str | None:
    if isinstance(module, nn.PReLU):
        return "PRELU"
    if isinstance(module, nn.Conv2d):
        depthwise = module.groups == module.in_channels == module.out_channels and module.groups > 1
        return "DEPTHWISE_CONV_2D" if depthwise else "CONV_2D"
    return None


def _keras_order(model: TFLiteModel, position: int, op: Operator) -> tuple[int, int]:
    """Sort key: Keras-named layers by their index, then other (head) layers in graph order."""
    match = _KERAS_NAME.match(model.tensors[op.outputs[0]].name)
    return (0, int(match.group(2) or 0)) if match else (1, position)


def _weights(model: TFLiteModel, op: Operator) -> list[np.ndarray]:
    """The op's constants in PyTorch layout: conv OHWI -> OIHW, depthwise 1HWC -> C1HW, PReLU (C,)."""
    if op.name == "PRELU":
        return [model.constant(op.inputs[1]).reshape(-1)]
    kernel = model.constant(op.inputs[1])
    kernel = kernel.transpose(3, 0, 1, 2) if op.name == "DEPTHWISE_CONV_2D" else kernel.transpose(0, 3, 1, 2)
    return [kernel, model.constant(op.inputs[2])]


def convert_tflite(path: str | Path, network: nn.Module) -> dict[str, torch.Tensor]:
    """The state_dict of ``network`` filled from the TFLite file at ``path``."""
    model = read_tflite(path)
    ops = list(enumerate(model.compute_operators()))
    state: dict[str, torch.Tensor] = {}
    for kind in _KINDS:
        graph = sorted((op for op in ops if op[1].name == kind), key=lambda p: _keras_order(model, *p))
        layers = [(name, m) for name, m in network.named_modules() if _kind(m) == kind]
        if len(graph) != len(layers):
            raise WeightsError(f"{Path(path).name}: {len(graph)} {kind} ops, but the network has {len(layers)}")
        for (_, op), (name, layer) in zip(graph, layers):
            params = [p for p in (layer.weight, getattr(layer, "bias", None)) if p is not None]
            for param, key, value in zip(params, ("weight", "bias"), _weights(model, op)):
                if tuple(param.shape) != value.shape:
                    raise WeightsError(f"{Path(path).name}: {model.tensors[op.outputs[0]].name} has shape "
                                       f"{value.shape}, layer {name}.{key} expects {tuple(param.shape)}")
                state[f"{name}.{key}"] = torch.from_numpy(np.ascontiguousarray(value))
    return state
