"""Derive the 68-point alignment template ("align68") from celeba-299 (writes src/facespace/data/template68.json).

    python benchmarks/derive_template68.py [--per-identity 2]

celeba-299 is training/development data (never LFW). For the first ``--per-identity`` images of
each identity: MTCNN's central face, dlib68's 68 points on its box, carried into the "align"
crop's unit square by the 5-point similarity transform onto ``alignment.DEFAULT_TEMPLATE``; the
mean over faces, mirrored to be left/right symmetric. So an "align68" crop keeps the "align"
crop's framing (the one the networks were measured with) but fits 68 points, not 5.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from facespace import FacePipeline
from facespace.alignment import DEFAULT_TEMPLATE, MIRROR_68, similarity_transform
from facespace.face_choice import choose_face
from facespace.imageio import load_image
from facespace.landmarks.registry import build_landmarker

from _paths import DATA, REPO

CELEBA = DATA / "celeba-299" / "faces"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-identity", type=int, default=2)
    args = parser.parse_args()
    paths = [p for d in sorted(CELEBA.iterdir()) if d.is_dir() for p in sorted(d.glob("*.jpg"))[:args.per_identity]]
    pipeline = FacePipeline(align="align")
    landmarker = build_landmarker("dlib68")
    points = []
    for path in paths:
        image = load_image(path)
        face = choose_face(pipeline.detect(image), image.shape, "central")
        if face is None:
            continue
        matrix = similarity_transform(face.landmarks, DEFAULT_TEMPLATE)
        p68 = landmarker.locate(image, np.asarray(face.box)[None, :4])[0].astype(np.float64)
        points.append(p68 @ matrix[:, :2].T + matrix[:, 2])
    mean = np.mean(points, axis=0)
    template = (mean + mean[list(MIRROR_68)] * [-1, 1] + [1, 0]) / 2
    out = {"source": "celeba-299, first %d images per identity" % args.per_identity, "faces": len(points),
           "landmarks": "dlib68 on the MTCNN box", "frame": "unit square of the 5-point 'align' crop",
           "template": np.round(template, 4).tolist()}
    (REPO / "src" / "facespace" / "data" / "template68.json").write_text(json.dumps(out, indent=1) + "\n")
    print(len(points), "faces")
    return 0


if __name__ == "__main__":
    sys.exit(main())
