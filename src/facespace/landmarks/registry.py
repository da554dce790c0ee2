"""The one place a landmark model's name becomes a :class:`~.types.Landmarker`."""
from __future__ import annotations

from ..errors import check_choice
from .types import LandmarkModel, Landmarker

#: The model ``facespace landmarks`` and :meth:`FacePipeline.landmarks` use unless told otherwise:
#: the lower normalised mean error on the 43 annotated dlib_faces (benchmarks/results/landmarks.md).
DEFAULT_LANDMARKER: LandmarkModel = "dlib68"


def build_landmarker(name: LandmarkModel | None = None) -> Landmarker:
    """The landmark model called ``name`` (default :data:`DEFAULT_LANDMARKER`), weights loaded."""
    name = check_choice(name or DEFAULT_LANDMARKER, LandmarkModel, "landmark model")
    if name == "dlib68":
        from .dlib68 import Dlib68

        return Dlib68()
    from .mesh import MeshLandmarker  # the face mesh's 468 points mapped to the 68

    return MeshLandmarker()
