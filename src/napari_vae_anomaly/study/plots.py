"""PNG figures of the study: ROC/PR curves, a bar chart of the table, example slices.

Uses matplotlib's object API with the Agg canvas (no pyplot state, no Qt), so it runs headless
and inside a GUI thread alike; :func:`draw_roc_pr` also draws onto the Evaluation widget's Qt
canvas. Curves are thinned to a few hundred points and figures saved at low dpi so every PNG
stays well under 200 KB.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
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


def _save(fig: Figure, path: str | Path) -> Path:
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
    return _save(fig, path)


def save_bar_chart(
    rows: Sequence[Mapping[str, Any]],
    path: str | Path,
    metrics: Sequence[tuple[str, str]] = (("auprc", "AUPRC"), ("oracle_dice", "oracle Dice")),
    label_key: str = "label",
    title: str = "",
) -> Path:
    """Horizontal grouped bars, one group per row of the table (NaN drawn as 0)."""
    labels = [str(r[label_key]) for r in rows]
    n, k = len(rows), len(metrics)
    fig = Figure(figsize=(7, max(2.5, 0.22 * n * max(k, 1) / 1.6 + 1.2)), layout="constrained")
    ax = fig.subplots()
    height = 0.8 / max(k, 1)
    y = np.arange(n)
    for j, (key, name) in enumerate(metrics):
        vals = [r.get(key) for r in rows]
        vals = [0.0 if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in vals]
        ax.barh(y + (j - (k - 1) / 2) * height, vals, height=height, label=name)
    ax.set_yticks(y, labels, fontsize=6)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path)


def lesion_slice(truth: np.ndarray, axis: int = 0) -> int:
    """The slice along ``axis`` holding the most lesion voxels (the middle one if none)."""
    t = np.asarray(truth) > 0
    other = tuple(a for a in range(t.ndim) if a != axis)
    counts = t.sum(axis=other)
    return int(np.argmax(counts)) if counts.any() else t.shape[axis] // 2


def save_examples(
    image: np.ndarray,
    truth: np.ndarray,
    maps: Mapping[str, np.ndarray],
    path: str | Path,
    index: int | None = None,
    axis: int = 0,
    title: str = "",
) -> Path:
    """The scan and each map on one slice, the ground truth outlined in every panel."""
    index = lesion_slice(truth, axis) if index is None else index
    take = lambda a: np.take(np.asarray(a), index, axis=axis)  # noqa: E731
    panels = [("image", take(image), "gray"), *((n, take(m), "inferno") for n, m in maps.items())]
    cols = min(5, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(2.1 * cols, 2.3 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, cols)).ravel()
    t = take(truth) > 0
    for ax, (name, data, cmap) in zip(axes, panels, strict=False):
        finite = data[np.isfinite(data)]
        lo, hi = (np.percentile(finite, [1, 99.5]) if finite.size else (0, 1))
        ax.imshow(data, cmap=cmap, vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")
        if t.any():
            ax.contour(t.astype(float), levels=[0.5], colors="cyan", linewidths=0.7)
        ax.set_title(name, fontsize=7)
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(title or f"slice {index} (ground truth in cyan)", fontsize=8)
    return _save(fig, path)
