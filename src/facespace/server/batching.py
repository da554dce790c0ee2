"""Faces of concurrent requests embedded in one batch: an embedder shared by the pool's pipelines.

The server's inference workers each run a whole request (decode, detect, crop, embed). With
:class:`GatheringEmbedder` as their common embedder, a worker that reaches the embedding waits
up to ``window`` seconds for other workers' crops (or until ``max_batch`` faces are waiting),
then runs them all through the one network in a single call and hands every caller its own
rows; a worker that arrives while that batch runs starts the next gathering. At most ``workers``
callers can wait at once, so a batch is bounded by the workers' faces, and the wait by
``window``. One network serves every worker instead of one each.

Batched and unbatched embeddings agree to float rounding (``tests/test_batching.py``); whether
batching pays depends on the machine: on a core count that the workers already fill, a larger
batch is faster per face but leaves the other workers' cores idle while it runs
(``benchmarks/results/speed.md``, the serve batching rows).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np

from ..embedding import Embedder
from ..pretrained.registry import PretrainedConfig

if TYPE_CHECKING:
    from ..pipeline import FacePipeline

__all__ = ["GatheringEmbedder", "sharing_embedder"]


@dataclass
class _Job:
    crops: np.ndarray
    done: threading.Event = field(default_factory=threading.Event)
    result: np.ndarray | None = None
    error: BaseException | None = None


class GatheringEmbedder:
    """An :class:`~facespace.embedding.EmbeddingModel` that embeds the crops of concurrent callers
    together (see the module's text); everything else is ``embedder``'s."""

    def __init__(self, embedder: Embedder, window: float = 0.005, max_batch: int = 32) -> None:
        if not 0 <= window <= 1:
            raise ValueError(f"window must lie in [0, 1] seconds, got {window!r}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch!r}")
        self._embedder = embedder
        self.window, self.max_batch = window, max_batch
        self.config: PretrainedConfig = embedder.config
        self.flip: bool = embedder.flip
        self.backend: str = embedder.backend
        self.device_name: str = embedder.device_name
        self._arrived = threading.Condition()
        self._pending: list[_Job] = []
        self._gathering = False
        self.batches = 0  # calls of the network made, for tests and benchmarks

    @property
    def name(self) -> str:
        return self._embedder.name

    @property
    def input_size(self) -> int:
        return self._embedder.input_size

    @property
    def dim(self) -> int:
        return self._embedder.dim

    @property
    def network(self):
        return self._embedder.network

    def embed_crops(self, crops: np.ndarray, flip: bool | None = None) -> np.ndarray:
        """As :meth:`Embedder.embed_crops`; gathered with other callers' crops where it can be
        (same flip setting, well-formed crops), else run alone."""
        crops = np.asarray(crops)
        if crops.ndim == 3:
            crops = crops[None]
        size = self.input_size
        if (flip is not None and flip != self.flip) or crops.shape[1:] != (size, size, 3) \
                or crops.dtype != np.uint8 or not 0 < len(crops) < self.max_batch:
            return self._embedder.embed_crops(crops, flip)
        job = _Job(crops)
        with self._arrived:
            self._pending.append(job)
            lead = not self._gathering
            self._gathering = True
            self._arrived.notify_all()
        if lead:
            self._lead()
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result

    def _lead(self) -> None:
        """Wait for the window (or a full batch), take every waiting job, embed them in one call."""
        deadline = time.monotonic() + self.window
        with self._arrived:
            while sum(len(j.crops) for j in self._pending) < self.max_batch:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._arrived.wait(left)
            jobs, self._pending, self._gathering = self._pending, [], False
            self.batches += 1
        try:
            rows = self._embedder.embed_crops(np.concatenate([j.crops for j in jobs]))
            start = 0
            for j in jobs:
                j.result, start = rows[start : start + len(j.crops)], start + len(j.crops)
        except BaseException as exc:  # every caller of the batch gets the error, none waits forever
            for j in jobs:
                j.error = exc
        finally:
            for j in jobs:
                j.done.set()


def sharing_embedder(make: Callable[..., "FacePipeline"], window: float,
                     max_batch: int = 32) -> Callable[[], "FacePipeline"]:
    """A pipeline factory for the pool whose pipelines share one :class:`GatheringEmbedder`, made
    from the first pipeline's embedder; ``make(**settings)`` builds a pipeline (it takes
    ``embedder=``)."""
    shared: list[GatheringEmbedder] = []
    lock = threading.Lock()

    def build() -> "FacePipeline":
        with lock:
            if not shared:
                shared.append(GatheringEmbedder(make().embedder, window, max_batch))
        return make(embedder=shared[0])
    return build
