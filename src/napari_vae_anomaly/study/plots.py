"""PNG figures of the study: a bar chart of the table and example slices.

The ROC/PR curves are drawn by the core's :mod:`~napari_vae_anomaly.metrics.plots` (the
Evaluation widget draws them too); their names are kept here for the report and older callers.
Uses matplotlib's object API with the Agg canvas (no pyplot state, no Qt).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..metrics.plots import DPI, draw_roc_pr, save_figure, save_roc_pr, thin_curve

__all__ = ["DPI", "draw_roc_pr", "lesion_slice", "save_bar_chart", "save_examples", "save_roc_pr", "thin_curve"]


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
        raw = [r.get(key) for r in rows]
        vals = [0.0 if v is None or (isinstance(v, float) and math.isnan(v)) else float(v) for v in raw]
        ax.barh(y + (j - (k - 1) / 2) * height, vals, height=height, label=name)
    ax.set_yticks(y, labels, fontsize=6)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    if title:
        ax.set_title(title, fontsize=10)
    return save_figure(fig, path)


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
    return save_figure(fig, path)
