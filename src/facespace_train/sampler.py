"""Identity-balanced P x K batches for triplet training.

Each batch holds ``p`` identities with ``k`` images each. Identities are drawn
without replacement from a shuffled list (reshuffled once all were used), and
each identity's images are walked through in a shuffled order (reshuffled when
exhausted), so every image is seen about equally often.

Identities with fewer than ``min_images`` images (default 2: they cannot give
an anchor-positive pair) are never chosen. One with fewer than ``k`` images is
handled by ``small``: ``"repeat"`` (default) fills its k slots by cycling
through its images again (each image carries its own augmentation seed, so the
repeats are augmented differently), ``"partial"`` uses just the images it has
(the batch is then smaller than p*k).

The sampler is infinite and its whole position is in :meth:`state_dict`, so a
restored sampler continues with exactly the batches the original would have
given. Each index comes with an augmentation seed derived from the seed, the
batch number and the slot, which makes augmentation reproducible too.

For distributed training every rank builds the sampler with the same seed and
its ``rank`` / ``world_size``: all ranks draw the same global batch and each
yields its contiguous share (``p`` must be divisible by ``world_size``; each
rank gets whole identities).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterator, Sequence

import numpy as np


class PKSampler:
    """Infinite sampler of P x K batches; iterating yields lists of ``(index, aug_seed)``."""

    def __init__(self, labels: Sequence[int], p: int, k: int, seed: int = 0, min_images: int = 2,
                 small: str = "repeat", rank: int = 0, world_size: int = 1) -> None:
        if small not in ("repeat", "partial"):
            raise ValueError("small must be 'repeat' or 'partial'")
        if p < 1 or k < 1:
            raise ValueError("p and k must be positive")
        if p % world_size:
            raise ValueError(f"p={p} identities per batch cannot be split over {world_size} ranks")
        by_label: dict[int, list[int]] = defaultdict(list)
        for index, label in enumerate(labels):
            by_label[int(label)].append(index)
        self.identities = sorted(lab for lab, idx in by_label.items() if len(idx) >= min_images)
        if len(self.identities) < 2:
            raise ValueError(f"need at least 2 identities with {min_images}+ images, found {len(self.identities)}")
        if p > len(self.identities):
            raise ValueError(f"p={p} identities per batch but only {len(self.identities)} usable identities")
        self.members = {lab: np.asarray(by_label[lab], dtype=np.int64) for lab in self.identities}
        self.p, self.k, self.seed, self.small = p, k, seed, small
        self.rank, self.world_size = rank, world_size
        self.num_images = sum(len(v) for v in self.members.values())
        self._rng = np.random.default_rng(seed)
        self._id_order = self._rng.permutation(len(self.identities))
        self._id_pos = 0
        self._img_order: dict[int, np.ndarray] = {}
        self._img_pos: dict[int, int] = {}
        self.batches_drawn = 0

    def __len__(self) -> int:
        """Batches per nominal epoch (about one pass over the images)."""
        return max(1, self.num_images // (self.p * self.k))

    def _next_identities(self) -> list[int]:
        chosen: list[int] = []
        while len(chosen) < self.p:
            if self._id_pos >= len(self._id_order):
                self._id_order = self._rng.permutation(len(self.identities))
                self._id_pos = 0
            candidate = self.identities[int(self._id_order[self._id_pos])]
            self._id_pos += 1
            if candidate not in chosen:
                chosen.append(candidate)
        return chosen

    def _next_images(self, label: int) -> list[int]:
        members = self.members[label]
        want = self.k if self.small == "repeat" else min(self.k, len(members))
        out: list[int] = []
        while len(out) < want:
            order = self._img_order.get(label)
            pos = self._img_pos.get(label, 0)
            if order is None or pos >= len(order):
                order, pos = self._rng.permutation(len(members)), 0
                if out:  # images already in this batch go last, so none repeats before all were used
                    used = set(out)
                    order = np.asarray(sorted(order, key=lambda i: int(members[i]) in used), dtype=np.int64)
                self._img_order[label] = order
            take = min(want - len(out), len(order) - pos)
            out.extend(int(members[i]) for i in order[pos : pos + take])
            self._img_pos[label] = pos + take
        return out

    def next_global_batch(self) -> list[tuple[int, int]]:
        """The next whole batch (all ranks) as ``(index, augmentation seed)`` pairs."""
        batch_no = self.batches_drawn
        groups = [self._next_images(label) for label in self._next_identities()]
        self.batches_drawn += 1
        base = np.random.SeedSequence([self.seed, batch_no])
        seeds = base.generate_state(sum(len(g) for g in groups), dtype=np.uint32)
        flat = [i for g in groups for i in g]
        per_rank = self.p // self.world_size
        mine = range(self.rank * per_rank, (self.rank + 1) * per_rank)
        self._last_groups = [len(g) for g in groups]
        start = sum(len(g) for g in groups[: mine.start])
        stop = sum(len(g) for g in groups[: mine.stop])
        self._local_span = (start, stop)
        return list(zip(flat, (int(s) for s in seeds)))

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        while True:
            batch = self.next_global_batch()
            start, stop = self._local_span
            yield batch[start:stop]

    # -- checkpointing ---------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "seed": self.seed,
            "rng": self._rng.bit_generator.state,
            "id_order": self._id_order.tolist(),
            "id_pos": self._id_pos,
            "img_order": {int(k): v.tolist() for k, v in self._img_order.items()},
            "img_pos": {int(k): int(v) for k, v in self._img_pos.items()},
            "batches_drawn": self.batches_drawn,
        }

    def load_state_dict(self, state: dict) -> None:
        self.seed = state["seed"]
        self._rng = np.random.default_rng()
        self._rng.bit_generator.state = state["rng"]
        self._id_order = np.asarray(state["id_order"], dtype=np.int64)
        self._id_pos = int(state["id_pos"])
        self._img_order = {int(k): np.asarray(v, dtype=np.int64) for k, v in state["img_order"].items()}
        self._img_pos = {int(k): int(v) for k, v in state["img_pos"].items()}
        self.batches_drawn = int(state["batches_drawn"])
