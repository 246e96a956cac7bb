"""ROC and precision-recall curves drawn with matplotlib (no pyplot state, no Qt).

The study's report saves them as PNG (:func:`save_roc_pr`); the Evaluation widget draws them
on its own canvas (:func:`draw_roc_pr`). The Agg canvas runs headless and inside a GUI thread
alike. Curves are thinned to a few hundred points and figures saved at low dpi, so every PNG
stays well under 200 KB.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 80


def thin_curve(x: np.ndarray, y: np.ndarray, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """At most ``n`` points of a curve, first and last kept (enough for a plot)."""
    x, y = np.asarray(x), np.asarray(y)
    if x.size <= n:
        return x, y
    idx = np.unique(np.linspace(0, x.size - 1, n).round().astype(int))
    return x[idx], y[idx]


def draw_roc_pr(
    ax_roc: Any,
    ax_pr: Any,
    curves: Mapping[str, Mapping[str, np.ndarray] | None],
    prevalence: float | None = None,
) -> None:
    """ROC (fpr/tpr) and PR (recall/precision) curves of several maps on two axes."""
    ax_roc.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--")
    if prevalence is not None and math.isfinite(prevalence):
        ax_pr.axhline(prevalence, color="0.7", lw=0.8, ls="--")
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if len(curves) <= 10 else "tab20"]
    for i, (label, c) in enumerate(curves.items()):
        if c is None:
            continue
        style = {"lw": 1.2, "color": cmap(i % cmap.N), "ls": "--" if "baseline" in label else "-"}
        ax_roc.plot(*thin_curve(c["fpr"], c["tpr"]), label=label, **style)
        ax_pr.plot(*thin_curve(c["recall"], c["precision"]), **style)
    ax_roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    ax_pr.set(xlabel="recall", ylabel="precision", title="precision-recall")
    for ax in (ax_roc, ax_pr):
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.grid(alpha=0.3)
    ax_roc.legend(fontsize=6, loc="lower right")


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Render ``fig`` on an Agg canvas into a PNG at :data:`DPI`."""
    path = Path(path)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=DPI)
    return path


def save_roc_pr(
    curves: Mapping[str, Mapping[str, np.ndarray] | None],
    path: str | Path,
    title: str = "",
    prevalence: float | None = None,
) -> Path:
    """One PNG with the ROC and PR panels side by side."""
    fig = Figure(figsize=(10, 4.6), layout="constrained")
    ax_roc, ax_pr = fig.subplots(1, 2)
    draw_roc_pr(ax_roc, ax_pr, curves, prevalence)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)
