"""Several ``facespace serve`` workers sharing one gallery: PostgreSQL + pgvector against SQLite.

    python benchmarks/serve_workers.py                 # writes benchmarks/results/serve_workers.{json,md}
    python benchmarks/serve_workers.py --people 10 --clients 4 --workers 1 2 --backends postgresql

For each backend (a PostgreSQL started on 127.0.0.1 by ``tests/pg.py``, or a SQLite file) and each
number of ``--workers``, a fresh server (``--workers W --inference-threads 1``) and an empty gallery.
``--people`` LFW people with three photos or more: each is enrolled (two photos, one request) by two
clients at once, so half the enrolments are duplicates that must store nothing; after each
enrolment the client identifies the third photo of that person, on a new connection (so the
kernel may hand it to any worker), and of a person enrolled earlier. ``--clients`` threads share
the work; a request answered 503 (the admission queue full) is sent again after ``Retry-After``,
and counted. Recorded: requests/s over the whole run, p50/p99 latency per kind, non-2xx answers, rows
lost and rows duplicated (the stored (identity, content hash) pairs against the photos sent),
identifications answered by a worker other than the one that enrolled the person and how many of
them named the person, and the machine (a shared 2-core machine: its load average is recorded).

Inference dominates those requests, so a second part measures the stores alone: ``--writers`` N
processes each write ``--identities`` synthetic identities of 4 embeddings (one transaction each)
into one gallery, every identity by two processes (half the writes must store nothing);
writes/s, p50/p99 per write, and rows lost or duplicated (``--writers`` 1, or an even number).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from _paths import REPO, RESULTS

sys.path.insert(0, str(REPO / "tests"))
from pg import LocalPostgres  # noqa: E402  (the tests' helpers: one home for starting a PostgreSQL)
from shared_data import lfw_people  # noqa: E402

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(gallery: str, workers: int, log: Path) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    command = [sys.executable, "-m", "facespace.cli.main", "serve", "--port", str(port), "--gallery", gallery,
               "--workers", str(workers), "--inference-threads", "1", "--log-level", "warning"]
    proc = subprocess.Popen(command, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                pids = {httpx.get(base + "/health", timeout=5).headers["x-facespace-worker"] for _ in range(20)}
                if workers == 1 or len(pids) >= min(workers, 2):
                    return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("server did not start")


class Load:
    """The clients' shared record: every answer's kind, status, latency and worker."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.answers: list[dict] = []
        self.enrolled: dict[str, str] = {}  # name -> worker that enrolled it (first 201 answer)

    def add(self, **answer) -> None:
        with self.lock:
            self.answers.append(answer)


def send(load: Load, kind: str, request) -> tuple:
    """``request()`` until it is not answered 503 (busy: waiting as ``Retry-After`` says, as a well-behaved
    client does); the refusals are counted, the latency is that of the answer taken."""
    while True:
        start = time.perf_counter()
        response = request()
        if response.status_code != 503:
            return response, time.perf_counter() - start
        load.add(kind=kind + "-busy", status=503, seconds=time.perf_counter() - start,
                 worker=response.headers.get("x-facespace-worker"))
        time.sleep(float(response.headers.get("retry-after", 1)))


def task(base: str, person, people, load: Load, rng: random.Random) -> None:
    import httpx

    name, photos, probe = person
    files = [("images", (f"{name}_{i}.jpg", data, "image/jpeg")) for i, data in enumerate(photos)]
    r, seconds = send(load, "enrol", lambda: httpx.post(base + "/api/identities", data={"name": name}, files=files,
                                                         timeout=300))
    worker = r.headers.get("x-facespace-worker")
    body = r.json() if r.status_code == 201 else {}
    load.add(kind="enrol", status=r.status_code, seconds=seconds, worker=worker,
             added=body.get("added", 0), duplicates=body.get("duplicates", 0))
    if r.status_code == 201:
        with load.lock:
            load.enrolled.setdefault(name, worker)
    with load.lock:
        earlier = [p for p in people if p[0] in load.enrolled]
    for target in (person, rng.choice(earlier or [person])):
        expected_worker = load.enrolled.get(target[0])

        def identify():
            with httpx.Client(base_url=base, timeout=300) as client:  # a new connection: any worker
                return client.post("/api/identify", files={"image": ("probe.jpg", target[2], "image/jpeg")})

        found, seconds = send(load, "identify", identify)
        faces = found.json().get("faces", []) if found.status_code == 200 else []
        load.add(kind="identify", status=found.status_code, seconds=seconds,
                 worker=found.headers.get("x-facespace-worker"), expected=target[0],
                 identity=faces[0]["identity"] if faces else None, enrolled_by=expected_worker)


def stored_pairs(location: str) -> list[tuple[str, str]]:
    from facespace.gallery import open_gallery

    with open_gallery(location, mode="read") as g:
        return [(info.name, h) for info in g.identities() for h in g.embedding_rows(info.name).hashes]


def summarise(load: Load, people, location: str, wall: float) -> dict:
    def stats(kind: str) -> dict:
        ok = [a["seconds"] for a in load.answers if a["kind"] == kind and 200 <= a["status"] < 300]
        return {"count": len(ok), "non_2xx": sum(1 for a in load.answers if a["kind"] == kind
                                                   and not 200 <= a["status"] < 300),
                "p50_ms": round(1000 * float(np.percentile(ok, 50)), 1) if ok else None,
                "p99_ms": round(1000 * float(np.percentile(ok, 99)), 1) if ok else None}

    expected = {(name, hashlib.sha256(photo).hexdigest()) for name, photos, _ in people for photo in photos}
    stored = stored_pairs(location)
    identifies = [a for a in load.answers if a["kind"] == "identify" and a["status"] == 200]
    crossed = [a for a in identifies if a["enrolled_by"] and a["worker"] != a["enrolled_by"]]
    done = [a for a in load.answers if 200 <= a["status"] < 300]
    enrols = [a for a in load.answers if a["kind"] == "enrol"]
    return {
        "requests": len(load.answers), "wall_s": round(wall, 2), "requests_per_s": round(len(done) / wall, 2),
        "busy_503_retried": sum(1 for a in load.answers if a["kind"].endswith("-busy")),
        "enrol": stats("enrol"), "identify": stats("identify"),
        "rows_expected": len(expected), "rows_stored": len(stored), "rows_lost": len(expected - set(stored)),
        "rows_duplicated": len(stored) - len(set(stored)),
        "enrol_added": sum(a["added"] for a in enrols), "enrol_duplicates": sum(a["duplicates"] for a in enrols),
        "identified_correctly": sum(a["identity"] == a["expected"] for a in identifies), "identified": len(identifies),
        "cross_worker_identifications": len(crossed),
        "cross_worker_correct": sum(a["identity"] == a["expected"] for a in crossed),
        "workers_seen": len({a["worker"] for a in load.answers if a["worker"]}),
    }


def run_config(backend: str, workers: int, people, clients: int, pg: LocalPostgres | None, tmp: Path) -> dict:
    location = (pg.create_database(f"bench_{workers}_{int(time.time() * 1000)}") if backend == "postgresql"
                else str(tmp / f"gallery_{workers}.db"))
    proc, base = start_server(location, workers, tmp / f"server_{backend}_{workers}.log")
    try:
        load, rng = Load(), random.Random(0)
        jobs = people + people  # every person twice, by two clients at once
        load_before = os.getloadavg()
        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(lambda p: task(base, p, people, load, rng), jobs))
        wall = time.perf_counter() - start
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    result = summarise(load, people, location, wall)
    return {"backend": backend, "workers": workers, "clients": clients, "people": len(people),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()], **result}


WRITER = """
import json, sys, time
import numpy as np
from facespace.gallery import open_gallery
location, first, count, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
order = list(range(first, first + count))
np.random.default_rng(seed).shuffle(order)
seconds = []
with open_gallery(location) as g:
    began = time.time()
    for i in order:
        x = np.random.default_rng(i).normal(size=(4, 128)).astype(np.float32)
        start = time.perf_counter()
        g.store_embeddings(f"id{i:06d}", x, model="bench-128", preprocessing_id="p")
        seconds.append(time.perf_counter() - start)
print(json.dumps({"seconds": seconds, "began": began, "ended": time.time()}))
"""


def run_writers(backend: str, writers: int, identities: int, pg: LocalPostgres | None, tmp: Path) -> dict:
    """``writers`` processes, each identity written by two of them; commits/s, latency, lost/duplicated rows."""
    location = (pg.create_database(f"writes_{writers}_{int(time.time() * 1000)}") if backend == "postgresql"
                else str(tmp / f"writes_{writers}.db"))
    from facespace.gallery import open_gallery

    open_gallery(location).close()
    groups = max(writers // 2, 1)  # writers 2j and 2j+1 write the same identities, in different orders
    size = identities // groups
    ranges = [(0, identities)] if writers == 1 else [(j * size, size) for j in range(groups) for _ in (0, 1)]
    expected = 4 * sum(count for _, count in set(ranges))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    load_before = os.getloadavg()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, location, str(first), str(count), str(seed)],
                              stdout=subprocess.PIPE, text=True, env=env)
             for seed, (first, count) in enumerate(ranges)]
    reports = [json.loads(p.communicate(timeout=600)[0]) for p in procs]
    latencies = [t for r in reports for t in r["seconds"]]
    wall = max(r["ended"] for r in reports) - min(r["began"] for r in reports)  # the writing, not the start-ups
    stored = stored_pairs(location)
    return {"backend": backend, "writer_processes": len(procs), "writes": len(latencies),
            "wall_s": round(wall, 2), "writes_per_s": round(len(latencies) / wall, 1),
            "p50_ms": round(1000 * float(np.percentile(latencies, 50)), 2),
            "p99_ms": round(1000 * float(np.percentile(latencies, 99)), 2),
            "rows_expected": expected, "rows_stored": len(stored), "rows_lost": max(expected - len(set(stored)), 0),
            "rows_duplicated": len(stored) - len(set(stored)),
            "loadavg_before": [round(x, 2) for x in load_before]}


def run_reload(backend: str, size: int, pg: LocalPostgres | None, tmp: Path) -> dict:
    """What a worker pays when another one's enrolment moves the generation on: the gallery's matrix
    read again and the identifier built again (``index="auto"``: exact below 50,000 embeddings)."""
    from facespace.calibration import Calibration
    from facespace.gallery import Identifier, open_gallery

    location = (pg.create_database(f"reload_{size}_{int(time.time() * 1000)}") if backend == "postgresql"
                else str(tmp / f"reload_{size}.db"))
    vectors = np.random.default_rng(size).normal(size=(size, 128)).astype(np.float32)
    with open_gallery(location) as g:
        for start in range(0, size, 10):  # identities of 10 embeddings, one transaction each
            g.store_embeddings(f"id{start:07d}", vectors[start:start + 10], model="bench-128", preprocessing_id="p")
    calibration = Calibration.load("no-such-model-entry", threshold=1.0)
    seconds = {"matrix": [], "identifier": []}
    with open_gallery(location, mode="read") as g:
        for _ in range(3):
            start = time.perf_counter()
            matrix = g.matrix()
            seconds["matrix"].append(time.perf_counter() - start)
            start = time.perf_counter()
            Identifier.from_gallery(g, calibration=calibration)
            seconds["identifier"].append(time.perf_counter() - start)
    return {"backend": backend, "embeddings": len(matrix),
            "matrix_s": round(float(np.median(seconds["matrix"])), 3),
            "identifier_s": round(float(np.median(seconds["identifier"])), 3),
            "loadavg": [round(x, 2) for x in os.getloadavg()]}


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor())
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "note": "a 2-core machine shared with other sessions; the clients "
                                                     "run on the same cores as the server and PostgreSQL"}


def table(title: str, header: list[str], rows: list[list], note: str) -> list[str]:
    """A markdown section: ``title``, a table of ``rows`` and a note; nothing for no rows."""
    if not rows:
        return []
    return (["", title, ""] if title else [""]) + ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] \
        + ["| " + " | ".join(map(str, row)) + " |" for row in rows] + ["", note]


def write_markdown(path: Path, report: dict) -> None:
    lines = ["# Several server workers, one gallery", "", f"`{report['command']}`", "",
             f"Machine: {report['machine']['cpu']}, {report['machine']['cores']} cores; "
             f"{report['machine']['note']}."]
    lines += table("", ["backend", "workers", "clients", "requests/s", "enrol p50 / p99 ms", "identify p50 / p99 ms",
                        "503 retried", "other non-2xx", "rows stored / expected", "lost", "duplicated",
                        "cross-worker identifications (correct)", "load avg"],
                   [[r["backend"], r["workers"], r["clients"], r["requests_per_s"],
                     f"{r['enrol']['p50_ms']} / {r['enrol']['p99_ms']}",
                     f"{r['identify']['p50_ms']} / {r['identify']['p99_ms']}", r["busy_503_retried"],
                     r["enrol"]["non_2xx"] + r["identify"]["non_2xx"], f"{r['rows_stored']} / {r['rows_expected']}",
                     r["rows_lost"], r["rows_duplicated"],
                     f"{r['cross_worker_identifications']} ({r['cross_worker_correct']})",
                     f"{r['loadavg_before'][0]} -> {r['loadavg_after'][0]}"] for r in report["runs"]],
                   "Each person is enrolled by two clients at once (half the enrolments must store nothing), then "
                   "identified on a new connection; a cross-worker identification is one answered by another worker "
                   "than the one that enrolled the person.")
    lines += table("## The stores alone (no inference)",
                   ["backend", "writer processes", "writes", "writes/s", "p50 / p99 ms", "rows stored / expected",
                    "lost", "duplicated", "load avg"],
                   [[r["backend"], r["writer_processes"], r["writes"], r["writes_per_s"],
                     f"{r['p50_ms']} / {r['p99_ms']}", f"{r['rows_stored']} / {r['rows_expected']}", r["rows_lost"],
                     r["rows_duplicated"], r["loadavg_before"][0]] for r in report.get("writes", [])],
                   "Writes: one transaction of 4 embeddings each; with 2 or more writer processes every identity "
                   "is written by two of them, so half the writes are duplicates that store nothing (the 1-writer "
                   "run writes each once).")
    lines += table("## A worker's reload after another's enrolment",
                   ["backend", "embeddings", "matrix read s", "identifier built s (matrix included)", "load avg"],
                   [[r["backend"], r["embeddings"], r["matrix_s"], r["identifier_s"], r["loadavg"][0]]
                    for r in report.get("reloads", [])],
                   '`index="auto"`: from 50,000 embeddings the PostgreSQL gallery searches through its HNSW '
                   "index (built when the gallery reached that size), the SQLite one trains a FAISS index per worker.")
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=24)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--backends", nargs="+", default=["postgresql", "sqlite"], choices=["postgresql", "sqlite"])
    parser.add_argument("--writers", type=int, nargs="*", default=[1, 2, 4, 8])
    parser.add_argument("--identities", type=int, default=800)
    parser.add_argument("--reload", type=int, nargs="*", default=[], metavar="N",
                        help="also time a worker's reload of an N-embedding gallery (matrix and identifier)")
    parser.add_argument("--out", default=str(RESULTS / "serve_workers"))
    args = parser.parse_args()
    people = lfw_people(args.people)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # a stopped run still stops its PostgreSQL
    runs, writes, reloads = [], [], []
    with tempfile.TemporaryDirectory() as folder:
        pg = LocalPostgres().start() if "postgresql" in args.backends else None
        try:
            for backend in args.backends:
                for workers in args.workers:
                    runs.append(run_config(backend, workers, people, args.clients, pg, Path(folder)))
                    print(json.dumps(runs[-1]), flush=True)
                for writers in args.writers:
                    writes.append(run_writers(backend, writers, args.identities, pg, Path(folder)))
                    print(json.dumps(writes[-1]), flush=True)
                for size in args.reload:
                    reloads.append(run_reload(backend, size, pg, Path(folder)))
                    print(json.dumps(reloads[-1]), flush=True)
        finally:
            if pg is not None:
                pg.stop()
    report = {"command": " ".join(["python benchmarks/serve_workers.py", *sys.argv[1:]]), "machine": machine(),
              "runs": runs, "writes": writes, "reloads": reloads}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    write_markdown(out.with_suffix(".md"), report)


if __name__ == "__main__":
    main()
