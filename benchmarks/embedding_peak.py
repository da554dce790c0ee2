"""Each embedding backend's batch-32 rate as a fraction of this CPU's peak for its precision.

    FACESPACE_NUM_THREADS=1 OMP_NUM_THREADS=1 python benchmarks/embedding_peak.py \
        [--backends onnx torch torch-bf16 onnx-int8] [--repeats 7]

The roofline columns of ``speed.py`` alone, for quick checks while tuning a backend: the same
measurement (``speed._embedding_vs_peak``: the network and the peak product of its precision,
``roofline.peak_probe``, timed in turn in this process by CPU time, median of the fractions) on the
same kind of input (32 LFW crops, the registered alignment). Each backend runs in a fresh process
of its own, one after another, so no two time at once. Prints one JSON line a backend, with the
load average, and writes them with the machine's details to benchmarks/results/embedding_peak.json
(``speed.py`` remains the full record).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from _paths import DATA, RESULTS

#: The arithmetic each backend runs in: the peak it is compared with.
PRECISION_OF_BACKEND = {"onnx": "fp32", "torch": "fp32", "torch-bf16": "bf16", "onnx-int8": "int8"}


def lfw_crops(count: int = 32):
    """``count`` aligned crops of the first LFW images with a face (as ``speed.py`` takes them)."""
    import numpy as np

    from facespace import FacePipeline

    pipeline = FacePipeline()
    crops = []
    for path in sorted((DATA / "lfw" / "lfw-deepfunneled").glob("*/*.jpg")):
        image = pipeline.load(str(path))
        faces = pipeline.detect_arrays([image])[0]
        if faces:
            crops.append(pipeline.crop(image, faces[0]))
        if len(crops) == count:
            return np.stack(crops)
    raise SystemExit(f"fewer than {count} LFW images with a face under {DATA}")


def measure(backend: str, repeats: int) -> dict:
    """The fraction of peak of ``backend`` in this process."""
    from facespace.embedding import Embedder
    from facespace.networks.complexity import describe_architecture
    from speed import _embedding_vs_peak

    crops = lfw_crops()
    embedder = Embedder(backend=backend, batch_size=32)
    threads = int(os.environ.get("FACESPACE_NUM_THREADS", "1"))
    mult_adds = int(describe_architecture(embedder.name)["mult_adds"])
    before = os.getloadavg()
    out = _embedding_vs_peak(lambda b: embedder.embed_crops(b), crops, mult_adds,
                             PRECISION_OF_BACKEND[backend], threads, repeats)
    return {"backend": backend, **{k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()},
            "threads": threads, "loadavg_before": before, "loadavg_after": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", default=list(PRECISION_OF_BACKEND), choices=list(PRECISION_OF_BACKEND))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.worker, args.repeats)), flush=True)
        return
    env = {**os.environ, "FACESPACE_NUM_THREADS": os.environ.get("FACESPACE_NUM_THREADS", "1"),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    from facespace.evaluation.report import machine_info

    out = {"benchmark": "embedding fraction of peak, batch 32, CPU time", "machine": machine_info(),
           "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "repeats": args.repeats, "runs": []}
    for backend in args.backends:
        run = subprocess.run([sys.executable, str(Path(__file__)), "--worker", backend, "--repeats",
                              str(args.repeats)], env=env, check=True, stdout=subprocess.PIPE, text=True)
        print(run.stdout.strip().splitlines()[-1], flush=True)
        out["runs"].append(json.loads(run.stdout.strip().splitlines()[-1]))
    (RESULTS / "embedding_peak.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
