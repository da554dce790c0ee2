"""Convert the Keras 2.1 ``facenet_keras.h5`` (Sandberg 20170511-185253) to PyTorch.

Only ``h5py`` is used: the file's ``model_config`` attribute (426 layers) gives
each layer's configuration and ``model_weights/<layer>/<layer>/<var>:0`` its
arrays. Keras layer names are the TF-slim scopes joined by ``_`` with the
repeat scopes renamed (``Repeat_1/block17_3/...`` -> ``Block17_3_...``, the
final ``Block8/...`` -> ``Block8_6_...``). Residual sums are ``Lambda`` layers
``x + scale * r`` with ``scale`` in ``config['arguments']``; BatchNorm layers
have ``scale=False`` (no gamma), so PyTorch's weight is set to 1.

Every convolution's kernel, stride, padding and bias flag and every block's
residual scale is checked against the PyTorch model, so a layout mismatch
fails loudly instead of giving wrong embeddings.
"""

from __future__ import annotations

import json
import re
from os import PathLike

import numpy as np
import torch
from torch import nn

from ..errors import WeightsError
from ..networks.inception_resnet_v1 import BasicConv2d, InceptionResnetV1, conv_units, slim_scope


def keras_name(scope: str, last_block8: int = 6) -> str:
    """Keras layer name for a TF-slim scope (see the module docstring)."""
    scope = re.sub(r"^Repeat(?:_\d+)?/block(\d+)_(\d+)", lambda m: f"Block{m[1]}_{m[2]}", scope)
    scope = re.sub(r"^Block8(?=/|$)", f"Block8_{last_block8}", scope)
    return scope.replace("/", "_")


class _KerasFile:
    def __init__(self, path: str | PathLike):
        import h5py

        try:
            self.h5 = h5py.File(path, "r")
            config = json.loads(self.h5.attrs["model_config"])
        except (OSError, KeyError, ValueError) as exc:
            raise WeightsError(f"{path} is not a readable Keras model file: {exc}") from exc
        self.layers = {layer["name"]: layer for layer in config["config"]["layers"]}
        self.weights = self.h5["model_weights"] if "model_weights" in self.h5 else self.h5
        self.used: set[str] = set()

    def config(self, name: str, class_name: str) -> dict:
        layer = self.layers.get(name)
        if layer is None or layer["class_name"] != class_name:
            raise WeightsError(f"Keras model has no {class_name} layer {name!r}")
        return layer["config"]

    def arrays(self, name: str) -> dict[str, np.ndarray]:
        """``{'kernel': ..., 'bias': ...}`` for one layer."""
        group = self.weights[name]
        self.used.add(name)
        out = {}
        for wname in group.attrs["weight_names"]:
            wname = wname.decode() if isinstance(wname, bytes) else wname
            short = wname.split("/")[-1].split(":")[0]
            out[short] = np.asarray(group[wname], dtype=np.float32)
        return out

    def close(self) -> None:
        self.h5.close()


def _check_conv(cfg: dict, conv: nn.Conv2d, padding: str, name: str, bias: bool) -> None:
    want = dict(filters=conv.out_channels, kernel_size=list(conv.kernel_size),
                strides=list(conv.stride), padding=padding, use_bias=bias)
    have = {k: cfg.get(k) for k in want}
    if have != want:
        raise WeightsError(f"Keras layer {name} is {have}, the network expects {want}")


def _bn_state(keras: _KerasFile, name: str, prefix: str, state: dict) -> None:
    cfg = keras.config(name, "BatchNormalization")
    if cfg.get("scale", True) or abs(cfg["epsilon"] - 1e-3) > 1e-9:
        raise WeightsError(f"{name}: expected a BatchNorm without gamma and eps 1e-3, got {cfg}")
    arrays = keras.arrays(name)
    beta = torch.from_numpy(arrays["beta"])
    state[prefix + "weight"] = torch.ones_like(beta)
    state[prefix + "bias"] = beta
    state[prefix + "running_mean"] = torch.from_numpy(arrays["moving_mean"])
    state[prefix + "running_var"] = torch.from_numpy(arrays["moving_variance"])
    state[prefix + "num_batches_tracked"] = torch.tensor(0)


def _check_scales(keras: _KerasFile, model: InceptionResnetV1, last_block8: int) -> None:
    blocks = [(f"repeat_1.{i}", m) for i, m in enumerate(model.repeat_1)]
    blocks += [(f"repeat_2.{i}", m) for i, m in enumerate(model.repeat_2)]
    blocks += [(f"repeat_3.{i}", m) for i, m in enumerate(model.repeat_3)]
    blocks += [("block8", model.block8)]
    for path, block in blocks:
        name = keras_name(slim_scope(path), last_block8) + "_ScaleSum"
        scale = keras.config(name, "Lambda")["arguments"]["scale"]
        if abs(scale - block.scale) > 1e-9:
            raise WeightsError(f"{name} scales by {scale}, the network by {block.scale}")
        has_relu = (name.replace("_ScaleSum", "_Activation")) in keras.layers
        if has_relu != isinstance(block.relu, nn.ReLU):
            raise WeightsError(f"{name}: ReLU after the residual sum does not match")


def convert_keras_h5(path: str | PathLike, model: InceptionResnetV1 | None = None
                     ) -> dict[str, torch.Tensor]:
    """A state_dict for ``InceptionResnetV1(folded_bn=False)`` from ``facenet_keras.h5``."""
    keras = _KerasFile(path)
    try:
        if model is None:
            units = keras.config("Bottleneck", "Dense")["units"]
            model = InceptionResnetV1(embedding_size=units)
        if model.folded_bn:
            raise WeightsError("Keras weights keep their batch norms: build with folded_bn=False")
        last = len(model.repeat_3) + 1
        _check_scales(keras, model, last)
        state: dict[str, torch.Tensor] = {}
        for path_, unit in conv_units(model):
            name = keras_name(slim_scope(path_), last)
            cfg = keras.config(name, "Conv2D")
            arrays = keras.arrays(name)
            if isinstance(unit, BasicConv2d):
                _check_conv(cfg, unit.conv, unit.padding, name, bias=False)
                state[f"{path_}.conv.weight"] = torch.from_numpy(arrays["kernel"].transpose(3, 2, 0, 1))
                _bn_state(keras, name + "_BatchNorm", f"{path_}.bn.", state)
            else:  # residual up-projection: a plain biased 1x1 conv
                _check_conv(cfg, unit, "same", name, bias=True)
                state[f"{path_}.weight"] = torch.from_numpy(arrays["kernel"].transpose(3, 2, 0, 1))
                state[f"{path_}.bias"] = torch.from_numpy(arrays["bias"])
        dense = keras.config("Bottleneck", "Dense")
        if dense.get("use_bias") or dense["units"] != model.embedding_size:
            raise WeightsError(f"Bottleneck is {dense}, expected {model.embedding_size} units, no bias")
        state["bottleneck_linear.weight"] = torch.from_numpy(keras.arrays("Bottleneck")["kernel"].T.copy())
        _bn_state(keras, "Bottleneck_BatchNorm", "bottleneck_bn.", state)
        with_weights = {n for n, l in keras.layers.items()
                        if l["class_name"] in ("Conv2D", "BatchNormalization", "Dense")}
        if with_weights - keras.used:
            raise WeightsError(f"Keras layers left unconverted: {sorted(with_weights - keras.used)[:5]}")
    finally:
        keras.close()
    return {k: v.contiguous() for k, v in state.items()}
