"""Load on a real ``facespace serve``: throughput, latency, refusals, /health and the server's memory.

    python benchmarks/serve_load.py                  # writes benchmarks/results/serve_load.{json,md}
    python benchmarks/serve_load.py --seconds 5 --clients 4 16 --configs 1x1

For each of ``--configs``, ``WxT``: W inference threads (``--inference-threads``) of T torch threads
each (``FACESPACE_NUM_THREADS``; ``WxTbMS``: with ``--batch-window-ms MS``, the workers sharing one
network that embeds the faces of concurrent requests together), a fresh server is started on 127.0.0.1 (a free port; nothing
else is contacted) with a small gallery, enrolled through the REST API (``--people`` LFW people, two
photos each). Then, for each number of ``--clients`` in turn, that many client threads (one
keep-alive httpx connection each) send requests for ``--seconds``: two identify requests (a third
photo of an enrolled person, or a stranger) for every verify (two photos of one person). A client
answered 503 waits as ``Retry-After`` says (to the end of the period at most), as a well-behaved
client does; one not answered within 30 s gives up (counted as other). Beside them a probe times ``/health`` every 50 ms and a sampler reads the server's
``VmRSS`` (``/proc/<pid>/status``) every half second. The levels run ``--runs`` times in a row on
the same server, so a growth of memory from run to run would show. (The probe is a process of
its own; it still shares the cores with the clients and the server.)

Recorded per level: requests/s (answered 2xx), p50/p99 latency of the 2xx and of the 503 answers,
counts of 2xx / 503 / other, /health p50/p99/max, RSS at the start and end and its peak; and
the RSS after warm-up and after each run. The client threads share the machine's cores with the
server: on a 2-core machine their own work is part of every latency here.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from _paths import DATA, RESULTS

LFW = DATA / "lfw" / "lfw-deepfunneled"


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def pick_people(count: int) -> tuple[list[list[Path]], list[Path]]:
    """``count`` LFW people with three photos or more (two to enrol, one to probe), and strangers."""
    people, strangers = [], []
    for folder in sorted(p for p in LFW.iterdir() if p.is_dir()):
        photos = sorted(folder.glob("*.jpg"))
        if len(photos) >= 3 and len(people) < count:
            people.append(photos[:3])
        elif len(photos) == 1 and len(strangers) < count:
            strangers.append(photos[0])
        if len(people) == count and len(strangers) == count:
            break
    return people, strangers


def parse_config(config: str) -> tuple[str, str, str | None]:
    """``WxT`` or ``WxTbMS``: (inference threads, torch threads, batch window in ms or None)."""
    workers, rest = config.split("x")
    torch_threads, _, window = rest.partition("b")
    return workers, torch_threads, window or None


class Server:
    """``facespace serve`` in a subprocess on a loopback port, with its gallery in a temporary folder."""

    def __init__(self, folder: Path, config: str, extra: list[str]) -> None:
        workers, torch_threads, window = parse_config(config)
        if window:
            extra = ["--batch-window-ms", window, *extra]
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = open(folder / f"server-{config}.log", "w")
        cmd = [sys.executable, "-m", "facespace.cli.main", "serve", "--host", "127.0.0.1", "--port", str(self.port),
               "--gallery", str(folder / f"gallery-{config}.db"), "--inference-threads", workers,
               "--log-level", "warning", *extra]
        self.command = f"FACESPACE_NUM_THREADS={torch_threads} python " + " ".join(cmd[1:])
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "FACESPACE_NUM_THREADS": torch_threads})

    def wait(self, httpx, seconds: float = 300) -> None:
        deadline = time.time() + seconds
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"the server exited: {Path(self.log.name).read_text()[-2000:]}")
            try:
                if httpx.get(self.base + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise SystemExit(f"the server did not answer within {seconds:g} s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def enrol(httpx, base: str, people: list[list[Path]]) -> None:
    with httpx.Client(base_url=base, timeout=300) as client:
        for photos in people:
            files = [("images", (p.name, p.read_bytes(), "image/jpeg")) for p in photos[:2]]
            r = client.post("/api/identities", data={"name": photos[0].parent.name}, files=files)
            if r.status_code != 201:
                raise SystemExit(f"enrolling {photos[0].parent.name}: {r.status_code} {r.text}")


def client_loop(httpx, base: str, number: int, work: dict, until: float, out: list) -> None:
    """Requests until ``until``; each answer as (kind, status, seconds) in ``out``."""
    with httpx.Client(base_url=base, timeout=30) as client:
        k = number
        while time.time() < until:
            k += 1
            if k % 3 == 0:
                a, b = work["pairs"][k % len(work["pairs"])]
                kind, files = "verify", {"a": ("a.jpg", a, "image/jpeg"), "b": ("b.jpg", b, "image/jpeg")}
            else:
                kind, files = "identify", {"image": ("p.jpg", work["probes"][k % len(work["probes"])], "image/jpeg")}
            start = time.perf_counter()
            try:
                r = client.post(f"/api/{kind}", files=files)
                status, retry = r.status_code, r.headers.get("retry-after")
            except httpx.HTTPError:
                status, retry = -1, None
            out.append((kind, status, time.perf_counter() - start))
            if status == 503:
                time.sleep(max(0.0, min(float(retry or 1), until - time.time())))


def probe_health(base: str, until: float, out) -> None:
    """Times /health every 50 ms until ``until``; run in a process of its own, so that the client
    threads' hold on this one's interpreter lock is not counted as the server's time."""
    import httpx

    seconds = []
    with httpx.Client(base_url=base, timeout=30) as client:
        while time.time() < until:
            start = time.perf_counter()
            client.get("/health")
            seconds.append(time.perf_counter() - start)
            time.sleep(0.05)
    out.put(seconds)


def sample_rss(pid: int, stop: threading.Event, out: list, t0: float) -> None:
    while not stop.is_set():
        out.append((round(time.time() - t0, 1), round(rss_mb(pid), 1)))
        stop.wait(0.5)


def run_level(httpx, server: Server, clients: int, seconds: float, work: dict) -> dict:
    """``clients`` threads for ``seconds``, the /health probe beside them; their figures."""
    answers, rss = [], []
    until = time.time() + seconds
    spawn = multiprocessing.get_context("spawn")
    health_queue = spawn.Queue()
    prober = spawn.Process(target=probe_health, args=(server.base, until, health_queue))
    prober.start()
    rss_start = rss_mb(server.proc.pid)
    stop = threading.Event()
    threads = [threading.Thread(target=client_loop, args=(httpx, server.base, i, work, until, answers))
               for i in range(clients)]
    sampler = threading.Thread(target=sample_rss, args=(server.proc.pid, stop, rss, time.time()))
    start = time.perf_counter()
    for t in [*threads, sampler]:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    stop.set()
    sampler.join()
    health = health_queue.get(timeout=120)
    prober.join()
    return summarise(answers, health, rss, clients, elapsed, rss_start, rss_mb(server.proc.pid))


def _ms(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1000, 1) if values else None


def summarise(answers: list, health: list, rss: list, clients: int, elapsed: float, rss_start: float,
              rss_end: float) -> dict:
    ok = [s for _, status, s in answers if 200 <= status < 300]
    busy = [s for _, status, s in answers if status == 503]
    return {
        "clients": clients, "seconds": round(elapsed, 1), "requests": len(answers),
        "requests_per_s": round(len(ok) / elapsed, 2), "ok_2xx": len(ok), "refused_503": len(busy),
        "other": len(answers) - len(ok) - len(busy),
        "ok_p50_ms": _ms(ok, 50), "ok_p99_ms": _ms(ok, 99), "ok_max_ms": _ms(ok, 100),
        "refused_p50_ms": _ms(busy, 50), "refused_p99_ms": _ms(busy, 99),
        "health_probes": len(health), "health_p50_ms": _ms(health, 50), "health_p99_ms": _ms(health, 99),
        "health_max_ms": _ms(health, 100),
        "rss_start_mb": round(rss_start, 1), "rss_end_mb": round(rss_end, 1),
        "rss_peak_mb": round(max([r for _, r in rss] + [rss_start, rss_end]), 1),
    }


def bench_config(httpx, folder: Path, config: str, args: argparse.Namespace, work: dict, people) -> dict:
    """One server as ``config`` says: warm it, then every level, ``args.runs`` times."""
    server = Server(folder, config, args.server_args)
    try:
        server.wait(httpx)
        enrol(httpx, server.base, people)
        run_level(httpx, server, 2, 3, work)  # warm-up: the networks' first batches, the index
        health = httpx.get(server.base + "/health").json()
        out = {"config": config, "server": health.get("inference"), "command": server.command,
               "rss_after_warmup_mb": round(rss_mb(server.proc.pid), 1), "runs": []}
        for run in range(1, args.runs + 1):
            levels = []
            for clients in args.clients:
                levels.append(run_level(httpx, server, clients, args.seconds, work))
                print(f"config={config} run={run} " + json.dumps(levels[-1]), flush=True)
            out["runs"].append({"run": run, "levels": levels, "rss_after_mb": round(rss_mb(server.proc.pid), 1)})
        return out
    finally:
        server.stop()


def markdown(result: dict) -> str:
    lines = ["# `facespace serve` under load", "",
             f"`{result['command']}` on {result['machine'].get('cpu')} ({result['machine'].get('cpu_count')} cores, "
             f"load average before {result['machine'].get('load_average')}), {result['machine'].get('date')}.",
             "", result["method"], ""]
    for config in result["configs"]:
        workers, torch_threads, window = parse_config(config["config"])
        batching = f", faces of concurrent requests gathered for {window} ms" if window else ""
        lines += [f"## {workers} inference thread(s) x {torch_threads} torch thread(s){batching}", "",
                  f"`{config['command']}`; admission queue {config['server']}.", "",
                  f"RSS after warm-up {config['rss_after_warmup_mb']} MB; after each run: "
                  + ", ".join(f"{r['rss_after_mb']} MB" for r in config["runs"]) + ".", "",
                  "| run | clients | req/s (2xx) | 2xx | 503 | other | p50 ms | p99 ms | 503 p50 ms "
                  "| /health p50 / p99 / max ms | RSS start / end / peak MB |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for run in config["runs"]:
            for v in run["levels"]:
                lines.append(f"| {run['run']} | {v['clients']} | {v['requests_per_s']} | {v['ok_2xx']} | "
                             f"{v['refused_503']} | {v['other']} | {v['ok_p50_ms']} | {v['ok_p99_ms']} | "
                             f"{v['refused_p50_ms']} | {v['health_p50_ms']} / {v['health_p99_ms']} / "
                             f"{v['health_max_ms']} | {v['rss_start_mb']} / {v['rss_end_mb']} / {v['rss_peak_mb']} |")
        lines.append("")
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[4, 16, 64], help="concurrency levels")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each level (default 10)")
    parser.add_argument("--runs", type=int, default=2, help="times the levels run on one server (default 2)")
    parser.add_argument("--configs", nargs="+", default=["2x1", "1x1", "1x2"],
                        help="one server for each WxT: W inference threads of T torch threads (default 2x1, what "
                             "`facespace serve` does on 2 cores; 1x1; 1x2, torch's own default); WxTbMS adds "
                             "--batch-window-ms MS")
    parser.add_argument("--people", type=int, default=10, help="identities enrolled (default 10)")
    parser.add_argument("--server-args", nargs=argparse.REMAINDER, default=[],
                        help="more `facespace serve` options, last on the line")
    parser.add_argument("--out", type=Path, default=RESULTS / "serve_load", help="results stem (.json, .md)")
    return parser.parse_args()


def main() -> None:
    import httpx

    from facespace.evaluation.report import machine_info

    args = parse_args()
    people, strangers = pick_people(args.people)
    work = {"probes": [p[2].read_bytes() for p in people] + [s.read_bytes() for s in strangers],
            "pairs": [(p[0].read_bytes(), p[1].read_bytes()) for p in people]}
    result = {"benchmark": "serve_load", "command": "python benchmarks/serve_load.py " + " ".join(sys.argv[1:]),
              "machine": machine_info(), "method": __doc__.split("\n\n")[2].replace("\n", " "),
              "settings": {k: v for k, v in vars(args).items() if k != "out"}, "configs": []}
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        for config in args.configs:
            result["configs"].append(bench_config(httpx, Path(tmp), config, args, work, people))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(f"wrote {args.out.with_suffix('.json')} and .md")


if __name__ == "__main__":
    main()
