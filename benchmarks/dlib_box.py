"""Fit the MTCNN -> dlib box mapping the 68-point predictor needs (registry: dlib68.box_from_mtcnn).

    python benchmarks/dlib_box.py

dlib's shape predictor was trained on boxes from dlib's HOG frontal face detector. Those boxes
for the first 400 distinct images of LFW view 1 pairsDevTrain.txt (development data, never view 2)
were recorded by dlib itself (``scripts/make_dlib_fixture.py``, in a throwaway environment) in
``benchmarks/results/dlib_boxes_devtrain.json``. Here MTCNN runs on the same images; each dlib box
is paired with the MTCNN box overlapping it most (IoU >= 0.3), and the four numbers of
:func:`facespace.landmarks.dlib68.mtcnn_to_dlib_box` (centre offset and sides, in units of the
MTCNN box's mean side) are their medians over the pairs (robust to a stray pairing). Fitted on
the first half of the pairs, the held-out half reports the IoU with dlib's box and the mean
landmark difference (predictor on the mapped box vs on dlib's own box, in inter-ocular units).
Writes benchmarks/results/dlib_box.json.
"""

from __future__ import annotations

import json

import numpy as np

from facespace.detection.mtcnn import MTCNN
from facespace.imageio import load_image
from facespace.landmarks.dlib68 import load_model, mtcnn_to_dlib_box, predict
from facespace.evaluation.landmarks import interocular_error

from _paths import DATA, RESULTS
from _recognition_common import write_result


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of box ``a`` (4,) with each row of ``b`` (n, 4)."""
    x1, y1 = np.maximum(a[0], b[:, 0]), np.maximum(a[1], b[:, 1])
    x2, y2 = np.minimum(a[2], b[:, 2]), np.minimum(a[3], b[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda r: (r[..., 2] - r[..., 0]) * (r[..., 3] - r[..., 1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def paired_boxes() -> tuple[list, np.ndarray, np.ndarray]:
    """(image paths, MTCNN boxes, dlib boxes) of every dlib box with an overlapping MTCNN box."""
    record = json.loads((RESULTS / "dlib_boxes_devtrain.json").read_text())
    detector = MTCNN.pretrained()
    paths, mt, dl = [], [], []
    for row in record["images"]:
        if not row["boxes"]:
            continue
        path = DATA / row["image"]
        found = detector.detect([load_image(path)])[0]
        for box in row["boxes"]:
            if len(found) == 0:
                continue
            overlap = iou(np.array(box, float), found.boxes[:, :4].astype(float))
            if overlap.max() >= 0.3:
                paths.append(path)
                mt.append(found.boxes[int(overlap.argmax()), :4])
                dl.append(box)
    return paths, np.array(mt, float), np.array(dl, float)


def fit(mt: np.ndarray, dl: np.ndarray) -> np.ndarray:
    side = ((mt[:, 2] - mt[:, 0]) + (mt[:, 3] - mt[:, 1])) / 2
    cx = ((dl[:, 0] + dl[:, 2]) - (mt[:, 0] + mt[:, 2])) / 2 / side
    cy = ((dl[:, 1] + dl[:, 3]) - (mt[:, 1] + mt[:, 3])) / 2 / side
    return np.median(np.stack([cx, cy, (dl[:, 2] - dl[:, 0]) / side, (dl[:, 3] - dl[:, 1]) / side], 1), 0)


def main() -> None:
    paths, mt, dl = paired_boxes()
    half = len(paths) // 2
    held = slice(half, None)
    correction = fit(mt[:half], dl[:half])
    mapped = mtcnn_to_dlib_box(mt[held], correction)
    raw_iou = [float(iou(d, m[None])[0]) for d, m in zip(dl[held], mt[held])]
    mapped_iou = [float(iou(d, m[None])[0]) for d, m in zip(dl[held], mapped)]
    model = load_model()
    errors = []
    for path, own, ours in zip(paths[half:], dl[held], mapped):
        image = load_image(path)
        reference = predict(model, image, own[None])[0]
        errors.append(interocular_error(predict(model, image, ours[None])[0], reference))
    final = fit(mt, dl)
    result = {
        "data": "LFW view 1 pairsDevTrain.txt, first 400 distinct images",
        "pairs": len(paths), "fitted_on": half, "held_out": len(paths) - half,
        "correction_first_half": correction.round(4).tolist(),
        "box_from_mtcnn": final.round(4).tolist(),
        "held_out_iou_raw_mtcnn": float(np.mean(raw_iou)),
        "held_out_iou_mapped": float(np.mean(mapped_iou)),
        "held_out_landmark_nme_vs_dlib_box": {"mean": float(np.mean(errors)),
                                              "median": float(np.median(errors)),
                                              "max": float(np.max(errors))},
    }
    write_result("dlib_box.json", result)
    print(json.dumps({k: v for k, v in result.items()}, indent=1))


if __name__ == "__main__":
    main()
