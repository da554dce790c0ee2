"""MediaPipe's face mesh (Kartynnik et al., "Real-time Facial Surface Geometry from Monocular Video
on Mobile GPUs", 2019): 468 3-D points from a 192x192 face crop, plus a face-presence logit.

The layout follows ``face_landmark.tflite`` op for op: a BlazeFace-style residual backbone with
PReLU activations (:class:`.blazeface.BlazeBlock`), then two heads that share the 6x6 features.
Input: NCHW RGB in [0, 1]. Output: points (N, 1404) = 468 x (x, y, z) in pixels of the 192x192
crop (z relative, same scale as x), and the logit (N, 1) that the crop holds a face.
"""

from __future__ import annotations

import torch
from torch import nn

from .blazeface import SameConv, blocks
from .registry import register_model

__all__ = ["FaceMesh"]

_ACT = "prelu"


class FaceMesh(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(SameConv(3, 16, 3, 2), nn.PReLU(16))
        self.backbone = blocks([(16, 1, 2), (32, 2, 3), (64, 2, 3), (128, 2, 3), (128, 2, 3)], 16, _ACT)
        self.mesh = nn.Sequential(blocks([(128, 2, 3)], 128, _ACT), nn.Conv2d(128, 32, 1), nn.PReLU(32),
                                  blocks([(32, 1, 1)], 32, _ACT), nn.Conv2d(32, 1404, 3, 3))
        self.presence = nn.Sequential(blocks([(128, 2, 1)], 128, _ACT), nn.Conv2d(128, 32, 1), nn.PReLU(32),
                                      blocks([(32, 1, 1)], 32, _ACT), nn.Conv2d(32, 1, 3, 3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x``: (N, 3, 192, 192) in [0, 1] -> points (N, 1404), face logit (N, 1)."""
        features = self.backbone(self.stem(x))
        return self.mesh(features).flatten(1), self.presence(features).flatten(1)


@register_model("facemesh", 192, "facemesh")
def facemesh(**_: object) -> FaceMesh:
    return FaceMesh()
