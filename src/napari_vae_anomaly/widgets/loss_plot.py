"""Live loss curves for the training widget (matplotlib on a Qt canvas).

Points arrive every batch from the worker; the canvas redraws at most every
``min_interval`` seconds (a QTimer flushes the last points), so plotting never slows
training or the UI down.
"""

from __future__ import annotations

import time

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtCore import QTimer

SERIES = (
    # key, axis, label, style
    ("train_loss", 0, "train", "-"),
    ("val_loss", 0, "validation", "o-"),
    ("train_rec", 1, "train rec.", "-"),
    ("train_kl", 1, "train KL", "-"),
    ("val_rec", 1, "val. rec.", "o--"),
    ("val_kl", 1, "val. KL", "o--"),
)


class LossPlot(FigureCanvasQTAgg):
    """Train / validation loss (top) and their reconstruction and KL parts (bottom)."""

    def __init__(self, min_interval: float = 0.2, parent=None) -> None:
        self.figure = Figure(figsize=(4.0, 3.2), tight_layout=True)
        super().__init__(self.figure)
        if parent is not None:
            self.setParent(parent)
        self.min_interval = float(min_interval)
        ax_loss = self.figure.add_subplot(2, 1, 1)
        ax_parts = self.figure.add_subplot(2, 1, 2, sharex=ax_loss)
        ax_loss.set_ylabel("loss / slice")
        ax_parts.set_ylabel("parts")
        ax_parts.set_xlabel("batch")
        self._axes = (ax_loss, ax_parts)
        self._x: dict[str, list[float]] = {k: [] for k, *_ in SERIES}
        self._y: dict[str, list[float]] = {k: [] for k, *_ in SERIES}
        self._lines = {}
        for key, ax, label, style in SERIES:
            (line,) = self._axes[ax].plot([], [], style, label=label, markersize=3, lw=1)
            self._lines[key] = line
        for ax in self._axes:
            ax.legend(fontsize="x-small", loc="upper right")
            ax.tick_params(labelsize="x-small")
        self._dirty = False
        self._last_draw = 0.0
        self.draw_count = 0
        self._timer = QTimer(self)
        self._timer.setInterval(int(self.min_interval * 1000))
        self._timer.timeout.connect(self._flush)
        self.setMinimumHeight(220)

    # ----------------------------------------------------------------- data
    def clear(self) -> None:
        for key in self._x:
            self._x[key].clear()
            self._y[key].clear()
        self._dirty = True
        self.redraw()

    def add_point(self, key: str, x: float, y: float | None) -> None:
        """Append one value to series ``key`` (ignored when ``y`` is None or not finite)."""
        if y is None or y != y or key not in self._x:
            return
        self._x[key].append(float(x))
        self._y[key].append(float(y))
        self._dirty = True
        self._maybe_redraw()

    def points(self, key: str) -> int:
        """Number of points in series ``key``."""
        return len(self._x[key])

    def series(self, key: str) -> tuple[list[float], list[float]]:
        return list(self._x[key]), list(self._y[key])

    # ----------------------------------------------------------------- drawing
    def _maybe_redraw(self) -> None:
        if time.monotonic() - self._last_draw >= self.min_interval:
            self.redraw()
        elif not self._timer.isActive():
            self._timer.start()

    def _flush(self) -> None:
        self._timer.stop()
        if self._dirty:
            self.redraw()

    def redraw(self) -> None:
        """Push the data into the lines and repaint (cheap: draw_idle)."""
        for key, line in self._lines.items():
            line.set_data(self._x[key], self._y[key])
        for ax in self._axes:
            ax.relim()
            ax.autoscale_view()
        self.draw_idle()
        self._dirty = False
        self._last_draw = time.monotonic()
        self.draw_count += 1
