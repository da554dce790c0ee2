"""One byte a dimension: int8 codes of unit embeddings (128 bytes a face for the 128-D model).

Symmetric per-vector quantisation: each vector is scaled so that its largest
component is +-127 and rounded, ``code = round(127 * x / max|x|)``. The scale
is not stored: every consumer compares unit vectors, and re-normalising the
codes (:func:`dequantize_int8`) cancels it, so a face costs exactly ``dim``
bytes and nothing has to be fitted per model. Distances can also be computed
on the codes directly (an integer dot product divided by the codes' norms).

The accuracy this costs is measured on LFW view 2 by ``benchmarks/harmonic.py``
(row "new/new int8"). :data:`INT8_CODES` names the scheme, for storage formats
that record how a vector was encoded.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np

from .comparison import unit_rows
from .errors import FacespaceError

__all__ = ["INT8_CODES", "QUANTIZATIONS", "Quantization", "dequantize_int8", "quantize_int8"]

#: What may be stored instead of float32 embeddings (``embed --quantize``, ``gallery enroll --quantize``).
Quantization = Literal["int8"]
QUANTIZATIONS: tuple[str, ...] = get_args(Quantization)

#: The name of this encoding (bump when its meaning changes).
INT8_CODES = "int8-symmetric-per-vector-v1"


def quantize_int8(vectors: np.ndarray) -> np.ndarray:
    """int8 codes (N, D) of embeddings (N, D) or (D,): each row scaled to +-127 at its largest component."""
    x = np.asarray(vectors, dtype=np.float32)
    if not np.isfinite(x).all():
        raise FacespaceError("cannot quantise embeddings holding NaN or infinite values")
    peak = np.max(np.abs(x), axis=-1, keepdims=True)
    codes = np.rint(x * (127.0 / np.maximum(peak, 1e-12)))
    return np.clip(codes, -127, 127).astype(np.int8)


def dequantize_int8(codes: np.ndarray) -> np.ndarray:
    """Unit float32 embeddings from int8 codes (the per-vector scale cancels in the normalisation)."""
    codes = np.asarray(codes)
    if codes.dtype != np.int8:
        raise FacespaceError(f"int8 codes expected, got {codes.dtype}")
    return unit_rows(codes.astype(np.float32))
