"""Several processes (GPUs, or CPU processes) training one model with DistributedDataParallel.

Launched by ``torchrun --nproc_per_node N -m napari_vae_anomaly train ...``: torchrun sets
``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` (and the rendezvous address), which is how the
trainer knows. Backend: NCCL on CUDA (one GPU per process, ``cuda:LOCAL_RANK``), Gloo on the
CPU. Every rank reads the same data and makes the same split; each epoch's shuffled training
slices are cut into equal shards by rank; validation sums are reduced across ranks; rank 0
alone writes the checkpoint and prints progress.

``predict`` under torchrun uses the same context: :func:`shard` splits the cases over ranks,
:class:`SharedCounter` feeds rank 0's progress bar and :func:`gather_objects` brings every
rank's tally to one summary.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from .devices import resolve_device

T = TypeVar("T")


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


def shard(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """This rank's share of ``items``: every ``world_size``-th item from ``rank`` on.

    Deterministic (the same list gives every rank the same split, with no communication)
    and balanced to one item; neighbours in a sorted cohort land on different ranks, so
    ranks see similar mixes of cases.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of {world_size}")
    return list(items[rank::world_size])


def gather_objects(ctx: DistContext, obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order, on every rank (``[obj]`` in a single process)."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def any_rank(ctx: DistContext, flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any of them."""
    t = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    return bool(ctx.all_reduce(t, op="max").item() > 0)


class SharedCounter:
    """A count every rank adds to and rank 0 reads (the process group's key-value store), so
    one progress bar on rank 0 can summarise all ranks. A plain counter in one process."""

    def __init__(self, ctx: DistContext, key: str):
        self.key, self._local, self._store = key, 0, None
        if ctx.distributed:
            from torch.distributed import distributed_c10d

            getter = getattr(distributed_c10d, "_get_default_store", None)
            self._store = getter() if getter is not None else None

    def add(self, n: int = 1) -> int:
        """Add ``n`` and return the total over all ranks (this rank's own without a store)."""
        self._local += n
        if self._store is None:
            return self._local
        return int(self._store.add(self.key, n))
