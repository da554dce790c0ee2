"""Face detection: MTCNN (P-, R-, O-Net) with our own vectorised NMS."""

from .mtcnn import MTCNN
from .types import Detections

__all__ = ["MTCNN", "Detections"]
