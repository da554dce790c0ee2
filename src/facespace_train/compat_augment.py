"""More paired embeddings for the compatibility maps from the same photos: augmented views, no labels.

A map is fitted on pairs (old model's embedding, new model's embedding) of one face. Each
:class:`AugmentView` perturbs the detected face -- its box and landmarks by one similarity about
the face centre (a shift of up to ``shift`` face widths, a scale within ``1 +- scale``) -- and
mirrors it with probability ``flip``; both models then crop the perturbed face their own registered
way and embed it, so every view adds one more pair per image. The draw of each image depends only
on the view and the image's bytes (sha1), not on the order of the images.

Views are embedded once and cached beside the evaluation cache
(``<embedding cache>/compat-augmented/<model>-<view>-<hash>.npz``: the images' sha1 keys and vectors),
keyed by the model's preprocessing id and the view.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from facespace.errors import OptionError

if TYPE_CHECKING:
    from facespace import FacePipeline
    from facespace.types import Face

__all__ = ["AugmentView", "DEFAULT_VIEWS", "augmented_embeddings", "perturb_face", "views_named"]

CACHE_VERSION = 1


@dataclass(frozen=True)
class AugmentView:
    """One augmented view of every image: mirror probability, largest shift (face widths), scale range."""

    name: str
    flip: float = 0.0
    shift: float = 0.0
    scale: float = 0.0
    seed: int = 0

    def draw(self, sha1: str) -> tuple[float, float, float, bool]:
        """(dx, dy, scale, mirrored) for the image whose bytes have this sha1."""
        rng = np.random.default_rng([self.seed, int(sha1[:12], 16)])
        dx, dy = rng.uniform(-self.shift, self.shift, 2)
        return float(dx), float(dy), float(1 + rng.uniform(-self.scale, self.scale)), bool(rng.random() < self.flip)


#: The views ``facespace_train.compat_fit`` adds by default: the mirror image, and jittered crops.
DEFAULT_VIEWS: tuple[AugmentView, ...] = (
    AugmentView("mirror", flip=1.0),
    AugmentView("jitter1", flip=0.5, shift=0.05, scale=0.08, seed=1),
    AugmentView("jitter2", flip=0.5, shift=0.05, scale=0.08, seed=2),
    AugmentView("jitter3", flip=0.5, shift=0.05, scale=0.08, seed=3),
)


def views_named(names: str | Sequence[str]) -> tuple[AugmentView, ...]:
    """The :data:`DEFAULT_VIEWS` of these names (comma-separated or a list; empty: none)."""
    wanted = [n for n in (names.split(",") if isinstance(names, str) else names) if n]
    known = {v.name: v for v in DEFAULT_VIEWS}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise OptionError(f"unknown augmented view(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return tuple(known[n] for n in wanted)


def perturb_face(face: "Face", dx: float, dy: float, scale: float) -> "Face":
    """``face`` with box and landmarks scaled by ``scale`` about the box centre, then shifted by
    (dx, dy) box widths."""
    box = np.asarray(face.box, np.float64)
    centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
    offset = np.array([dx, dy]) * (box[2] - box[0])

    def move(points: np.ndarray) -> np.ndarray:
        return (points - centre) * scale + centre + offset

    corners = move(box[:4].reshape(2, 2)).reshape(4)
    landmarks = None if face.landmarks is None else move(np.asarray(face.landmarks, np.float64)).astype(np.float32)
    return replace(face, box=np.r_[corners, box[4:]].astype(np.float32), landmarks=landmarks)


def _cache_file(pipeline: "FacePipeline", view: AugmentView, root: Path) -> Path:
    key = json.dumps({"version": CACHE_VERSION, "preprocessing": pipeline.preprocessing_id, "view": asdict(view)},
                     sort_keys=True)
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    return root / "compat-augmented" / f"{pipeline.model_name}-{view.name}-{digest}.npz"


def augmented_embeddings(pipeline: "FacePipeline", paths: Sequence[os.PathLike], view: AugmentView,
                         cache_root: str | os.PathLike | None = None, chunk: int = 64) -> np.ndarray:
    """(N, D) unit embeddings of ``view`` of each image's face (the face ``embed_paths`` embeds)."""
    from facespace.evaluation.cache import cached_faces, default_cache_root, file_sha1

    root = Path(cache_root) if cache_root is not None else default_cache_root()
    target = _cache_file(pipeline, view, root)
    sha1s = [file_sha1(p) for p in paths]
    known: dict[str, np.ndarray] = {}
    if target.is_file():
        with np.load(target) as stored:
            known = dict(zip(stored["keys"].tolist(), stored["vectors"]))
    todo = [i for i, k in enumerate(sha1s) if k not in known]
    faces = [face for face, _ in cached_faces(pipeline, [paths[i] for i in todo])] if todo else []
    for begin in range(0, len(todo), chunk):
        crops = []
        for i, face in zip(todo[begin:begin + chunk], faces[begin:begin + chunk]):
            dx, dy, scale, mirrored = view.draw(sha1s[i])
            crop = pipeline.crop(pipeline.load(paths[i]), perturb_face(face, dx, dy, scale))
            crops.append(crop[:, ::-1] if mirrored else crop)
        vectors = pipeline.embedder.embed_crops(np.ascontiguousarray(np.stack(crops)), flip=False)
        known.update(zip((sha1s[i] for i in todo[begin:begin + chunk]), vectors))
        if (begin // chunk) % 16 == 15 or begin + chunk >= len(todo):
            _write(target, known)
    return np.stack([known[k] for k in sha1s]).astype(np.float32)


def _write(target: Path, known: dict[str, np.ndarray]) -> None:
    """All vectors known so far, replacing the file atomically (an interrupted run keeps what it wrote)."""
    from facespace.files import atomic_path

    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, keys=np.array(list(known)), vectors=np.stack(list(known.values())).astype(np.float32))
