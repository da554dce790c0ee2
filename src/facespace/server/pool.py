"""Inference under load: a pool of pipelines run by worker threads, behind a bounded admission queue.

A request is *admitted* (:meth:`InferencePool.admitted`) before it reads its uploads. At most
``max_queue`` requests are admitted at once, whether reading, waiting for a worker or running;
one more is refused at once: 503 ``busy`` with a ``Retry-After`` (seconds). An admitted
request's work (:meth:`InferencePool.run`) waits for one of the ``workers`` threads, each owning
a pipeline of its own; if no worker takes it within ``timeout`` seconds it is dropped, never run,
and the request is answered 503 ``queue_timeout`` with a ``Retry-After``. Work that has started
runs to its end (a network cannot be interrupted; uploads bound how long it takes).

Inference runs only on the pool's threads, so the networks' memory is reused by the same few
threads however many requests come; and nothing here is needed to answer ``/health``.

:class:`ShedWhenFull` refuses a POST under ``/api/`` (they all infer) while the queue is full
before its body is parsed or a thread taken for it, so a burst of requests that will be refused
costs the event loop little; it only looks, so the endpoints still take their places themselves
(after the API key check: a request without the key never holds a place, though while the queue
is full it is answered 503 rather than 401).
"""

from __future__ import annotations

import math
import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Iterator, TypeVar

from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import ApiError, error_response

if TYPE_CHECKING:
    from ..pipeline import FacePipeline

T = TypeVar("T")


def default_queue(workers: int) -> int:
    """The default number of admitted requests: two per worker (one running, one decoding its
    uploads or waiting) and two more, so a short burst is queued rather than refused."""
    return 2 * workers + 2


def default_workers(most: int = 8) -> int:
    """Inference threads for a server: one per usable core, at most ``most`` (each holds a pipeline,
    ~130 MB)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, min(most, cores))


def serving_threads() -> int:
    """Intra-op threads (torch and ONNX Runtime) for serving: one per inference, so that concurrent
    requests, not the ops of one, use the cores (``FACESPACE_NUM_THREADS`` overrides it); returns
    the count.

    Measured with ``benchmarks/serve_load.py`` on a shared 2-core machine: 2 workers of 1 thread
    served 21 requests/s, 1 worker of 2 threads 17 and 1 of 1 thread 14 while the machine was
    quiet; while other work kept its cores busy, 1 worker of 2 threads fell to 0.4 requests/s
    (OpenMP waiting for a descheduled thread) against 12.8 and 13.7 with 1 thread each.
    """
    from ..runtime.threads import set_thread_default

    return set_thread_default(1)  # torch and ONNX Runtime alike, without importing torch


class InferencePool:
    """``workers`` pipelines from ``factory`` (built on first need), each run by its own thread."""

    def __init__(self, factory: Callable[[], "FacePipeline"], workers: int = 1, max_queue: int | None = None,
                 timeout: float = 30.0) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workers = workers
        self.max_queue = default_queue(workers) if max_queue is None else max_queue
        if self.max_queue < 1 or timeout <= 0:
            raise ValueError(f"max_queue must be at least 1 and timeout above 0, got {self.max_queue}, {timeout}")
        self.timeout = timeout
        self._factory = factory
        self._build_lock = threading.Lock()
        self._pipelines: list[FacePipeline] = []
        self._idle: queue.SimpleQueue = queue.SimpleQueue()
        self._slots = threading.BoundedSemaphore(self.max_queue)
        self._count_lock = threading.Lock()
        self.admitted_now = self.running_now = 0  # requests holding a place, jobs on a worker: for /health
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="facespace-inference")
        self._job_seconds = 1.0  # a running mean of one job's time, for Retry-After

    @property
    def loaded(self) -> bool:
        return bool(self._pipelines)

    def pipelines(self) -> list["FacePipeline"]:
        """All the pool's pipelines, built now if they are not yet (never under an inference)."""
        if not self._pipelines:
            with self._build_lock:
                if not self._pipelines:
                    built = [self._factory() for _ in range(self.workers)]
                    for pipeline in built:
                        self._idle.put(pipeline)
                    self._pipelines = built
        return self._pipelines

    def primary(self) -> "FacePipeline":
        """The pipeline whose settings describe them all (model, threshold, preprocessing)."""
        return self.pipelines()[0]

    @property
    def full(self) -> bool:
        return self.admitted_now >= self.max_queue

    @contextmanager
    def admitted(self) -> Iterator[None]:
        """Hold one of the ``max_queue`` places for the block; 503 ``busy`` at once when none is free."""
        if not self._slots.acquire(blocking=False):
            raise self.busy()
        self._count("admitted_now", +1)
        try:
            yield
        finally:
            self._count("admitted_now", -1)
            self._slots.release()

    def run(self, fn: Callable[["FacePipeline"], T]) -> T:
        """``fn(pipeline)`` on a worker thread; 503 ``queue_timeout`` if none starts it within ``timeout``."""
        self.pipelines()
        future = self._executor.submit(self._job, fn)
        done, _ = wait([future], timeout=self.timeout)
        if not done and future.cancel():
            raise self._refusal("queue_timeout", f"no inference worker was free within {self.timeout:g} s")
        return future.result()

    def occupancy(self) -> dict:
        """How full the queue is: for ``/health``, read without waiting on anything."""
        return {"admitted": self.admitted_now, "running": self.running_now, "max_queue": self.max_queue,
                "workers": self.workers}

    def retry_after(self) -> int:
        """Seconds until the queue has likely drained: a full queue's jobs shared among the workers."""
        return max(1, math.ceil(self._job_seconds * self.max_queue / self.workers))

    def _job(self, fn: Callable[["FacePipeline"], T]) -> T:
        pipeline = self._idle.get()
        self._count("running_now", +1)
        start = time.perf_counter()
        try:
            return fn(pipeline)
        finally:
            self._count("running_now", -1)
            self._idle.put(pipeline)
            self._job_seconds = 0.8 * self._job_seconds + 0.2 * (time.perf_counter() - start)

    def _count(self, counter: str, change: int) -> None:
        with self._count_lock:
            setattr(self, counter, getattr(self, counter) + change)

    def busy(self) -> ApiError:
        return self._refusal("busy", f"the server is busy ({self.max_queue} requests in progress)")

    def _refusal(self, kind: str, message: str) -> ApiError:
        seconds = self.retry_after()
        return ApiError(503, kind, f"{message}; retry in {seconds} s", headers={"Retry-After": str(seconds)})


class ShedWhenFull:
    """ASGI middleware: 503 ``busy`` at once for a POST under ``/api/`` while ``pool`` is full."""

    def __init__(self, app: ASGIApp, pool: InferencePool) -> None:
        self.app, self.pool = app, pool

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"].startswith("/api/") \
                and self.pool.full:
            refusal = self.pool.busy()
            await error_response(refusal.status, refusal.kind, str(refusal), refusal.headers)(scope, receive, send)
            return
        await self.app(scope, receive, send)
