"""Derive the 5-point alignment template from LFW (writes benchmarks/results/template.json).

The pretrained FaceNet models were trained on Sandberg-style crops: the MTCNN
box plus a 32 px margin, resized to 160x160. The template is the mean position
of the MTCNN landmarks inside such crops, mirrored to be left/right symmetric,
so "align" mode keeps the training framing while making faces upright.

    python benchmarks/derive_template.py --images 1000
"""

from __future__ import annotations

import argparse
import json
import random
import sys

import numpy as np

from facespace import FacePipeline
from facespace.face_choice import choose_index
from facespace.imageio import load_image

from _paths import DATA, RESULTS

LFW = DATA / "lfw" / "lfw-deepfunneled"
MIRROR = [1, 0, 2, 4, 3]  # left eye <-> right eye, mouth left <-> mouth right


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--margin", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    paths = sorted(LFW.glob("*/*.jpg"))
    random.Random(args.seed).shuffle(paths)
    pipeline = FacePipeline(align="margin")
    points = []
    for path in paths[: args.images]:
        image = load_image(path)
        faces = pipeline.detect_arrays([image])[0]
        chosen = choose_index([f.box for f in faces], image.shape, "central")
        if chosen is None:
            continue
        face = faces[chosen]
        h, w = image.shape[:2]
        half = args.margin / 2
        x1, y1 = max(np.floor(face.box[0]) - half, 0), max(np.floor(face.box[1]) - half, 0)
        x2, y2 = min(np.floor(face.box[2]) + half, w), min(np.floor(face.box[3]) + half, h)
        points.append((face.landmarks - [x1, y1]) / [x2 - x1, y2 - y1])
    mean = np.mean(points, axis=0)
    mirrored = mean[MIRROR] * [-1, 1] + [1, 0]
    template = (mean + mirrored) / 2
    out = {"faces": len(points), "margin": args.margin, "template": np.round(template, 4).tolist(),
           "unsymmetrised": np.round(mean, 4).tolist()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "template.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
