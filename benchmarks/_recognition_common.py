"""Shared by identify_lfw.py, cluster_lfw.py and search_scale.py: LFW paths, cached embeddings, machine facts."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LFW = (ROOT / ".." / "shared" / "data" / "lfw" / "lfw-deepfunneled").resolve()
PAIRS_DEV_TRAIN = (ROOT / ".." / "shared" / "data" / "lfw" / "pairsDevTrain.txt").resolve()
RESULTS = ROOT / "benchmarks" / "results"


def lfw_people() -> dict[str, list[Path]]:
    """{person: sorted image paths} for all 5,749 LFW people (13,233 images)."""
    return {p.name: sorted(p.glob("*.jpg")) for p in sorted(LFW.iterdir()) if p.is_dir()}


def lfw_embeddings(model: str | None = None, align: str = "margin", progress: bool = True,
                   limit: int | None = None):
    """(paths, labels, embeddings, detected, pipeline) of every LFW image (or the first ``limit``
    people's), from the evaluation cache."""
    from facespace import FacePipeline
    from facespace.evaluation.cache import embed_paths

    people = lfw_people()
    if limit:
        people = dict(list(people.items())[:limit])
    paths = [p for images in people.values() for p in images]
    labels = np.array([i for i, images in enumerate(people.values()) for _ in images])
    pipeline = FacePipeline(model=model, align=align)
    found = embed_paths(pipeline, paths, progress=progress)
    return paths, labels, np.asarray(found.embeddings, np.float32), np.asarray(found.detected), pipeline


def machine() -> dict:
    import torch

    info = {"platform": platform.platform(), "python": platform.python_version(), "processor": platform.processor(),
            "cpus": os.cpu_count(), "torch": torch.__version__, "numpy": np.__version__,
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        import faiss

        info["faiss"] = faiss.__version__
        info["faiss_threads"] = faiss.omp_get_max_threads()
    except ImportError:
        pass
    try:
        info["load_average"] = os.getloadavg()
    except OSError:
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        info["memory_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (OSError, ValueError):
        pass
    return info


def write_result(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps({**result, "machine": machine()}, indent=2) + "\n")
    print(f"wrote {path}")
    return path
