"""Shared by identify_lfw.py, cluster_lfw.py and search_scale.py: LFW paths, cached embeddings, machine facts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from _paths import DATA, RESULTS

LFW = (DATA / "lfw" / "lfw-deepfunneled").resolve()
PAIRS_DEV_TRAIN = (DATA / "lfw" / "pairsDevTrain.txt").resolve()


def lfw_people() -> dict[str, list[Path]]:
    """{person: sorted image paths} for all 5,749 LFW people (13,233 images)."""
    return {p.name: sorted(p.glob("*.jpg")) for p in sorted(LFW.iterdir()) if p.is_dir()}


def lfw_embeddings(model: str | None = None, align: str | None = None, progress: bool = True,
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
    pipeline = FacePipeline(model=model) if align is None else FacePipeline(model=model, align=align)
    found = embed_paths(pipeline, paths, progress=progress)
    return paths, labels, np.asarray(found.embeddings, np.float32), np.asarray(found.detected), pipeline


def machine() -> dict:
    """The shared machine description, plus FAISS's version and threads."""
    from facespace.evaluation.report import machine_info

    info = machine_info()
    try:
        import faiss

        info["faiss"] = faiss.__version__
        info["faiss_threads"] = faiss.omp_get_max_threads()
    except ImportError:
        pass
    return info


def machine_note(m: dict, load_before) -> str:
    """One line for a result's Markdown: the CPUs, FAISS, and that the machine was shared."""
    return (f"Machine: {m.get('cpu')} x {m.get('cpu_count')} CPUs, FAISS {m.get('faiss')}, shared with other "
            f"sessions (load average at the start: {load_before}).")


def write_result(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps({**result, "machine": machine()}, indent=2) + "\n")
    print(f"wrote {path}")
    return path
