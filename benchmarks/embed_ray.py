"""Batch embedding throughput: the single-process engine against Ray with 1 and 2 workers
(writes benchmarks/results/embed_ray.{json,md}).

Each run embeds the same LFW images (all 13,233 by default; ``--limit N`` takes the first N
in sorted order) into a fresh Parquet dataset with ``facespace.batch.embed_dataset``, in a
fresh child process, so nothing is cached between runs. Reported per run: wall seconds
(Ray's start-up included), images/s, the CPU seconds of the whole process tree (the driver, and
for Ray its raylet, object store and workers) and images per CPU second (what the shared
machine's other load does not stretch), faces, errors, and the peak resident memory of that
tree, sampled every 0.25 s with psutil. The machine is shared by other sessions: compare runs within one file.

    python benchmarks/embed_ray.py [--limit N] [--runs local ray-1 ray-2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _paths import DATA, REPO, RESULTS
from _recognition_common import machine, machine_note

LFW = (DATA / "lfw" / "lfw-deepfunneled").resolve()
CHILD = """
import json, sys
from facespace.batch import embed_dataset
engine, workers, listing, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
report = embed_dataset([listing], out, {}, engine=engine, workers=workers)
print("REPORT " + json.dumps(report.to_dict()))
"""


def sample_tree(proc, cpu: dict[int, float]) -> int:
    """Resident bytes of ``proc`` and all its descendants (Ray's processes are among them); records
    each one's CPU seconds so far in ``cpu`` (by pid: the last sample of a process counts)."""
    import psutil

    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            with p.oneshot():
                total += p.memory_info().rss
                times = p.cpu_times()
            cpu[p.pid] = times.user + times.system
        except psutil.Error:
            pass
    return total


def run_once(engine: str, workers: int, listing: Path, out: Path) -> dict:
    import psutil

    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", CHILD, engine, str(workers), str(listing), str(out)],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    handle, peak, cpu = psutil.Process(child.pid), 0, {}
    while child.poll() is None:
        peak = max(peak, sample_tree(handle, cpu))
        time.sleep(0.25)
    seconds = time.perf_counter() - started
    lines = [line for line in child.stdout.read().splitlines() if line.startswith("REPORT ")]
    if child.returncode != 0 or not lines:
        raise SystemExit(f"{engine} run failed (exit {child.returncode})")
    report = json.loads(lines[-1][len("REPORT "):])
    return {"engine": engine, "workers": workers, "seconds": round(seconds, 1),
            "images_per_second": round(report["inputs"] / seconds, 2), "cpu_seconds": round(sum(cpu.values()), 1),
            "images_per_cpu_second": round(report["inputs"] / max(sum(cpu.values()), 1e-9), 2),
            "peak_rss_mb": round(peak / 2**20),
            **report, "load_average_after": [round(x, 2) for x in os.getloadavg()]}


def markdown(result: dict) -> str:
    lines = [f"# Batch embedding: {result['images']:,} LFW images ({result['model']})", "",
             "| engine | workers | wall s | images/s | CPU s (all processes) | images per CPU s | faces | errors | "
             "peak RSS (MB) | load average after |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        lines.append(f"| {r['engine']} | {r['workers']} | {r['seconds']} | {r['images_per_second']} | "
                     f"{r['cpu_seconds']} | {r['images_per_cpu_second']} | {r['faces']} | {r['errors']} | "
                     f"{r['peak_rss_mb']} | {r['load_average_after']} |")
    return "\n".join(lines + ["", machine_note(result["machine"], result["load_average_before"]), "", result["note"], ""])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="the first N images only (sorted paths)")
    parser.add_argument("--runs", nargs="+", default=["local", "ray-1", "ray-2"])
    parser.add_argument("--name", default="embed_ray", help="result file stem")
    args = parser.parse_args()
    images = sorted(LFW.rglob("*.jpg"))[:args.limit]
    before = [round(x, 2) for x in os.getloadavg()]
    runs = []
    with tempfile.TemporaryDirectory(prefix="embed-ray-") as tmp:
        listing = Path(tmp) / "images.txt"
        listing.write_text("".join(f"{p}\n" for p in images))
        for name in args.runs:
            engine, _, workers = name.partition("-")
            out = Path(tmp) / name
            runs.append(run_once(engine, int(workers or 1), listing, out))
            print(runs[-1], flush=True)
            shutil.rmtree(out, ignore_errors=True)
    from facespace.pipeline import FacePipeline

    result = {"benchmark": "embed_ray", "images": len(images), "of_lfw": 13233, "model": FacePipeline().model_name,
              "load_average_before": before, "runs": runs, "machine": machine(),
              "note": ("local: one process (the runtime's default threads: two here); ray-N: a local Ray with N CPUs "
                       "and N actors, one inference thread each. Wall time includes process and Ray start-up and model loading."),
              "command": "python benchmarks/embed_ray.py" + (f" --limit {args.limit}" if args.limit else "")}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{args.name}.md").write_text(markdown(result))
    print(f"wrote {RESULTS / args.name}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
