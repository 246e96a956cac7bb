"""The one owner of a dock widget's background job: start, progress, stop, cancel, closing.

Train, Detect and Evaluate each run one job at a time (:func:`..workers._base.start_job`).
What they share lives here, so it is decided once:

* the status line: progress text while the job runs, never after it ended (napari's progress
  bar may process queued events, the job's end included, while it refreshes: an older batch
  must not overwrite the final word), "Cancelled" after a cancel, "Failed: ..." after an error;
* the activity bar (napari's progress bar of the worker), re-entrance safe;
* ``stop()`` (the core loop ends properly and returns its result, e.g. training keeps the best
  model) versus ``cancel()`` (the result is discarded and the status says "Cancelled");
* closing: the widget's ``destroyed`` signal, ``closeEvent`` and the application's
  ``aboutToQuit`` abort the job; callbacks after that do nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

from qtpy.QtCore import QObject
from qtpy.QtWidgets import QApplication, QLabel, QWidget

from ..workers._base import Job, start_job
from ._common import error_message, info, report_error

CANCELLED = "Cancelled"


class JobOwner(QObject):
    """Runs one job for ``widget`` and writes its state into ``status`` (a QLabel).

    Not a Qt child of the widget, so it outlives the widget's deletion long enough to abort
    the job from the widget's ``destroyed`` signal.
    """

    def __init__(self, widget: QWidget, status: QLabel, what: str,
                 abort_wait_s: float = 10.0) -> None:
        super().__init__()
        self.job: Job | None = None
        self.what = what  # e.g. "Detection": used in messages
        self.abort_wait_s = abort_wait_s
        self.closed = False
        self.cancelled = False
        self.stopping = False  # stop or cancel requested: progress lines no longer shown
        self._status = status
        self._in_bar = False
        widget.destroyed.connect(lambda *_: self.close())
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.close)

    # ------------------------------------------------------------------ state
    @property
    def running(self) -> bool:
        return self.job is not None and self.job.running

    def set_status(self, text: str) -> None:
        """Write the status line (nothing once the widget is gone)."""
        if self.closed:
            return
        try:
            self._status.setText(text)
        except RuntimeError:  # the label was deleted with its widget
            self.closed = True

    # ------------------------------------------------------------------ start
    def start(
        self,
        func: Callable[..., Generator[Any, Any, Any]],
        *args: Any,
        on_progress: Callable[[Any], str | None] | None = None,
        on_done: Callable[[Any], None] | None = None,
        on_finish: Callable[[], None] | None = None,
        description: str = "",
        **kwargs: Any,
    ) -> Job:
        """Start ``func`` (see :func:`start_job`). ``on_progress`` returns the status text of
        a progress item; ``on_done`` gets the result unless the job was cancelled; errors
        become one notification; ``on_finish`` runs last, every time (buttons)."""
        self.cancelled = self.stopping = False
        self.job = start_job(
            func, *args,
            on_yield=self._guarded(lambda p: self._progress(p, on_progress)),
            on_return=self._guarded(lambda r: self._done(r, on_done)),
            on_error=self._guarded(self._error),
            on_finish=lambda: self._finish(on_finish),
            description=description,
            **kwargs,
        )
        return self.job

    def _guarded(self, func: Callable[[Any], None]) -> Callable[[Any], None]:
        def call(value: Any) -> None:
            if self.closed:
                return
            try:
                func(value)
            except RuntimeError as exc:  # a widget deleted while the signal was queued
                if "deleted" not in str(exc):
                    raise
        return call

    def _progress(self, item: Any, on_progress: Callable[[Any], str | None] | None) -> None:
        text = on_progress(item) if on_progress is not None else None
        # after the job's end (handled re-entrantly), a stop or a cancel, progress has no say
        if text and self.running and not self.stopping:
            self.set_status(text)

    def _done(self, result: Any, on_done: Callable[[Any], None] | None) -> None:
        if self.cancelled:
            info(f"{self.what} cancelled")
            self.set_status(CANCELLED)
        elif on_done is not None:
            on_done(result)

    def _error(self, exc: BaseException) -> None:
        report_error(exc, f"{self.what} failed")
        self.set_status(f"Failed: {error_message(exc)}")

    def _finish(self, on_finish: Callable[[], None] | None) -> None:
        if self.cancelled and self.job is not None and self.job.error is None:
            self.set_status(CANCELLED)
        if on_finish is not None and not self.closed:
            try:
                on_finish()
            except RuntimeError as exc:
                if "deleted" not in str(exc):
                    raise

    # ------------------------------------------------------------------ progress bar
    def advance(self, done: int, total: int | None, description: str = "") -> None:
        """Move the job's activity bar to ``done`` of ``total`` (never re-entered)."""
        pbar = self.job.pbar if self.job is not None else None
        if pbar is None or self._in_bar:
            return
        self._in_bar = True
        try:
            if total and pbar.total != int(total):
                pbar.total = int(total)
            if description and pbar.desc != description:
                pbar.set_description(description)
            n = min(int(done), int(total)) if total else int(done)
            if n != pbar.n:
                pbar.n = n
                pbar.update(0)  # emits the value event the activity bar listens to
        finally:
            self._in_bar = False

    # ------------------------------------------------------------------ ending
    def stop(self, note: str = "Stopping after this batch...") -> bool:
        """Ask the core loop to end at the next batch and return its result (kept)."""
        if not self.running:
            return False
        self.job.request_stop()
        self.stopping = True
        self.set_status(note)
        return True

    def cancel(self, note: str = "Cancelling at the next batch...") -> bool:
        """End at the next batch and discard the result; the status then says "Cancelled"."""
        if not self.stop(note):
            return False
        self.cancelled = True
        return True

    def close(self) -> None:
        """The widget or the viewer is closing: abort the job, ignore its late signals."""
        self.closed = True
        job = self.job
        if job is not None and job.running:
            job.abort(wait_s=self.abort_wait_s)
