"""A napari generator worker that can be stopped gently or aborted, and its handle.

Two ways to end a job, on purpose:

* ``Job.request_stop()`` only sets the job's ``threading.Event``. The core loop sees it at the
  next batch, finishes properly (e.g. keeps the best model) and *returns* its result.
* ``Job.abort()`` (widget or viewer closing) sets the event *and* quits the worker, which
  then stops at its next yield; napari's own cancel on window close calls ``quit`` too,
  and :class:`StoppableGeneratorWorker` makes that set the event as well.

The worker is created with napari's ``create_worker`` so napari registers it as a running
task (close confirmation, cancel on close) and shows it in the activity bar. The widgets do not
call :func:`start_job` themselves: :class:`..widgets.jobs.JobOwner` does, for all of them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from napari.qt.threading import GeneratorWorker, create_worker


class StoppableGeneratorWorker(GeneratorWorker):
    """GeneratorWorker whose ``quit`` also sets the job's stop event.

    After an abort it closes the generator in the worker thread (so the job's ``finally``
    clauses run there) and sets ``thread_done``, which the main thread may wait on without
    needing its event loop (Qt signals to the main thread would be queued behind the wait).
    """

    stop_event: threading.Event | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.thread_done = threading.Event()

    def quit(self) -> None:
        if self.stop_event is not None:
            self.stop_event.set()
        super().quit()

    def work(self) -> Any:
        try:
            return super().work()
        finally:
            if self.abort_requested:
                try:
                    self._gen.close()
                except Exception:  # noqa: BLE001 - closing must not raise into Qt
                    pass
            self.thread_done.set()


@dataclass
class Job:
    """A started worker, its stop event and whether it is still running."""

    worker: StoppableGeneratorWorker
    stop_event: threading.Event
    running: bool = True
    yielded: int = 0
    result: Any = None
    error: BaseException | None = None

    @property
    def pbar(self) -> Any:
        """The napari progress bar of the job (activity bar), or None."""
        return getattr(self.worker, "pbar", None)

    def request_stop(self) -> None:
        """Ask the core loop to stop at the next batch and return its result."""
        self.stop_event.set()

    def abort(self, wait_s: float = 10.0) -> None:
        """Stop and quit the worker, waiting up to ``wait_s`` for its thread to end."""
        self.stop_event.set()
        if self.running:
            self.worker.quit()
            self.worker.thread_done.wait(wait_s)


def start_job(
    func: Callable[..., Generator[Any, Any, Any]],
    *args: Any,
    on_yield: Callable[[Any], None] | None = None,
    on_return: Callable[[Any], None] | None = None,
    on_error: Callable[[BaseException], None] | None = None,
    on_finish: Callable[[], None] | None = None,
    description: str = "",
    **kwargs: Any,
) -> Job:
    """Run generator ``func(*args, stop=<Event>, **kwargs)`` in a thread; callbacks run in
    the main thread (Qt signals), so they may touch layers and widgets."""
    stop = threading.Event()
    worker = create_worker(
        func,
        *args,
        stop=stop,
        _worker_class=StoppableGeneratorWorker,
        _progress={"desc": description} if description else True,
        _start_thread=False,
        _ignore_errors=on_error is not None,  # handled: not re-raised into napari's console
        **kwargs,
    )
    worker.stop_event = stop
    job = Job(worker=worker, stop_event=stop)

    def _yielded(value: Any) -> None:
        job.yielded += 1
        if on_yield is not None:
            on_yield(value)

    def _returned(value: Any) -> None:
        job.result = value
        if on_return is not None:
            on_return(value)

    def _errored(exc: BaseException) -> None:
        job.error = exc
        if on_error is not None:
            on_error(exc)

    def _finished() -> None:
        job.running = False
        if on_finish is not None:
            on_finish()

    worker.yielded.connect(_yielded)
    worker.returned.connect(_returned)
    worker.errored.connect(_errored)
    worker.finished.connect(_finished)
    worker.start()
    return job
