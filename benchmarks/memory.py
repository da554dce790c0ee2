"""Peak memory of the pipeline against image size, and for a batch of 20 large images.

    python benchmarks/memory.py                  # writes benchmarks/results/memory.{json,md}
    python benchmarks/memory.py --sizes 1 4 16   # a part

Each measurement runs in a fresh process (so ``ru_maxrss`` is that run's own peak):
``FacePipeline().embed_images`` on a PNG of N megapixels that holds real LFW faces
pasted at several scales on a plain background, with the library's default detection
working size (``DetectorSettings.max_pixels``, 2048 x 2048) and, for comparison, with
detection at full size (``max_pixels=None``, how facespace ran before the working size).
The batch row embeds 20 such 36-megapixel PNGs in one call, as the REST enrol request of
the reliability report did. The baseline row is the same process after loading the
networks and embedding one small image: what every run pays before its images.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from _paths import DATA, RESULTS

LFW = DATA / "lfw" / "lfw-deepfunneled"
FACES = ["Aaron_Peirsol/Aaron_Peirsol_0001.jpg", "Angelina_Jolie/Angelina_Jolie_0001.jpg",
         "George_W_Bush/George_W_Bush_0001.jpg"]


def make_image(megapixels: float, path: Path) -> Path:
    """A 4:3 PNG of ``megapixels`` with LFW faces pasted at three scales (real faces to find)."""
    from PIL import Image

    width = int(math.sqrt(megapixels * 1e6 * 4 / 3))
    height = int(megapixels * 1e6 / width)
    canvas = Image.new("RGB", (width, height), (180, 170, 160))
    for i, name in enumerate(FACES):
        with Image.open(LFW / name) as face:
            side = max(120, min(width, height) // (3 + 2 * i))
            canvas.paste(face.convert("RGB").resize((side, side)),
                         (width * (i + 1) // 4 - side // 2, height // 2 - side // 2))
    canvas.save(path, compress_level=1)
    return path


def child(args: argparse.Namespace) -> None:
    """Run inside the measuring process: embed the images, print peak RSS and counts as JSON."""
    from facespace.pipeline import DetectorSettings, FacePipeline

    detector = DetectorSettings(max_pixels=None) if args.full_size else DetectorSettings()
    pipeline = FacePipeline(detector=detector)
    pipeline.embed_images([LFW / FACES[0]])  # networks loaded, as in a running service
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    results = pipeline.embed_images([Path(p) for p in args.images])
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"baseline_mib": round(base, 1), "peak_mib": round(peak, 1), "seconds": round(seconds, 2),
                      "faces": [len(r.faces) for r in results], "errors": [r.error for r in results if r.error]}))


def measure(images: list[Path], full_size: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", "--images", *map(str, images)] + (["--full-size"] if full_size else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1], "exit": proc.returncode}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(sizes: list[float], batch: int, batch_mp: float, work: Path, full_size_max: float) -> list[dict]:
    rows = []
    for mp in sizes:
        image = make_image(mp, work / f"{mp:g}mp.png")
        for full in (False, True):
            if full and mp > full_size_max:
                continue
            row = {"images": 1, "megapixels": mp, "detection": "full size" if full else "working size",
                   **measure([image], full)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    if batch:
        image = make_image(batch_mp, work / f"{batch_mp:g}mp.png")
        row = {"images": batch, "megapixels": batch_mp, "detection": "working size",
               **measure([image] * batch, False)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def write(rows: list[dict], out: Path) -> None:
    from facespace.evaluation.report import machine_info

    report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": " ".join(sys.argv),
              "machine": machine_info(), "rows": rows}
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    lines = ["| images | megapixels each | detection | peak RSS MiB | baseline MiB | faces | seconds |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        faces = r.get("faces") or []
        lines.append(f"| {r['images']} | {r['megapixels']:g} | {r['detection']} | {r.get('peak_mib', r.get('error'))} "
                     f"| {r.get('baseline_mib', '')} | {sum(faces)} | {r.get('seconds', '')} |")
    out.with_suffix(".md").write_text(f"Peak memory (`{report['command']}`, {report['date']})\n\n" + "\n".join(lines) + "\n")
    print(f"wrote {out.with_suffix('.json')} and .md")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1, 4, 9, 16, 36, 64], help="megapixels")
    parser.add_argument("--batch", type=int, default=20, help="images in the batch row (0: none)")
    parser.add_argument("--batch-megapixels", type=float, default=36)
    parser.add_argument("--full-size-max", type=float, default=36,
                        help="largest size also measured with full-size detection (it needs ~1 GB per 36 MP)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/facespace-memory"))
    parser.add_argument("--out", type=Path, default=RESULTS / "memory")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--full-size", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--images", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    args.work.mkdir(parents=True, exist_ok=True)
    write(run(args.sizes, args.batch, args.batch_megapixels, args.work, args.full_size_max), args.out)


if __name__ == "__main__":
    main()
