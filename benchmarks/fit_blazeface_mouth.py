"""Fit BlazeFace's mouth-corner offsets (detection/blazeface.py, ``_Variant.mouth``) on
development photos, and report how far BlazeFace's five points land from MTCNN's.

    python benchmarks/fit_blazeface_mouth.py [--per-identity 2]

BlazeFace gives the mouth centre, not its corners. On CelebA-299 (development data, never LFW)
both detectors run on each photo; for each face both find (IoU >= 0.5), MTCNN's two corners are
expressed from BlazeFace's mouth centre in BlazeFace's eye frame (e: the left-to-right eye
vector, n: e turned to point down the face). The medians are the offsets. Errors are reported
as a fraction of MTCNN's inter-ocular distance, before (corners at the mouth centre) and after.
Writes benchmarks/results/blazeface_mouth.json.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from facespace.detection.blazeface import BlazeFace
from facespace.detection.mtcnn import MTCNN
from facespace.detection.nms import pairwise_overlap
from facespace.evaluation.report import machine_info
from facespace.imageio import load_image

from _paths import DATA, RESULTS


def matched_points(paths, blaze: BlazeFace, mtcnn: MTCNN) -> tuple[np.ndarray, np.ndarray]:
    """BlazeFace's raw mouth centres and five points, and MTCNN's five points, of faces both found."""
    bf_all, mt_all = [], []
    for start in range(0, len(paths), 32):
        images = [load_image(p) for p in paths[start : start + 32]]
        for b, m in zip(blaze.detect(images), mtcnn.detect(images)):
            if not len(b) or not len(m):
                continue
            iou = pairwise_overlap(b.boxes[:1], m.boxes)[0]
            if iou.max() >= 0.5:
                bf_all.append(b.landmarks[0])
                mt_all.append(m.landmarks[iou.argmax()])
    return np.array(bf_all), np.array(mt_all)


def mouth_centre(bf: np.ndarray, down: float) -> np.ndarray:
    """BlazeFace's own mouth centre: the mean of the derived corners, less the shipped ``down`` offset."""
    e = bf[:, 1] - bf[:, 0]
    return bf[:, 3:5].mean(1) - down * np.stack([-e[:, 1], e[:, 0]], 1)


def frame_coords(bf: np.ndarray, corners: np.ndarray, down: float) -> np.ndarray:
    """(N, 2 corners, 2) corners from BlazeFace's mouth centre in units of e and n."""
    e = bf[:, 1] - bf[:, 0]
    n = np.stack([-e[:, 1], e[:, 0]], 1)
    d = corners - mouth_centre(bf, down)[:, None]
    sq = (e * e).sum(1)[:, None]
    return np.stack([(d * e[:, None]).sum(2) / sq, (d * n[:, None]).sum(2) / sq], 2)


def error(a: np.ndarray, b: np.ndarray, iod: np.ndarray) -> float:
    """Mean point distance in units of each face's inter-ocular distance."""
    return float(np.mean(np.linalg.norm(a - b, axis=-1) / iod[:, None]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-identity", type=int, default=2)
    args = parser.parse_args()
    folders = sorted((DATA / "celeba-299" / "faces").iterdir())
    paths = [p for f in folders for p in sorted(f.glob("*.jpg"))[: args.per_identity]]
    out = {"data": f"celeba-299, first {args.per_identity} photos of each of {len(folders)} identities",
           "photos": len(paths)}
    for rng in ("short", "full"):
        blaze = BlazeFace(rng)
        bf, mt = matched_points(paths, blaze, MTCNN.pretrained())
        coords = frame_coords(bf, mt[:, 3:5], blaze.variant.mouth[1])
        along = float(np.median(np.concatenate([-coords[:, 0, 0], coords[:, 1, 0]])))
        down = float(np.median(coords[:, :, 1]))
        iod = np.linalg.norm(mt[:, 1] - mt[:, 0], axis=1)
        centre = mouth_centre(bf, blaze.variant.mouth[1])[:, None].repeat(2, 1)
        errors = {"eyes": error(bf[:, :2], mt[:, :2], iod), "nose": error(bf[:, 2:3], mt[:, 2:3], iod),
                  "mouth_corners_at_centre": error(centre, mt[:, 3:5], iod),
                  "mouth_corners_as_shipped": error(bf[:, 3:5], mt[:, 3:5], iod)}
        out[rng] = {"faces_matched": len(bf), "shipped_offsets": blaze.variant.mouth,
                    "mouth_along": round(along, 4), "mouth_down": round(down, 4), "error_per_iod": errors}
        print(rng, json.dumps(out[rng]))
    out["machine"] = machine_info()
    (RESULTS / "blazeface_mouth.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
