"""A tiny reader for TensorFlow frozen graphs (``GraphDef`` protobufs).

Only the protobuf wire format is decoded here, so neither ``protobuf`` nor
TensorFlow is needed. The subset read is::

    GraphDef    1: node (NodeDef, repeated)
    NodeDef     1: name  2: op  3: input (repeated)  5: attr (map<string, AttrValue>)
    AttrValue   1: list  2: s  3: i  4: f  5: b  6: type  7: shape  8: tensor
    ListValue   2: s  3: i  4: f  5: b  6: type  (repeated, ints/floats maybe packed)
    TensorProto 1: dtype  2: tensor_shape  4: tensor_content  5: float_val
                6: double_val  7: int_val  10: int64_val  11: bool_val
    TensorShapeProto  2: dim (Dim 1: size)

Everything else is skipped. Field numbers are those of TensorFlow's
``graph.proto``, ``node_def.proto``, ``attr_value.proto`` and ``tensor.proto``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from os import PathLike

import numpy as np

from ..errors import WeightsError

# TensorFlow DataType enum values -> numpy dtypes (only the plain numeric ones).
DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"),   # DT_FLOAT
    2: np.dtype("<f8"),   # DT_DOUBLE
    3: np.dtype("<i4"),   # DT_INT32
    4: np.dtype("u1"),    # DT_UINT8
    5: np.dtype("<i2"),   # DT_INT16
    6: np.dtype("i1"),    # DT_INT8
    9: np.dtype("<i8"),   # DT_INT64
    10: np.dtype("?"),    # DT_BOOL
    17: np.dtype("<u2"),  # DT_UINT16
    19: np.dtype("<f2"),  # DT_HALF
}

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _fields(buf: memoryview):
    """Yield ``(field_number, wire_type, value)`` for each field of one message.

    ``value`` is an int for varints, a memoryview for length-delimited fields
    and the raw 4/8 bytes for fixed-width ones.
    """
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _varint(buf, pos)
        elif wire == _LEN:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + size], pos + size
        elif wire == _I32:
            value, pos = buf[pos:pos + 4], pos + 4
        elif wire == _I64:
            value, pos = buf[pos:pos + 8], pos + 8
        else:
            raise WeightsError(f"unsupported protobuf wire type {wire}")
        if pos > end:
            raise WeightsError("truncated protobuf message")
        yield number, wire, value


def _signed(value: int) -> int:
    """Two's-complement view of a 64-bit varint (int64 fields are not zigzagged)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _repeated_ints(wire: int, value) -> list[int]:
    if wire == _VARINT:
        return [_signed(value)]
    out, pos = [], 0
    while pos < len(value):
        v, pos = _varint(value, pos)
        out.append(_signed(v))
    return out


def _repeated_fixed(wire: int, value, fmt: str) -> list:
    data = bytes(value)
    return list(struct.unpack(f"<{len(data) // struct.calcsize(fmt)}{fmt}", data))


def parse_shape(buf: memoryview) -> tuple[int, ...]:
    dims = []
    for number, _, value in _fields(buf):
        if number == 2:  # dim
            size = 0
            for n, _, v in _fields(value):
                if n == 1:
                    size = _signed(v)
            dims.append(size)
    return tuple(dims)


def parse_tensor(buf: memoryview) -> np.ndarray:
    """Decode a ``TensorProto`` into a numpy array (a copy, owning its data)."""
    dtype_id, shape, content = 1, (), None
    values: list = []
    for number, wire, value in _fields(buf):
        if number == 1:
            dtype_id = value
        elif number == 2:
            shape = parse_shape(value)
        elif number == 4:
            content = bytes(value)
        elif number == 5:
            values += _repeated_fixed(wire, value, "f")
        elif number == 6:
            values += _repeated_fixed(wire, value, "d")
        elif number in (7, 10, 11):
            values += _repeated_ints(wire, value)
    dtype = DTYPES.get(dtype_id)
    if dtype is None:
        raise WeightsError(f"unsupported tensor dtype {dtype_id}")
    count = int(np.prod(shape)) if shape else 1
    if content is not None:
        array = np.frombuffer(content, dtype=dtype).copy()
    elif len(values) == count:
        array = np.asarray(values, dtype=dtype)
    elif values:  # protobuf repeats the last value to fill the shape
        array = np.full(count, values[-1], dtype=dtype)
        array[: len(values)] = values
    else:
        array = np.zeros(count, dtype=dtype)
    return array.reshape(shape).astype(dtype.newbyteorder("="), copy=False)


def _parse_list(buf: memoryview) -> list:
    out: list = []
    for number, wire, value in _fields(buf):
        if number == 2:
            out.append(bytes(value).decode("utf-8", "replace"))
        elif number in (3, 6):
            out += _repeated_ints(wire, value)
        elif number == 4:
            out += _repeated_fixed(wire, value, "f")
        elif number == 5:
            out += [bool(v) for v in _repeated_ints(wire, value)]
    return out


def parse_attr(buf: memoryview):
    """Decode an ``AttrValue`` into a plain Python value (or ndarray for tensors)."""
    for number, wire, value in _fields(buf):
        if number == 1:
            return _parse_list(value)
        if number == 2:
            return bytes(value).decode("utf-8", "replace")
        if number in (3, 6):
            return _signed(value)
        if number == 4:
            return struct.unpack("<f", bytes(value))[0]
        if number == 5:
            return bool(value)
        if number == 7:
            return parse_shape(value)
        if number == 8:
            return parse_tensor(value)
    return None


@dataclass
class NodeDef:
    name: str
    op: str
    input: list[str] = field(default_factory=list)
    attr: dict = field(default_factory=dict)


def parse_node(buf: memoryview) -> NodeDef:
    node = NodeDef(name="", op="")
    for number, _, value in _fields(buf):
        if number == 1:
            node.name = bytes(value).decode()
        elif number == 2:
            node.op = bytes(value).decode()
        elif number == 3:
            node.input.append(bytes(value).decode())
        elif number == 5:
            key, attr = "", None
            for n, _, v in _fields(value):
                if n == 1:
                    key = bytes(v).decode()
                elif n == 2:
                    attr = parse_attr(v)
            node.attr[key] = attr
    return node


def read_graph(source: str | PathLike | bytes) -> list[NodeDef]:
    """All nodes of a serialized ``GraphDef`` (a path or the raw bytes), in order."""
    if not isinstance(source, (bytes, bytearray)):
        with open(source, "rb") as handle:
            source = handle.read()
    try:
        return [parse_node(v) for n, _, v in _fields(memoryview(source)) if n == 1]
    except (IndexError, UnicodeDecodeError, struct.error, ValueError) as exc:
        raise WeightsError(f"not a readable TensorFlow GraphDef: {exc}") from exc


def read_constants(source: str | PathLike | bytes | list[NodeDef]) -> dict[str, np.ndarray]:
    """``{node name: array}`` for every ``Const`` node of a frozen graph."""
    nodes = source if isinstance(source, list) else read_graph(source)
    return {n.name: n.attr["value"] for n in nodes if n.op == "Const" and "value" in n.attr}
