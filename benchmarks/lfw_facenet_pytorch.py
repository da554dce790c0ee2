"""LFW view-2 accuracy of facenet-pytorch 2.6.0's pipeline with facespace's 128-D weights.

The speed comparison (``speed.py``) runs facenet-pytorch on the very same
converted weights; this measures what accuracy that pipeline gives, so the
speed ratios can be read "at equal or better accuracy". facenet-pytorch is
used as its README shows: ``MTCNN(image_size=160, margin=MARGIN)`` returns the
crop of the largest face (``select_largest=True``), prewhitened here as the
weights expect (``post_process=False`` then facespace's normalisation), then
``InceptionResnetV1``. Images where it finds no face get the central 160x160
crop, as facespace's evaluation falls back to a centre crop. The protocol is
facespace's (``facespace.evaluation.protocol``), squared L2 of unit embeddings.

    python benchmarks/lfw_facenet_pytorch.py [--bench-python /tmp/benchenv/bin/python] [--margin 0]

writes ``benchmarks/results/lfw_facenet_pytorch.json``. The bench environment
is the one described in ``speed.py``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _paths import DATA, RESULTS  # noqa: E402 - found through the line above when imported from elsewhere


def embed_worker(paths_file: Path, state: Path, out: Path, margin: int, threads: int) -> None:
    """Runs in the bench environment: facenet-pytorch crops + embeddings of every listed image."""
    import numpy as np
    import torch
    from PIL import Image

    from speed import _facenet_pytorch_resnet, _install_torchvision_stub, _prewhiten

    torch.set_num_threads(threads)
    _install_torchvision_stub()
    from facenet_pytorch import MTCNN

    mtcnn = MTCNN(image_size=160, margin=margin, post_process=False, device="cpu")
    resnet = _facenet_pytorch_resnet(state)
    paths = json.loads(paths_file.read_text())
    vectors, missed = [], []
    start = time.perf_counter()
    for begin in range(0, len(paths), 32):
        crops = []
        for path in paths[begin:begin + 32]:
            image = Image.open(path).convert("RGB")
            with torch.inference_mode():
                face = mtcnn(image)  # 3 x 160 x 160, pixel values 0..255 (post_process=False)
            if face is None:
                missed.append(path)
                w, h = image.size
                face = torch.from_numpy(np.asarray(image.crop(((w - 160) // 2, (h - 160) // 2,
                                                               (w + 160) // 2, (h + 160) // 2)))).permute(2, 0, 1)
            crops.append(face.permute(1, 2, 0).numpy())
        with torch.inference_mode():
            vectors.append(resnet(_prewhiten(np.stack(crops))).numpy())
    np.savez(out, embeddings=np.concatenate(vectors), missed=np.array(missed),
             seconds=np.array(time.perf_counter() - start))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bench-python", default="/tmp/benchenv/bin/python")
    p.add_argument("--margin", type=int, default=0, help="facenet-pytorch MTCNN margin (its default: 0)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        embed_worker(Path(args.worker[0]), Path(args.worker[1]), Path(args.worker[2]), args.margin, args.threads)
        return 0

    import numpy as np
    import torch

    from facespace.evaluation.pairs import find_lfw_layout, read_lfw_pairs
    from facespace.evaluation.protocol import evaluate_pairs
    from facespace.evaluation.report import machine_info
    from facespace.pretrained.loader import load_embedder

    images_dir, pairs_file = find_lfw_layout(DATA / "lfw")
    pairs = read_lfw_pairs(pairs_file, images_dir)
    paths = [str(p) for p in pairs.paths()]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "paths.json").write_text(json.dumps(paths))
        torch.save(load_embedder("facenet-msceleb-128").state_dict(), tmp / "state.pt")
        subprocess.run([args.bench_python, str(Path(__file__).resolve()), "--margin", str(args.margin),
                        "--threads", str(args.threads), "--worker", str(tmp / "paths.json"), str(tmp / "state.pt"),
                        str(tmp / "out.npz")], check=True)
        with np.load(tmp / "out.npz") as data:
            embeddings, missed, seconds = data["embeddings"], list(data["missed"]), float(data["seconds"])
    where = {p: i for i, p in enumerate(paths)}
    a = embeddings[[where[str(x)] for x in pairs.first]]
    b = embeddings[[where[str(x)] for x in pairs.second]]
    report = evaluate_pairs(np.sum((a - b) ** 2, axis=1), pairs.same, pairs.folds)
    result = {"benchmark": "LFW view 2 with facenet-pytorch 2.6.0's MTCNN + InceptionResnetV1 "
                           "(facespace's facenet-msceleb-128 weights)",
              "mtcnn": {"image_size": 160, "margin": args.margin, "select_largest": True},
              "images": len(paths), "missed_detections": len(missed), "seconds": round(seconds, 1),
              "threads": args.threads, "metrics": report.to_dict(), "machine": machine_info()}
    out = RESULTS / "lfw_facenet_pytorch.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"facenet-pytorch pipeline (margin {args.margin}): {report.summary()}; {len(missed)} missed; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
