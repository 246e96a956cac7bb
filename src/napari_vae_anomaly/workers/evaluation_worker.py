"""The Evaluation widget's background job: every metric and the ROC/PR curves of some maps.

Plain functions over numpy arrays (no Qt, no layers): the widget copies the layers' data on
the main thread, runs :func:`evaluation_job` (one step per map, so Cancel takes effect between
maps) in a napari generator worker and draws the returned :class:`MapsEvaluation` on the main
thread. Pooled sklearn metrics over a few million voxels take a second or two, which would
otherwise freeze the viewer.
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..metrics import MetricsResult, evaluate_volume, roc_pr_curves

#: ROC/PR curves use at most this many normal voxels (all lesion voxels are kept)
CURVE_VOXELS = 400_000


@dataclass
class MapsEvaluation:
    """One metrics row per map (its name in ``predictor``) and curves for the plots."""

    result: MetricsResult
    curves: dict[str, dict[str, np.ndarray] | None] = field(default_factory=dict)
    prevalence: float = float("nan")


def _curve_sample(
    score: np.ndarray, truth: np.ndarray, fg: np.ndarray | None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Foreground voxels for curves: every lesion voxel plus a weighted normal subsample."""
    s = score[fg] if fg is not None else score.ravel()
    y = (truth[fg] if fg is not None else truth.ravel()) > 0
    n_normal = int((~y).sum())
    if n_normal <= CURVE_VOXELS:
        return s, y, None
    rate = CURVE_VOXELS / n_normal
    keep = y | (np.random.default_rng(seed).random(s.size) < rate)
    return s[keep], y[keep], np.where(y[keep], 1.0, 1.0 / rate)


def evaluate_maps(
    maps: Mapping[str, np.ndarray],
    truth: np.ndarray,
    foreground: np.ndarray | None = None,
    thresholds: Mapping[str, float | None] | None = None,
    axis: int = 0,
) -> MapsEvaluation:
    """Metrics (AUROC, AUPRC, Dice at each map's threshold, oracle Dice, slice AUROC) and curves."""
    steps = evaluation_steps(maps, truth, foreground, thresholds, axis)
    while True:
        try:
            next(steps)
        except StopIteration as end:
            return end.value


def evaluation_job(
    maps: Mapping[str, np.ndarray],
    truth: np.ndarray,
    foreground: np.ndarray | None = None,
    thresholds: Mapping[str, float | None] | None = None,
    axis: int = 0,
    *,
    stop: threading.Event,
) -> Generator[tuple[int, int], None, MapsEvaluation | None]:
    """The widget's job: yields ``(maps done, maps)``; returns None when stopped early."""
    steps = evaluation_steps(maps, truth, foreground, thresholds, axis)
    while True:
        if stop.is_set():
            steps.close()
            return None
        try:
            yield next(steps)
        except StopIteration as end:
            return end.value


def evaluation_steps(
    maps: Mapping[str, np.ndarray],
    truth: np.ndarray,
    foreground: np.ndarray | None = None,
    thresholds: Mapping[str, float | None] | None = None,
    axis: int = 0,
) -> Generator[tuple[int, int], None, MapsEvaluation]:
    """:func:`evaluate_maps` one map at a time: yields ``(maps done, maps)`` after each."""
    thresholds = thresholds or {}
    truth = np.asarray(truth)
    fg = None if foreground is None else np.asarray(foreground, dtype=bool)
    result = MetricsResult()
    curves: dict[str, Any] = {}
    for name, m in maps.items():
        m = np.asarray(m)
        if m.shape != truth.shape:
            raise ValueError(f"map {name!r} has shape {m.shape} but the ground truth {truth.shape}")
        one = evaluate_volume(m, truth, fg, thresholds.get(name), axis, case=name)
        for row in one.rows:
            row["predictor"] = name
            row.pop("case", None)
        result.extend(one)
        s, y, w = _curve_sample(m.astype(np.float32, copy=False), truth, fg)
        curves[name] = roc_pr_curves(s, y, None, w)
        yield len(curves), len(maps)
    y_all = truth[fg] > 0 if fg is not None else truth.ravel() > 0
    prevalence = float(y_all.mean()) if y_all.size else float("nan")
    return MapsEvaluation(result, curves, prevalence)
