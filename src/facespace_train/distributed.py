"""Distributed data-parallel training (``torchrun``) with mining over the global batch.

Launch::

    torchrun --nproc-per-node 4 -m facespace_train.run --config train.toml
    # or: torchrun --nproc-per-node 4 $(which facespace) train --config train.toml

Each rank embeds its share of the P x K batch (whole identities, see
:class:`~facespace_train.sampler.PKSampler`). :func:`gather_with_grad`
all-gathers the embeddings so that every rank mines triplets over the whole
global batch, exactly as one process with the full batch would; the local
slice of the gathered tensor is the local tensor itself, so gradient flows
back into this rank's part of the network. Every rank computes the same global
loss, and DDP averages gradients over ranks, so the loss is multiplied by the
world size before ``backward`` (:func:`global_loss_scale`) to obtain the
gradient of the global loss.

Batch norm statistics stay per rank unless ``sync_bn`` converts the model
with :class:`torch.nn.SyncBatchNorm`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(backend: str | None = None) -> DistInfo:
    """Join the process group torchrun describes in the environment (no-op when absent)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if backend is None:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    return DistInfo(rank, world, local)


def current() -> DistInfo:
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return DistInfo()


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from all ranks along dim 0, in rank order.

    Other ranks' parts are constants here; this rank's part is ``tensor``
    itself, so gradients flow to it. All ranks must pass the same shape.
    """
    info = current()
    if not info.enabled:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(info.world_size)]
    dist.all_gather(parts, tensor.detach().contiguous())
    parts[info.rank] = tensor
    return torch.cat(parts, dim=0)


def gather_labels(labels: torch.Tensor) -> torch.Tensor:
    info = current()
    if not info.enabled:
        return labels
    parts = [torch.empty_like(labels) for _ in range(info.world_size)]
    dist.all_gather(parts, labels.contiguous())
    return torch.cat(parts, dim=0)


def global_loss_scale() -> float:
    """Factor undoing DDP's gradient averaging for a loss computed on the gathered batch."""
    return float(current().world_size)


def all_reduce_mean(value: float) -> float:
    info = current()
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / info.world_size


def barrier() -> None:
    if current().enabled:
        dist.barrier()


def cleanup(wait: bool = False) -> None:
    """Leave the process group. ``wait`` (after a normal finish): every rank waits for the others
    first, as gloo aborts a process whose peer tears down mid-way ("terminate called without an
    active exception"); after an error nobody waits, so a failed rank cannot hang the rest."""
    if dist.is_available() and dist.is_initialized():
        try:
            if wait:
                dist.barrier()
        finally:
            dist.destroy_process_group()
