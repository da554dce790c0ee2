"""Convert Sandberg's frozen FaceNet graph (``graph_final.pb``, 20180408-102900) to PyTorch.

The graph (read with :mod:`facespace.pretrained.graphdef`, no TensorFlow needed)
has its batch norms folded: each slim conv unit is
``Conv2D(x, <scope>/weights) -> BiasAdd(<scope>/Conv2D_bn_offset) -> Relu``,
so it maps onto ``InceptionResnetV1(folded_bn=True)`` whose conv-bn units are
biased convolutions. The residual up-projections keep ``weights``/``biases``;
the bottleneck keeps an unfolded ``FusedBatchNorm`` (gamma a constant 1,
eps 1e-3) after ``Bottleneck/weights``, and the graph ends in an L2
normalisation (``embeddings``). Input: ``input`` (1 x 160 x 160 x 3, pixels
``(x - 127.5) / 128``); no ``phase_train`` placeholder is left.

Each convolution's strides and padding, each block's residual scale and ReLU
and the bottleneck batch norm's epsilon are checked against the network.
"""

from __future__ import annotations

from os import PathLike

import numpy as np
import torch
from torch import nn

from ..errors import WeightsError
from .graphdef import NodeDef, read_graph
from ..networks.inception_resnet_v1 import BasicConv2d, InceptionResnetV1, conv_units, slim_scope

ROOT = "InceptionResnetV1/"


class _Graph:
    def __init__(self, nodes: list[NodeDef]):
        self.nodes = {n.name: n for n in nodes}
        self.consumers: dict[str, list[NodeDef]] = {}
        for node in nodes:
            for name in node.input:
                self.consumers.setdefault(name.split(":")[0].lstrip("^"), []).append(node)
        self.used: set[str] = set()

    def const(self, name: str) -> np.ndarray:
        node = self.nodes.get(name)
        if node is None or node.op != "Const":
            raise WeightsError(f"graph has no constant {name!r}")
        self.used.add(name)
        return node.attr["value"]

    def consumer(self, name: str, op: str) -> NodeDef:
        found = [n for n in self.consumers.get(name, []) if n.op == op]
        if len(found) != 1:
            raise WeightsError(f"expected one {op} reading {name!r}, found {len(found)}")
        return found[0]


def _conv(graph: _Graph, scope: str, conv: nn.Conv2d, padding: str, bias_name: str,
          prefix: str, state: dict) -> None:
    weights = graph.const(f"{ROOT}{scope}/weights")
    node = graph.consumer(f"{ROOT}{scope}/weights", "Conv2D")
    want = ([1, *conv.stride, 1], padding.upper(), "NHWC")
    have = (node.attr["strides"], node.attr["padding"], node.attr.get("data_format", "NHWC"))
    if have != want:
        raise WeightsError(f"{node.name} has strides/padding/layout {have}, the network {want}")
    kernel = torch.from_numpy(weights.transpose(3, 2, 0, 1).copy())
    if kernel.shape != conv.weight.shape:
        raise WeightsError(f"{scope}/weights is {tuple(kernel.shape)}, expected {tuple(conv.weight.shape)}")
    state[prefix + "weight"] = kernel
    state[prefix + "bias"] = torch.from_numpy(graph.const(f"{ROOT}{scope}/{bias_name}").copy())


def _check_blocks(graph: _Graph, model: InceptionResnetV1) -> None:
    blocks = [(f"repeat_{r}.{i}", m) for r, seq in enumerate(
        (model.repeat_1, model.repeat_2, model.repeat_3), start=1) for i, m in enumerate(seq)]
    for path, block in blocks + [("block8", model.block8)]:
        scope = ROOT + slim_scope(path)
        scale = float(graph.const(f"{scope}/mul/x"))
        if abs(scale - block.scale) > 1e-6:
            raise WeightsError(f"{scope} scales its residual by {scale}, the network by {block.scale}")
        has_relu = f"{scope}/Relu" in graph.nodes
        if has_relu != isinstance(block.relu, nn.ReLU):
            raise WeightsError(f"{scope}: ReLU after the residual sum does not match the network")


def convert_tf_graphdef(source: str | PathLike | bytes, model: InceptionResnetV1 | None = None
                        ) -> dict[str, torch.Tensor]:
    """A state_dict for ``InceptionResnetV1(embedding_size, folded_bn=True)`` from a frozen graph."""
    graph = _Graph(read_graph(source))
    bottleneck = graph.const(ROOT + "Bottleneck/weights")
    if model is None:
        model = InceptionResnetV1(embedding_size=bottleneck.shape[1], folded_bn=True)
    if not model.folded_bn:
        raise WeightsError("the frozen graph has batch norms folded: build with folded_bn=True")
    _check_blocks(graph, model)
    state: dict[str, torch.Tensor] = {}
    for path, unit in conv_units(model):
        scope = slim_scope(path)
        if isinstance(unit, BasicConv2d):
            _conv(graph, scope, unit.conv, unit.padding, "Conv2D_bn_offset", f"{path}.conv.", state)
        else:
            _conv(graph, scope, unit, "same", "biases", f"{path}.", state)

    if bottleneck.shape != (1792, model.embedding_size):
        raise WeightsError(f"Bottleneck/weights is {bottleneck.shape}, expected (1792, {model.embedding_size})")
    state["bottleneck_linear.weight"] = torch.from_numpy(bottleneck.T.copy())
    bn = graph.nodes.get(ROOT + "Bottleneck/BatchNorm/cond/FusedBatchNorm_1")
    if bn is None or bn.op != "FusedBatchNorm":
        raise WeightsError("graph has no bottleneck FusedBatchNorm")
    if abs(bn.attr["epsilon"] - 1e-3) > 1e-7:
        raise WeightsError(f"bottleneck batch norm eps is {bn.attr['epsilon']}, the network 1e-3")
    gamma, beta, mean, var = (torch.from_numpy(graph.const(n.split(":")[0]).copy()) for n in bn.input[1:5])
    state.update({"bottleneck_bn.weight": gamma, "bottleneck_bn.bias": beta,
                  "bottleneck_bn.running_mean": mean, "bottleneck_bn.running_var": var,
                  "bottleneck_bn.num_batches_tracked": torch.tensor(0)})

    float_consts = {n for n, node in graph.nodes.items() if node.op == "Const"
                    and node.attr["value"].dtype == np.float32 and node.attr["value"].ndim > 0}
    if float_consts - graph.used:
        raise WeightsError(f"graph weights left unconverted: {sorted(float_consts - graph.used)[:5]}")
    return {k: v.float().contiguous() if v.is_floating_point() else v for k, v in state.items()}
