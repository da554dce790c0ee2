"""Which torch device a network runs on: checked once, up front, with a clear error."""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from ..errors import OptionError

if TYPE_CHECKING:
    import torch


def prefers_onnx_runtime(device: str) -> bool:
    """Whether networks on ``device`` run with ONNX Runtime when no runtime is named: on the CPU,
    where it is installed (faster for the embedding, the same results, and a cached start that
    never imports torch)."""
    return device == "cpu" and importlib.util.find_spec("onnxruntime") is not None


def device_name(name: "str | torch.device") -> str:
    """``name`` checked as :func:`resolve_device` does, as a string; "cpu" is taken as it is, so a
    CPU pipeline on the ONNX Runtime path never imports torch."""
    return "cpu" if isinstance(name, str) and name == "cpu" else str(resolve_device(name))


def resolve_device(name: "str | torch.device") -> "torch.device":
    """``name`` ("cpu", "cuda", "cuda:1", "mps", or "auto": CUDA when present, else the CPU) as a
    device that exists on this machine; :class:`OptionError` otherwise (not a failure mid-run)."""
    import torch

    if isinstance(name, str) and name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise OptionError(f"unknown device {name!r}; use cpu, cuda, cuda:N, mps or auto") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise OptionError(f"device {name!r}: CUDA is not available on this machine (this torch build "
                              f"{'has no CUDA' if torch.version.cuda is None else 'finds no GPU'}); use cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise OptionError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise OptionError(f"device {name!r}: MPS is not available on this machine; use cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise OptionError(f"device {name!r}: facespace runs on cpu, cuda or mps")
    return device
