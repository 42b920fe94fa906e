"""Many processes: data-parallel training on ``torch.distributed`` (gloo on CPUs, nccl on CUDA).

Launched by ``torchrun --nproc-per-node N -m vaekit train ...`` (also across nodes with torchrun's
rendezvous) or ``vaekit train --nproc N`` (the same on this machine). The design keeps no per-rank
state, so N processes follow the trajectory of one process with the same global batch:

- every step takes the next global batch of one permutation from (seed, epoch); the batch is cut
  into ``train.micro_batches`` equal micro-batches (default: one per process) and rank r computes
  micro-batches r·k … (r+1)·k − 1 (k = micro-batches per rank);
- the random draws of micro-batch m at step t (binarization, z ~ q) come from generators seeded by
  (seed, t, m), so they do not depend on which process computes them; a single process with the
  same ``micro_batches`` loops over all of them and accumulates gradients;
- gradients are averaged with one all-reduce of a flattened buffer; the loss and the gradient
  norm are then the same on every rank, so decisions to skip a step (non-finite, gradient spike)
  are collective by construction;
- an objective with its own optimizer (FactorVAE's discriminator) gathers the step's codes of
  every rank and takes the same step on every rank, on the whole global batch;
- rank 0 alone logs and writes checkpoints; evaluation is sharded without padded duplicates and
  its sums are all-reduced.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = [
    "World",
    "init_world",
    "average_gradients",
    "all_sum",
    "all_gather_rows",
    "launch",
    "micro_seed",
]


@dataclass(frozen=True)
class World:
    """This process's place among ``size`` processes (``size == 1``: no process group)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the process that logs and writes."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def close(self) -> None:
        """Leave the process group together (a process that exits while another still talks,
        or with the group alive, can abort in gloo's threads)."""
        if self.size > 1 and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def init_world(device: torch.device) -> World:
    """Join the process group torchrun describes in the environment (``WORLD_SIZE`` > 1), with
    gloo on CPUs and nccl on CUDA; a single process otherwise."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    if not dist.is_initialized():
        if device.type == "mps":
            raise ValueError("torch.distributed has no MPS backend: use --device cpu or cuda")
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def micro_seed(seed: int, step: int, micro_batch: int) -> int:
    """The seed of micro-batch ``micro_batch``'s random draws at optimizer step ``step``."""
    return (seed * 1_000_003 + step) * 4099 + micro_batch


def average_gradients(params: list[torch.Tensor], world: World) -> None:
    """Replace every parameter's gradient by its mean over the processes (one all-reduce of one
    flattened buffer; a parameter without a gradient counts as zeros)."""
    if world.size <= 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world.size
    offset = 0
    for p, g in zip(params, grads, strict=True):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(g)
        offset += n


def all_sum(values: torch.Tensor, world: World) -> torch.Tensor:
    """The element-wise sum of ``values`` over the processes (itself for one process)."""
    if world.size > 1:
        values = values.clone()
        dist.all_reduce(values)
    return values


def all_gather_rows(values: torch.Tensor, world: World) -> torch.Tensor:
    """Every process's ``values`` (the same shape on each) concatenated along dim 0 in rank
    order: (world.size · n, ...) from (n, ...); itself for one process."""
    if world.size <= 1:
        return values
    parts = [torch.empty_like(values) for _ in range(world.size)]
    dist.all_gather(parts, values.contiguous())
    return torch.cat(parts)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(nproc: int, argv: list[str]) -> int:
    """Run ``vaekit <argv>`` in ``nproc`` processes on this machine through torchrun (standalone
    rendezvous on a free loopback port, one intra-op thread per process, gloo bound to loopback)."""
    from torch.distributed.run import main as torchrun

    if nproc < 1:
        raise ValueError(f"--nproc must be at least 1, got {nproc}")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    endpoint = f"127.0.0.1:{_free_port()}"
    args = ["--nnodes", "1", "--nproc-per-node", str(nproc), "--rdzv-backend", "c10d"]
    args += ["--rdzv-endpoint", endpoint, "--max-restarts", "0", "-m", "vaekit", *argv]
    try:
        torchrun(args)
    except SystemExit as e:  # torchrun exits with the first failed worker's code
        return int(e.code or 0)
    except Exception as e:  # a failed worker: torchrun's ChildFailedError
        print(f"vaekit: a training process failed: {e}", file=sys.stderr)
        return 1
    return 0
