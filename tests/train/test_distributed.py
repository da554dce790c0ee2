"""Two gloo processes: mining over the gathered global batch == one process on the whole batch."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from facespace_train import distributed as fdist
from facespace_train.losses import triplet_loss

B, D_IN, D_OUT = 16, 10, 6


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, D_IN, generator=g)
    y = torch.arange(4).repeat_interleave(4)  # 4 identities x 4; each rank gets 2 whole identities
    return x, y


def model():
    torch.manual_seed(1)
    return torch.nn.Linear(D_IN, D_OUT)


def embed(net, x):
    return torch.nn.functional.normalize(net(x), dim=1)


def worker(rank, world, port, out_dir, strategy):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        x, y = data()
        share = B // world
        local_x, local_y = x[rank * share : (rank + 1) * share], y[rank * share : (rank + 1) * share]
        net = torch.nn.parallel.DistributedDataParallel(model())
        emb = fdist.gather_with_grad(embed(net, local_x))
        labels = fdist.gather_labels(local_y)
        out = triplet_loss(emb, labels, strategy=strategy)
        (out.loss * fdist.global_loss_scale()).backward()
        torch.save({"triplets": sorted(out.triplets.as_set()), "loss": out.loss.item(),
                    "grad": [p.grad.clone() for p in net.module.parameters()]},
                   os.path.join(out_dir, f"rank{rank}.pt"))
        dist.barrier()  # both ranks done before the group goes: gloo aborts if a peer vanishes mid-teardown
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_global_batch_mining_matches_single_process(tmp_path):
    for strategy in ("semihard", "hard"):
        mp.spawn(worker, args=(2, free_port(), str(tmp_path), strategy), nprocs=2, join=True)
        x, y = data()
        net = model()
        out = triplet_loss(embed(net, x), y, strategy=strategy)
        out.loss.backward()
        expected = sorted(out.triplets.as_set())
        assert len(expected) == 4 * 3 * 4
        for rank in range(2):
            got = torch.load(tmp_path / f"rank{rank}.pt")
            assert got["triplets"] == expected
            assert abs(got["loss"] - out.loss.item()) < 1e-6
            for g, p in zip(got["grad"], net.parameters()):
                assert torch.allclose(g, p.grad, atol=1e-6)
