"""``predict`` over a cohort: reading ahead and writing behind the model, and ranks.

Why: case after case, reading + preprocessing, the model and writing never overlapped, so a
cohort took the sum of all three. Here a reading thread loads and preprocesses the next cases
and a writing thread stages each map as soon as it is made and commits a case once its mask
is made, while the model goes on. Memory is bounded: at most ``PREFETCH`` read cases wait
(their slices and foreground, not their voxels: :func:`..predictors.pipeline.without_voxels`),
and with ``MAP_WRITTEN_FIRST`` the model makes a case's next map only once the writer has
written the last one, so a case holds one full-size map at a time, never all its maps (the
mask and the commit of a case still overlap with the next case). Under ``torchrun`` every
rank takes its own share of the cases (:func:`..distributed.shard`), rank 0 shows one bar over
all ranks and prints the one summary, and every rank exits with the same status.

A case that fails (reading, computing or writing) is reported on one line and skipped, as
before; a Ctrl-C (or any non-``Exception``) stops the cohort and is raised again once both
threads have ended, so no case is left half-written.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import AnomalyError

PREFETCH = 2  # cases read and preprocessed, waiting for the model (volumes: small)
WRITE_BEHIND = 1  # messages waiting for the writer (a map waits only with MAP_WRITTEN_FIRST off)
MAP_WRITTEN_FIRST = True  # the next map is made once the writer has written the last one
MMAP_THRESHOLD = 1 << 20  # arrays from this size are mapped and unmapped (see below)
_END = object()


@dataclass
class Tally:
    """What happened to this rank's cases, and where the time went."""

    done: int = 0
    kept: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    model_seconds: float = 0.0  # in detect(): the model, ensembles, threshold, mask
    wall_seconds: float = 0.0


@dataclass
class Loaded:
    """A case read and preprocessed, ready for the model."""

    src: str
    case: str
    volume: Any = None
    prepared: Any = None
    paths: Any = None
    kept: str = ""  # why nothing is computed (outputs exist)
    error: str = ""


def failure_text(src: Any, exc: BaseException) -> str:
    """The one line a failed case gets (no traceback; the class only for the unexpected)."""
    if isinstance(exc, AnomalyError):
        return f"predict: {src}: {exc}"
    return f"predict: {src}: {type(exc).__name__}: {exc}"


class Background:
    """One thread feeding or draining a bounded queue; remembers a fatal exception."""

    def __init__(self, name: str, target: Callable[[Background], None], size: int):
        self.queue: queue.Queue = queue.Queue(maxsize=size)
        self.stop = threading.Event()
        self.fatal: BaseException | None = None
        self._target = target
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        try:
            self._target(self)
        except BaseException as exc:  # noqa: BLE001 - raised again in the main thread
            self.fatal = exc
            self.stop.set()

    def put(self, item: Any) -> bool:
        """Queue ``item``, waiting while the queue is full; False once stopped."""
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def wait_done(self) -> None:
        """Wait until the thread has finished with everything put (it calls ``task_done``
        for each item), or stops."""
        with self.queue.all_tasks_done:
            while self.queue.unfinished_tasks and not self.stop.is_set():
                self.queue.all_tasks_done.wait(0.1)

    def get(self) -> Any:
        """The next item, or ``_END`` once stopped."""
        while not self.stop.is_set():
            try:
                return self.queue.get(timeout=0.1)
            except queue.Empty:
                continue
        return _END


def read_ahead(job: Any, work: Iterable[tuple[str, str]], emit: Callable[[str], None]
               ) -> Callable[[Background], None]:
    """The reading thread's loop: each case loaded and preprocessed, or why not."""
    from ..predictors.pipeline import prepare_volume, without_voxels
    from .predict_case import load_case

    def loop(bg: Background) -> None:
        for src, case in work:
            item = Loaded(src, case)
            try:
                item.volume, item.paths, item.kept = load_case(job, src, case, emit)
                if not item.kept:
                    item.prepared = prepare_volume(item.volume, job.models)
                    item.volume = without_voxels(item.volume)  # the model needs the slices
            except Exception as exc:  # noqa: BLE001 - reported as this case's failure
                item.error = failure_text(src, exc)
            if not bg.put(item):
                return
        bg.put(_END)

    return loop


def write_behind(job: Any, tally: Tally, lock: threading.Lock, emit: Callable[[str], None]
                 ) -> Callable[[Background], None]:
    """The writing thread's loop. Messages: ``("map", case, key, array)`` stages one map as
    soon as it is made (:class:`.predict_case.CaseWriter`), ``("done", case, result)``
    stages the mask and commits the case, ``("drop", case)`` discards a case whose
    computation failed. A case whose staging failed is reported once, when it is done."""
    from .predict_case import CaseWriter

    def loop(bg: Background) -> None:
        writer: CaseWriter | None = None
        error = ""
        try:
            while (msg := bg.get()) is not _END:
                kind, loaded = msg[0], msg[1]
                if writer is None:
                    writer, error = CaseWriter(job, loaded.paths, loaded.volume), ""
                try:
                    if kind == "map" and not error:
                        writer.add(msg[2], msg[3])
                    elif kind == "done" and not error:
                        writer.finish(msg[2])
                except Exception as exc:  # noqa: BLE001 - reported as this case's failure
                    error = failure_text(loaded.src, exc)
                msg = None  # written: its maps are not held while the next ones are made
                bg.queue.task_done()
                if kind == "map":
                    continue
                writer.discard()  # what was committed is no longer there to discard
                writer = None
                if kind == "done":
                    count_written(tally, lock, emit, loaded.src, error)
        finally:
            if writer is not None:
                writer.discard()  # interrupted mid-case: nothing of it is left

    return loop


def count_written(tally: Tally, lock: threading.Lock, emit: Callable[[str], None], src: str,
                  error: str) -> None:
    """Count a case the writing thread finished (written, or failed with ``error``)."""
    if error:
        emit(error)
    with lock:
        if error:
            tally.failed.append(str(src))
        else:
            tally.done += 1


def return_freed_arrays() -> None:
    """Have glibc map every array of ``MMAP_THRESHOLD`` bytes or more on its own, so that
    freeing it gives the memory back to the system.

    Why: by default glibc raises its threshold after the first large block is freed; from
    then on volume-sized arrays (one per map, made and freed in turn) come from the heap,
    whose freed parts the process keeps, so the resident set grew with every map of a case
    although only a few were alive at a time. A no-op where there is no glibc.
    """
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, MMAP_THRESHOLD)  # -3: M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


FINISHED_KEY = "napari_vae_anomaly/predict/finished"  # cases finished over all ranks


def progress_bar(job: Any, ctx: Any, total: int) -> Any:
    """The one bar of a run: on rank 0 only, counting the cases of every rank."""
    from tqdm import tqdm

    return tqdm(total=total, desc="predict", unit="case", file=sys.stderr,
                disable=job.args.no_progress or not ctx.is_main)


def run_cohort(job: Any, work: list[tuple[str, str]], ctx: Any = None,
               total: int | None = None, bar: Any = None) -> Tally:
    """Predict this rank's ``work`` ((input, case) pairs) with reading and writing overlapped.

    ``ctx``: the distributed context (None: one process); ``total``: cases over all ranks,
    for rank 0's bar. ``bar``: a :func:`progress_bar` the caller closes (it goes on counting
    the other ranks' cases once this rank is done); None: one made and closed here.
    Returns this rank's tally.
    """
    from tqdm import tqdm

    from ..distributed import DistContext, SharedCounter

    ctx = ctx or DistContext()
    return_freed_arrays()
    tally, lock = Tally(), threading.Lock()
    own_bar = bar is None
    bar = progress_bar(job, ctx, total or len(work)) if own_bar else bar

    def emit(line: str) -> None:
        tqdm.write(line, file=sys.stderr)

    counter = SharedCounter(ctx, FINISHED_KEY)
    reader = Background("predict-read", read_ahead(job, work, emit), PREFETCH)
    writer = Background("predict-write", write_behind(job, tally, lock, emit), WRITE_BEHIND)
    t0 = time.perf_counter()
    reader.thread.start()
    writer.thread.start()
    finished = False
    try:
        while (item := reader.get()) is not _END and writer.fatal is None:
            compute(job, item, tally, lock, writer, bar, emit)
            bar.n = counter.add(1)
            bar.refresh()
        writer.put(_END)
        finished = True
    finally:
        reader.stop.set()
        if not finished:
            writer.stop.set()
        writer.thread.join()
        reader.thread.join()
        if own_bar:
            bar.close()
    for bg in (writer, reader):
        if bg.fatal is not None:
            raise bg.fatal
    tally.wall_seconds = time.perf_counter() - t0
    return tally


def compute(job: Any, item: Loaded, tally: Tally, lock: threading.Lock, writer: Background,
            bar: Any, emit: Callable[[str], None]) -> None:
    """The model's part of one case (main thread); the result goes to the writing thread."""
    from ..detection import detect

    if item.error or item.kept:
        emit(item.error or f"predict: {item.src}: {item.kept}")
        with lock:
            (tally.failed if item.error else tally.kept).append(str(item.src))
        return
    t = time.perf_counter()

    def put(key: str, data: Any) -> None:  # each map to the writer as soon as it is made
        writer.put(("map", item, key, data))
        if MAP_WRITTEN_FIRST:  # the writer's map and the next one are never both held
            writer.wait_done()

    try:
        result = detect(item.volume, job.models, job.settings, job.thresholds,
                        prepared=item.prepared, put=put)
    except Exception as exc:  # noqa: BLE001 - keep the cohort going
        writer.put(("drop", item))
        emit(failure_text(item.src, exc))
        with lock:
            tally.failed.append(str(item.src))
        return
    finally:
        item.prepared = None  # the slices are no longer needed
    with lock:
        tally.model_seconds += time.perf_counter() - t
    writer.put(("done", item, result))
    bar.set_postfix_str(f"{item.case}: {int(result.mask.sum())} voxels flagged")


def summary_line(tallies: list[Tally], n: int, out_dir: Any) -> tuple[str, int]:
    """The one summary of every rank's tally, and the exit status all ranks share."""
    failed = [s for t in tallies for s in t.failed]
    kept = sum(len(t.kept) for t in tallies)
    done = sum(t.done for t in tallies)
    line = (f"predict: {done} of {n} case(s) done, written to {out_dir}"
            + (f"; {kept} kept (outputs exist)" if kept else "")
            + (f"; failed: {', '.join(failed)}" if failed else ""))
    return line, 1 if failed else 0
