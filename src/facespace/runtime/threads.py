"""The CPU thread default for inference.

PyTorch already uses one intra-op thread per physical core, which is the
fastest setting on an idle machine; on a shared one (or when several
facespace processes run side by side) fewer threads avoid oversubscription.
``FACESPACE_NUM_THREADS=N`` sets it for every facespace network (torch and
ONNX Runtime alike); it is applied once, when the first network loads, and
never overrides an explicit ``torch.set_num_threads`` made before that unless
the variable is set; :func:`set_thread_default` gives a process its own default
(the server: one thread per inference). None of these imports torch unless a
torch network is used: the ONNX Runtime path starts without it.
"""

from __future__ import annotations

import os
import sys

_applied = False
#: A process's own default where ``FACESPACE_NUM_THREADS`` is unset (see :func:`set_thread_default`).
_process_default = 0


def _requested() -> int:
    """``FACESPACE_NUM_THREADS`` as a positive count, else the process's default, else 0."""
    value = os.environ.get("FACESPACE_NUM_THREADS", "").strip()
    try:
        return max(int(value), 0) if value else _process_default
    except ValueError:
        return _process_default


def set_thread_default(threads: int) -> int:
    """Make ``threads`` this process's thread count for every network where
    ``FACESPACE_NUM_THREADS`` is unset (the server's one thread per inference), without importing
    torch: applied to torch now if it is loaded, else when it loads. Returns the count in force."""
    global _process_default
    _process_default = max(int(threads), 1)
    if "torch" in sys.modules and not os.environ.get("FACESPACE_NUM_THREADS", "").strip():
        sys.modules["torch"].set_num_threads(_process_default)
    return _requested()


def apply_thread_default() -> int:
    """Apply ``FACESPACE_NUM_THREADS`` to torch (once) and return torch's intra-op thread count."""
    global _applied
    import torch

    if not _applied:
        _applied = True
        if _requested():
            torch.set_num_threads(_requested())
    return torch.get_num_threads()


def ort_threads() -> int:
    """ONNX Runtime's intra-op threads: ``FACESPACE_NUM_THREADS``; else torch's current count
    where torch is already in use (one knob for both runtimes); else 0, ONNX Runtime's own
    default (one thread per physical core, as torch's)."""
    if _requested():
        return _requested()
    if "torch" in sys.modules:
        return apply_thread_default()
    return 0
