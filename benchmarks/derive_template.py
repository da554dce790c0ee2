"""Derive the 5-point alignment template from non-test images (writes benchmarks/results/template.json).

The pretrained FaceNet models were trained on Sandberg-style crops: the MTCNN
box plus a 32 px margin, resized to 160x160. The template is the mean position
of the MTCNN landmarks inside such crops, mirrored to be left/right symmetric,
so "align" mode keeps the training framing while making faces upright.

The images are never LFW view 2's: ``--source lfw-dev`` (default) takes the LFW people
who appear in no ``pairs.txt`` pair (1,468 people), ``--source celeba`` the celeba-299
crops. Both are written; the library's ``DEFAULT_TEMPLATE`` is the ``lfw-dev`` one.

    python benchmarks/derive_template.py --images 1000
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np

from facespace import FacePipeline
from facespace.face_choice import choose_index
from facespace.imageio import load_image

from _paths import DATA, RESULTS

LFW = DATA / "lfw" / "lfw-deepfunneled"
MIRROR = [1, 0, 2, 4, 3]  # left eye <-> right eye, mouth left <-> mouth right


def view2_people() -> set[str]:
    """Every name in LFW view 2 (pairs.txt): these people's images are test images."""
    names: set[str] = set()
    for line in (DATA / "lfw" / "pairs.txt").read_text().splitlines()[1:]:
        fields = line.split()
        names.update([fields[0]] if len(fields) == 3 else [fields[0], fields[2]])
    return names


def source_images(source: str) -> list[Path]:
    if source == "celeba":
        return sorted((DATA / "celeba-299" / "faces").glob("*/*.jpg"))
    test = view2_people()
    return sorted(p for p in LFW.glob("*/*.jpg") if p.parent.name not in test)


def landmarks_in_margin_crop(paths: list[Path], margin: int) -> list[np.ndarray]:
    """MTCNN landmarks of each image's central face, as fractions of its margin crop."""
    pipeline = FacePipeline(align="margin")
    points = []
    for path in paths:
        image = load_image(path)
        faces = pipeline.detect_arrays([image])[0]
        chosen = choose_index([f.box for f in faces], image.shape, "central")
        if chosen is None:
            continue
        face = faces[chosen]
        h, w = image.shape[:2]
        half = margin / 2
        x1, y1 = max(np.floor(face.box[0]) - half, 0), max(np.floor(face.box[1]) - half, 0)
        x2, y2 = min(np.floor(face.box[2]) + half, w), min(np.floor(face.box[3]) + half, h)
        points.append((face.landmarks - [x1, y1]) / [x2 - x1, y2 - y1])
    return points


def derive(source: str, images: int, margin: int, seed: int) -> dict:
    paths = source_images(source)
    random.Random(seed).shuffle(paths)
    points = landmarks_in_margin_crop(paths[:images], margin)
    mean = np.mean(points, axis=0)
    mirrored = mean[MIRROR] * [-1, 1] + [1, 0]
    template = (mean + mirrored) / 2
    return {"source": source, "candidates": len(paths), "faces": len(points), "margin": margin,
            "template": np.round(template, 4).tolist(), "unsymmetrised": np.round(mean, 4).tolist()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--margin", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = {source: derive(source, args.images, args.margin, args.seed) for source in ("lfw-dev", "celeba")}
    out["chosen"] = "lfw-dev"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "template.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
