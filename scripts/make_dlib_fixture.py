"""Write tests/fixtures/dlib68_reference.json and benchmarks/results/dlib_boxes_devtrain.json with
dlib itself, the reference the numpy reader (facespace.landmarks.dlib68) is tested against.

dlib is NOT a facespace dependency. Run this once in a throwaway environment::

    python3 -m venv /tmp/dlibenv && /tmp/dlibenv/bin/pip install dlib-bin==20.0.1.post1 numpy pillow
    /tmp/dlibenv/bin/python scripts/make_dlib_fixture.py --model ~/.cache/facespace/weights/dlib68/shape_predictor_68_face_landmarks.dat

* The fixture: real faces (LFW deep-funneled, view 1 pairsDevTrain images, and one Pointing'04
  photo), each a grey crop (dlib reads an RGB pixel as its channel mean, so grey input sidesteps
  that conversion; the fixture names the image and the crop, the test rebuilds it) with a fixed box (the one dlib's HOG detector finds), and the
  68 points dlib's ``shape_predictor`` returns (dlib rounds them to whole pixels).
* The boxes: dlib's frontal HOG detector (upsample 1) on the first 400 distinct images of
  LFW view 1 ``pairsDevTrain.txt`` (development data), used by ``benchmarks/dlib_box.py`` to
  fit the MTCNN -> dlib box mapping.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import dlib
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
LFW = DATA / "lfw" / "lfw-deepfunneled"


def devtrain_images(limit: int) -> list[Path]:
    """The first ``limit`` distinct images named by pairsDevTrain.txt, in file order."""
    out: list[Path] = []
    lines = (DATA / "lfw" / "pairsDevTrain.txt").read_text().splitlines()[1:]
    for line in lines:
        f = line.split("\t")
        names = [(f[0], f[1]), (f[0], f[2])] if len(f) == 3 else [(f[0], f[1]), (f[2], f[3])]
        for name, i in names:
            p = LFW / name / f"{name}_{int(i):04d}.jpg"
            if p not in out:
                out.append(p)
    return out[:limit]


def grey(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8).mean(axis=2).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--boxes", type=int, default=400)
    args = parser.parse_args()
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(args.model)

    rows = []
    for path in devtrain_images(args.boxes):
        rgb = np.asarray(Image.open(path).convert("RGB"))
        rects = detector(rgb, 1)
        rows.append({"image": str(path.relative_to(DATA)),
                     "boxes": [[r.left(), r.top(), r.right(), r.bottom()] for r in rects]})
    out = ROOT / "benchmarks" / "results" / "dlib_boxes_devtrain.json"
    out.write_text(json.dumps({"detector": "dlib.get_frontal_face_detector, upsample 1",
                               "dlib": dlib.__version__, "images": rows}, indent=1))

    sources = devtrain_images(6)[:5] + [DATA / "pointing04" / "Person01" / "person01134-15+15.jpg"]
    images, boxes, shapes, names, crops = [], [], [], [], []
    for path in sources:
        full = grey(path)
        rects = detector(full, 1)
        if not rects:
            continue
        r = max(rects, key=lambda r: r.area())
        pad = (r.right() - r.left()) // 2  # keep the face and half a face around it (a small fixture)
        x0, y0 = max(r.left() - pad, 0), max(r.top() - pad, 0)
        image = np.ascontiguousarray(full[y0:r.bottom() + pad, x0:r.right() + pad])
        crops.append([x0, y0, x0 + image.shape[1], y0 + image.shape[0]])
        box = [r.left() - x0, r.top() - y0, r.right() - x0, r.bottom() - y0]
        shape = predictor(image, dlib.rectangle(*box))
        images.append(image)
        boxes.append(box)
        shapes.append([[shape.part(i).x, shape.part(i).y] for i in range(shape.num_parts)])
        names.append(str(path.relative_to(DATA)))
    # one more box per face that is not the detector's: shifted and scaled, to exercise the box mapping
    extra = [[b[0] - 7, b[1] + 5, b[2] + 9, b[3] + 12] for b in boxes]
    for image, b in zip(list(images), extra):
        shape = predictor(image, dlib.rectangle(*b))
        images.append(image)
        boxes.append(b)
        shapes.append([[shape.part(i).x, shape.part(i).y] for i in range(shape.num_parts)])
    crops += list(crops)
    moved = [False] * len(extra) + [True] * len(extra)
    faces = [{"image": n, "crop": c, "box": b, "shape": sh, "moved_box": m}
             for n, c, b, sh, m in zip(names + names, crops, boxes, shapes, moved)]
    about = (f"dlib's shape_predictor (dlib {dlib.__version__}) on grey crops of real faces (crop x1 y1 x2 y2 of the "
             "image under ../shared/data, grey = the integer mean of R, G, B) with fixed boxes in crop pixels; "
             "made by scripts/make_dlib_fixture.py")
    (ROOT / "tests" / "fixtures" / "dlib68_reference.json").write_text(
        json.dumps({"about": about, "dlib": dlib.__version__, "faces": faces}, indent=0))
    print(len(images), "faces;", sum(len(r["boxes"]) > 0 for r in rows), "of", len(rows), "images with a box")


if __name__ == "__main__":
    main()
