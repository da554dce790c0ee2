"""A reader for TensorFlow Lite model files, in pure Python (no TensorFlow, no flatbuffers package).

A ``.tflite`` file is a FlatBuffer (file identifier ``TFL3``) of the published schema
``tensorflow/lite/schema/schema.fbs``: a ``Model`` holds ``operator_codes``, ``subgraphs``
(each with ``tensors``, ``inputs``, ``outputs`` and ``operators``) and ``buffers`` (the
constant data tensors point at by index). This module reads the parts an inference graph of
plain float ops needs (field numbers below are the schema's), as :mod:`.graphdef` reads frozen
TF graphs, so converters can map the operators onto PyTorch modules.

FlatBuffers layout, as used here: a table starts with an int32 offset back to its vtable; the
vtable lists uint16 byte offsets of the table's fields (0: absent, the schema default applies);
references (tables, vectors, strings) are uint32 offsets forward from where they are stored;
a vector is a uint32 length followed by its elements; a union is a type byte plus a reference.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import WeightsError

__all__ = ["TFLiteModel", "Tensor", "Operator", "read_tflite", "OPERATOR_NAMES", "ACTIVATIONS"]

#: BuiltinOperator codes (schema.fbs ``enum BuiltinOperator``) of the operators this reader names.
OPERATOR_NAMES: dict[int, str] = {
    0: "ADD", 1: "AVERAGE_POOL_2D", 2: "CONCATENATION", 3: "CONV_2D", 4: "DEPTHWISE_CONV_2D",
    6: "DEQUANTIZE", 9: "FULLY_CONNECTED", 14: "LOGISTIC", 17: "MAX_POOL_2D", 18: "MUL",
    19: "RELU", 21: "RELU6", 22: "RESHAPE", 23: "RESIZE_BILINEAR", 25: "SOFTMAX", 28: "TANH",
    32: "CUSTOM", 34: "PAD", 39: "TRANSPOSE", 40: "MEAN", 41: "SUB", 54: "PRELU",
    97: "RESIZE_NEAREST_NEIGHBOR",
}
#: ActivationFunctionType (schema.fbs) fused into an operator.
ACTIVATIONS = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}
#: TensorType -> numpy dtype (the types whose data this reader decodes).
_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8}
#: Option tables by operator: (field name, struct format of a scalar or "[i" an int vector, default).
_OPTIONS: dict[str, list[tuple[str, str, object]]] = {
    "CONV_2D": [("padding", "b", 0), ("stride_w", "i", 1), ("stride_h", "i", 1),
                ("activation", "b", 0), ("dilation_w", "i", 1), ("dilation_h", "i", 1)],
    "DEPTHWISE_CONV_2D": [("padding", "b", 0), ("stride_w", "i", 1), ("stride_h", "i", 1),
                          ("depth_multiplier", "i", 0), ("activation", "b", 0),
                          ("dilation_w", "i", 1), ("dilation_h", "i", 1)],
    "MAX_POOL_2D": [("padding", "b", 0), ("stride_w", "i", 1), ("stride_h", "i", 1),
                    ("filter_w", "i", 0), ("filter_h", "i", 0), ("activation", "b", 0)],
    "ADD": [("activation", "b", 0)],
    "MUL": [("activation", "b", 0)],
    "CONCATENATION": [("axis", "i", 0), ("activation", "b", 0)],
    "RESHAPE": [("new_shape", "[i", ())],
    "RESIZE_BILINEAR": [("new_height", "i", 0), ("new_width", "i", 0), ("align_corners", "?", False),
                        ("half_pixel_centers", "?", False)],
    "FULLY_CONNECTED": [("activation", "b", 0)],
}
_OPTIONS["AVERAGE_POOL_2D"] = _OPTIONS["MAX_POOL_2D"]


@dataclass(frozen=True)
class Tensor:
    """One tensor of a subgraph: NHWC shape, dtype, and its constant data (None for activations)."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    data: np.ndarray | None


@dataclass(frozen=True)
class Operator:
    """One operator: its name (``CONV_2D``...), input/output tensor indices (-1: optional input
    absent) and its decoded builtin options (see ``_OPTIONS``)."""

    name: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TFLiteModel:
    """The first subgraph of a TFLite file."""

    tensors: list[Tensor]
    operators: list[Operator]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]

    def constant(self, index: int) -> np.ndarray:
        """The float32 value of a constant tensor, following a DEQUANTIZE from float16 if need be."""
        data = self.tensors[index].data
        if data is None:
            producer = next((op for op in self.operators if index in op.outputs), None)
            if producer is None or producer.name != "DEQUANTIZE":
                raise WeightsError(f"tensor {self.tensors[index].name!r} is not a constant")
            return self.constant(producer.inputs[0])
        return data.astype(np.float32)

    def compute_operators(self) -> list[Operator]:
        """The operators that compute on activations (DEQUANTIZE of float16 weights is folded away)."""
        return [op for op in self.operators if op.name != "DEQUANTIZE"]


class _Buffer:
    """Random access to FlatBuffer tables, vectors and scalars of one file."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def u32(self, pos: int) -> int:
        return struct.unpack_from("<I", self.data, pos)[0]

    def field_pos(self, table: int, index: int) -> int | None:
        """Absolute position of field ``index`` of the table at ``table`` (None when absent)."""
        vtable = table - struct.unpack_from("<i", self.data, table)[0]
        vt_size = struct.unpack_from("<H", self.data, vtable)[0]
        slot = 4 + 2 * index
        if slot >= vt_size:
            return None
        offset = struct.unpack_from("<H", self.data, vtable + slot)[0]
        return table + offset if offset else None

    def scalar(self, table: int, index: int, fmt: str, default):
        pos = self.field_pos(table, index)
        return default if pos is None else struct.unpack_from("<" + fmt, self.data, pos)[0]

    def ref(self, table: int, index: int) -> int | None:
        pos = self.field_pos(table, index)
        return None if pos is None else pos + self.u32(pos)

    def vector(self, table: int, index: int) -> tuple[int, int]:
        """(start of elements, length) of a vector field; (0, 0) when absent."""
        pos = self.ref(table, index)
        return (0, 0) if pos is None else (pos + 4, self.u32(pos))

    def tables(self, table: int, index: int) -> list[int]:
        start, n = self.vector(table, index)
        return [start + 4 * i + self.u32(start + 4 * i) for i in range(n)]

    def array(self, table: int, index: int, dtype) -> np.ndarray:
        start, n = self.vector(table, index)
        return np.frombuffer(self.data, dtype=np.dtype(dtype).newbyteorder("<"), count=n, offset=start)

    def string(self, table: int, index: int) -> str:
        start, n = self.vector(table, index)
        return self.data[start : start + n].decode("utf-8", "replace")


def read_tflite(path: str | Path) -> TFLiteModel:
    """Parse a ``.tflite`` file (its first subgraph); a file that is not one is refused."""
    data = Path(path).read_bytes()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise WeightsError(f"{path}: not a TensorFlow Lite file (no TFL3 identifier)")
    try:
        return _read_model(_Buffer(data))
    except (struct.error, IndexError, ValueError) as exc:
        raise WeightsError(f"{path}: corrupt TensorFlow Lite file: {exc}") from exc


def _read_model(buf: _Buffer) -> TFLiteModel:
    model = buf.u32(0)
    codes = [_opcode(buf, t) for t in buf.tables(model, 1)]  # Model.operator_codes
    buffers = buf.tables(model, 4)  # Model.buffers
    subgraph = buf.tables(model, 2)[0]  # Model.subgraphs
    tensors = [_tensor(buf, i, t, buffers) for i, t in enumerate(buf.tables(subgraph, 0))]
    operators = [_operator(buf, t, codes) for t in buf.tables(subgraph, 3)]
    return TFLiteModel(tensors, operators, tuple(buf.array(subgraph, 1, np.int32).tolist()),
                       tuple(buf.array(subgraph, 2, np.int32).tolist()))


def _opcode(buf: _Buffer, table: int) -> str:
    # OperatorCode: deprecated_builtin_code (byte, 0), builtin_code (int, 3): the larger is the code.
    code = max(buf.scalar(table, 0, "b", 0), buf.scalar(table, 3, "i", 0))
    return OPERATOR_NAMES.get(code, f"BUILTIN_{code}")


def _tensor(buf: _Buffer, index: int, table: int, buffers: list[int]) -> Tensor:
    # Tensor: shape (0), type (1), buffer (2), name (3).
    shape = tuple(buf.array(table, 0, np.int32).tolist())
    kind = buf.scalar(table, 1, "b", 0)
    dtype = np.dtype(_DTYPES.get(kind, np.uint8))
    data = None
    buffer_index = buf.scalar(table, 2, "I", 0)
    if buffer_index:
        raw = buf.array(buffers[buffer_index], 0, np.uint8)  # Buffer.data
        if raw.size:
            if kind not in _DTYPES:
                raise WeightsError(f"tensor {index}: unsupported constant type {kind}")
            data = raw.view(dtype.newbyteorder("<")).reshape(shape).astype(dtype)
    return Tensor(index, buf.string(table, 3), shape, dtype, data)


def _operator(buf: _Buffer, table: int, codes: list[str]) -> Operator:
    # Operator: opcode_index (0), inputs (1), outputs (2), builtin_options_type (3), builtin_options (4).
    name = codes[buf.scalar(table, 0, "I", 0)]
    options: dict = {}
    spec = _OPTIONS.get(name)
    pos = buf.ref(table, 4)
    for i, (key, fmt, default) in enumerate(spec or []):
        if pos is None:
            options[key] = default
        elif fmt.startswith("["):
            options[key] = tuple(buf.array(pos, i, np.int32).tolist())
        else:
            options[key] = buf.scalar(pos, i, fmt, default)
    return Operator(name, tuple(buf.array(table, 1, np.int32).tolist()),
                    tuple(buf.array(table, 2, np.int32).tolist()), options)
