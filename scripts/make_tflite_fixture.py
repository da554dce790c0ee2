"""Write tests/fixtures/tflite_reference.json: outputs of MediaPipe's models run by the TFLite
interpreter itself, which the PyTorch conversions (facespace.networks.blazeface, .facemesh) are
tested against. Run it in a throwaway environment (the runtime is NOT a facespace dependency)::

    python3 -m venv /tmp/tflenv && /tmp/tflenv/bin/pip install ai-edge-litert pillow numpy
    /tmp/tflenv/bin/python scripts/make_tflite_fixture.py

The .tflite files come from the facespace weight cache (``facespace models pull blazeface
blazeface-full facemesh`` first). Inputs are real photos from ../shared/data/photos, resized by
PIL (bilinear); the fixture names each photo and crop (the test rebuilds the input the same way,
nothing of the photos is stored); the networks get ``x / 127.5 - 1`` (detectors) or ``x / 255``
(mesh) in float32. Stored per input: all face scores, and the regressors of the 64 best anchors
(the mesh: all 1404 coordinates and the presence logit).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
PHOTOS = (REPO / ".." / "shared" / "data" / "photos").resolve()
OUT = REPO / "tests" / "fixtures" / "tflite_reference.json"
CACHE = Path(os.environ.get("FACESPACE_HOME") or Path.home() / ".cache" / "facespace") / "weights"
EXAMPLES = "face_recognition_examples/examples"
#: (registry name, file, input size, images, crop box x1 y1 x2 y2 in the image or None for all of it).
CASES = [
    ("blazeface", "face_detection_short_range.tflite", 128,
     [(f"{EXAMPLES}/obama.jpg", None), (f"{EXAMPLES}/two_people.jpg", None)]),
    ("blazeface-full", "face_detection_full_range.tflite", 192,
     [(f"{EXAMPLES}/two_people.jpg", None), ("deepface/couple.jpg", None)]),
    ("facemesh", "face_landmark.tflite", 192,
     [(f"{EXAMPLES}/obama.jpg", (306, 67, 672, 433)), (f"{EXAMPLES}/biden.jpg", (355, 150, 784, 579))]),
]
TOP = 64


def load(rel: str, size: int, box) -> np.ndarray:
    with Image.open(PHOTOS / rel) as image:
        image = image.convert("RGB")
        if box is not None:
            image = image.crop(box)
        return np.asarray(image.resize((size, size), Image.BILINEAR))


def run(path: Path, pixels: np.ndarray, mesh: bool) -> list[np.ndarray]:
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    x = pixels.astype(np.float32) / 255.0 if mesh else pixels.astype(np.float32) / 127.5 - 1.0
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x[None])
    interpreter.invoke()
    return [interpreter.get_tensor(d["index"]).copy() for d in interpreter.get_output_details()]


def main() -> None:
    cases: dict[str, dict] = {}
    for name, filename, size, images in CASES:
        case: dict = {"size": size, "images": [{"path": rel, "crop": box} for rel, box in images]}
        for rel, box in images:
            results = {o.shape[-1]: o for o in run(CACHE / name / filename, load(rel, size, box), name == "facemesh")}
            if name == "facemesh":
                case.setdefault("points", []).append(results[1404].reshape(-1))
                case.setdefault("presence", []).append(results[1].reshape(-1))
            else:
                scores, boxes = results[1][0, :, 0], results[16][0]
                top = np.argsort(-scores)[:TOP]
                case.setdefault("scores", []).append(scores)
                case.setdefault("top", []).append(top)
                case.setdefault("regressors", []).append(boxes[top])
        for key in ("scores", "top", "regressors", "points", "presence"):
            if key in case:
                values = np.stack(case[key])
                case[key] = values.tolist() if key == "top" else np.vectorize(lambda v: float(f"{v:.7g}"))(values).tolist()
        cases[name] = case
    about = ("Outputs of MediaPipe's models run by the TFLite interpreter (ai-edge-litert) on inputs rebuilt from "
             "../shared/data/photos by scripts/make_tflite_fixture.py's rule (PIL RGB, optional crop, bilinear resize).")
    OUT.write_text(json.dumps({"about": about, "cases": cases}, separators=(",", ":")))
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")

if __name__ == "__main__":
    main()
