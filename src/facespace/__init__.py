"""facespace: FaceNet face embeddings for verification, identification and clustering.

The data's path: images -> detection (MTCNN) -> alignment -> embedding
(Inception-ResNet-v1) -> comparison. :class:`FacePipeline` runs it all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .version import __version__

from .errors import (
    ChecksumError,
    FacespaceError,
    ImageLoadError,
    ImageTooLargeError,
    ModelMismatchError,
    NoFaceError,
    UnknownModelError,
    WeightsError,
)
from .imageio import load_image
from .pretrained.registry import get_config, list_models
from .types import EmbeddedFace, Face, ImageResult, Verification

if TYPE_CHECKING:
    from .pipeline import DetectorSettings, FacePipeline

__all__ = [
    "FacePipeline", "DetectorSettings", "Face", "EmbeddedFace", "ImageResult", "Verification",
    "load_image", "get_config", "list_models",
    "FacespaceError", "ImageLoadError", "ImageTooLargeError", "NoFaceError", "UnknownModelError",
    "WeightsError", "ChecksumError", "ModelMismatchError",
]


def __getattr__(name: str) -> Any:
    # The pipeline pulls in torch; import it only when asked for.
    if name in ("FacePipeline", "DetectorSettings"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'facespace' has no attribute {name!r}")
