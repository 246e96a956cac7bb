"""Several processes (GPUs, or CPU processes) training one model with DistributedDataParallel.

Launched by ``torchrun --nproc_per_node N -m napari_vae_anomaly train ...``: torchrun sets
``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` (and the rendezvous address), which is how the
trainer knows. Backend: NCCL on CUDA (one GPU per process, ``cuda:LOCAL_RANK``), Gloo on the
CPU. Every rank reads the same data and makes the same split; each epoch's shuffled training
slices are cut into equal shards by rank; validation sums are reduced across ranks; rank 0
alone writes the checkpoint and prints progress.

``predict`` under torchrun uses the same context: :func:`shard` splits the cases over ranks,
:func:`from_main` hands rank 0's threshold calibration to every rank, :class:`SharedCounter`
feeds rank 0's progress bar, and :func:`gather_when_done` brings every rank's tally to one
summary. The last one waits in the store, not in a collective: ranks of a large cohort may end
hours apart (a collective would time out after the process group's 30 minutes), while a rank
whose node died must not keep the others waiting forever (:class:`Heartbeat`).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from .devices import resolve_device
from .errors import AnomalyError

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


def from_main(ctx: DistContext, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (``obj`` itself in a single process).

    Why: a value every rank could compute (the thresholds calibrated on the checkpoint's
    normal data) differs in its last digits between devices (GPU models, CPU vs GPU), so a
    case's mask would depend on the node that happened to compute it. Computed once, on
    rank 0, it is the same everywhere, as in one process.
    """
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def first_differing_rank(ctx: DistContext, obj: Any) -> int | None:
    """The first rank whose ``obj`` differs from rank 0's (None when all agree), on every rank.

    Why: :func:`shard` assumes every rank holds the same list; nodes that expanded a shell
    pattern into different lists (files added between launches, another sort order) would
    each take their share of a different list, doing some cases twice and others never.
    """
    given = gather_objects(ctx, obj)
    return next((r for r, other in enumerate(given) if other != given[0]), None)


def default_store(ctx: DistContext) -> Any:
    """The process group's key-value store (None in a single process or if torch hides it)."""
    if not ctx.distributed:
        return None
    from torch.distributed import distributed_c10d

    getter = getattr(distributed_c10d, "_get_default_store", None)
    return getter() if getter is not None else None


class SharedCounter:
    """A count every rank adds to and rank 0 reads (the process group's key-value store), so
    one progress bar on rank 0 can summarise all ranks. A plain counter in one process."""

    def __init__(self, ctx: DistContext, key: str, timeout: float = 30.0):
        self.key, self._local, self._shared = key, 0, 0
        try:
            self._store = own_connection(ctx, timeout)
        except RuntimeError:
            self._store = None

    def add(self, n: int = 1) -> int:
        """Add ``n`` and return the total over all ranks (this rank's own without a store).

        A store that no longer answers (rank 0's node gone) leaves the last total seen:
        the bar is a courtesy, :func:`gather_when_done` reports the lost contact.
        """
        self._local += n
        if self._store is None:
            return self._local
        try:
            self._shared = int(self._store.add(self.key, n))
        except RuntimeError:  # DistStoreError, DistNetworkError
            self._store = None
        return self._shared


def own_connection(ctx: DistContext, timeout: float) -> Any:
    """A connection of our own to the process group's store whose operations give up after
    ``timeout`` seconds (the store's default is the process group's 30 minutes: a node whose
    machine vanished without closing its sockets would hold every call that long); the
    shared one, unchanged, where torch cannot clone it. None in a single process."""
    from datetime import timedelta

    store = default_store(ctx)
    clone = getattr(store, "clone", None)
    if not callable(clone):
        return store
    own = clone()
    own.set_timeout(timedelta(seconds=timeout))
    return own


BEAT_KEY = "napari_vae_anomaly/beat"  # + "/<rank>": how often that rank has beaten


class Heartbeat:
    """This rank's sign of life: a count in the store raised every ``interval`` seconds by a
    thread, until :meth:`stop`.

    Why: ranks waiting for the others at the end must tell a slow rank (still beating: wait,
    however long) from one whose process or node died (silent: give up after a while). A
    count, not a time stamp, so clocks of different machines never need to agree. The thread
    uses its own connection to the store (``clone``) where torch offers one.
    """

    def __init__(self, ctx: DistContext, interval: float = 5.0):
        try:
            self._store = own_connection(ctx, max(4 * interval, 1.0))
        except RuntimeError:  # the store cannot be reached: no beat, the others will know
            self._store = None
        self.key, self.interval = f"{BEAT_KEY}/{ctx.rank}", interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rank-heartbeat", daemon=True)

    def _run(self) -> None:
        while True:
            try:
                self._store.add(self.key, 1)
            except RuntimeError:  # store slow or gone: try again; the waiting side reports it
                pass
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> Heartbeat:
        if self._store is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


class PeerLost(AnomalyError):
    """A rank stopped answering (its process or node died) or the store is gone."""


def gather_when_done(ctx: DistContext, payload: dict, key: str, patience: float = 120.0,
                     poll: Callable[[], None] | None = None, every: float = 0.25) -> list[dict]:
    """Every rank's ``payload`` (JSON-able), in rank order, once every rank has given it.

    Waits in the store with no time limit for ranks that still beat (:class:`Heartbeat`,
    which the caller runs), and raises :class:`PeerLost` on every waiting rank once a rank
    has been silent for ``patience`` seconds. ``poll`` is called every ``every`` seconds while
    waiting (rank 0's bar). Ends with every rank having read everything, so the first to
    leave cannot take the store from one still reading it. Light on the store however many
    ranks wait: one counter read per ``every``, the others' beats only every few seconds.
    """
    if not ctx.distributed:
        return [payload]
    try:
        store = own_connection(ctx, patience)
        if store is None:
            return gather_objects(ctx, payload)
        store.set(f"{key}/result/{ctx.rank}", json.dumps(payload))
        store.add(f"{key}/results", 1)
        _wait(ctx, store, f"{key}/results", f"{key}/result", patience, poll, every)
        out = [json.loads(store.get(f"{key}/result/{r}")) for r in range(ctx.world_size)]
        store.set(f"{key}/read/{ctx.rank}", "1")
        store.add(f"{key}/reads", 1)
        _wait(ctx, store, f"{key}/reads", f"{key}/read", patience, poll, every)
    except RuntimeError:  # DistStoreError, DistNetworkError: rank 0's store is gone
        raise PeerLost("lost contact with rank 0's store (its process or node stopped); the "
                       "cases written so far are complete, run the same command again to do "
                       "the rest (existing outputs are kept)") from None
    return out


def _wait(ctx: DistContext, store: Any, count: str, mark: str, patience: float,
          poll: Callable[[], None] | None, every: float) -> None:
    """Wait until the counter ``count`` reaches the world size, while every rank that has
    not set its ``mark/<rank>`` yet keeps beating; one silent for ``patience`` s: PeerLost."""
    others = [r for r in range(ctx.world_size) if r != ctx.rank]
    seen = {r: (-1, time.monotonic()) for r in others}
    check_every, next_check = min(5.0, patience / 4), 0.0
    while int(store.add(count, 0)) < ctx.world_size:
        now = time.monotonic()
        if now >= next_check:
            next_check = now + check_every
            for r in others:
                if store.check([f"{mark}/{r}"]):
                    continue
                beats = int(store.add(f"{BEAT_KEY}/{r}", 0))
                if beats != seen[r][0]:
                    seen[r] = (beats, now)
                elif now - seen[r][1] > patience:
                    raise PeerLost(f"rank {r} has not answered for {patience:g} s (its process "
                                   "or node stopped); the cases written so far are complete, "
                                   "run the same command again to do the rest (existing "
                                   "outputs are kept)")
        if poll is not None:
            poll()
        time.sleep(every)
    if poll is not None:
        poll()
