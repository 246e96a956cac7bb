"""Several processes (GPUs, or CPU processes) training one model with DistributedDataParallel.

Launched by ``torchrun --nproc_per_node N -m napari_vae_anomaly train ...``: torchrun sets
``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` (and the rendezvous address), which is how the
trainer knows. Backend: NCCL on CUDA (one GPU per process, ``cuda:LOCAL_RANK``), Gloo on the
CPU. Every rank reads the same data and makes the same split; each epoch's shuffled training
slices are cut into equal shards by rank; validation sums are reduced across ranks; rank 0
alone writes the checkpoint and prints progress.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .devices import resolve_device


@dataclass
class DistContext:
    """Who this process is. ``world_size == 1`` means a plain single-process run."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """In-place reduction across ranks (a no-op in a single process)."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
        return tensor

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        if self.initialized_here and dist.is_initialized():
            dist.destroy_process_group()
            self.initialized_here = False


def env_world() -> tuple[int, int, int]:
    """(world size, rank, local rank) from torchrun's environment variables (1, 0, 0 if unset)."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    rank = int(os.environ.get("RANK", "0") or 0)
    local = int(os.environ.get("LOCAL_RANK", str(rank)) or 0)
    return world, rank, local


def setup(device: str = "auto") -> DistContext:
    """Resolve the device and, under torchrun, join the process group."""
    world, rank, local = env_world()
    if world <= 1:
        return DistContext(device=resolve_device(device))
    dev = resolve_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local % torch.cuda.device_count())
        torch.cuda.set_device(dev)
        backend = "nccl"
    else:
        dev = torch.device("cpu")  # MPS has no collective backend: CPU processes with Gloo
        backend = "gloo"
    initialized_here = False
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://",
                                world_size=world, rank=rank)
        initialized_here = True
    return DistContext(world, rank, local, dev, initialized_here)
