"""The CPU thread default for inference.

PyTorch already uses one intra-op thread per physical core, which is the
fastest setting on an idle machine; on a shared one (or when several
facespace processes run side by side) fewer threads avoid oversubscription.
``FACESPACE_NUM_THREADS=N`` sets it for every facespace network (torch and
ONNX Runtime alike); it is applied once, when the first network loads, and
never overrides an explicit ``torch.set_num_threads`` made before that unless
the variable is set.
"""

from __future__ import annotations

import os

import torch

_applied = False


def apply_thread_default() -> int:
    """Apply ``FACESPACE_NUM_THREADS`` (once) and return torch's intra-op thread count."""
    global _applied
    if not _applied:
        _applied = True
        value = os.environ.get("FACESPACE_NUM_THREADS", "").strip()
        if value:
            try:
                n = int(value)
            except ValueError:
                n = 0
            if n > 0:
                torch.set_num_threads(n)
    return torch.get_num_threads()
