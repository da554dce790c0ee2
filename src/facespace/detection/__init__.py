"""Face detection: MTCNN (P-, R-, O-Net) with our own vectorised NMS.

:mod:`.types` (detections, the ``Detector`` protocol, backends) is light; :class:`MTCNN`
pulls in torch and is imported on first use, so the CLI can read the option types cheaply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .types import Detections, Detector

if TYPE_CHECKING:
    from .mtcnn import MTCNN

__all__ = ["MTCNN", "Detections", "Detector"]


def __getattr__(name: str) -> Any:
    if name == "MTCNN":
        from .mtcnn import MTCNN

        return MTCNN
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
