"""Choosing the score above which a voxel is called anomalous.

Three modes, from least to most supervision:

* ``fixed``: a value the user gives.
* ``normal_fraction``: unsupervised; the score exceeded by a fraction ``f`` of *normal*
  foreground voxels (a false-positive rate on normal tissue), see
  :mod:`napari_vae_anomaly.predictors.calibration` for where normal scores come from.
* ``best_dice``: the threshold maximizing Dice pooled over *labelled validation* volumes.
  Applied to the test set itself this is the oracle ⌈Dice⌉ and must be reported as such.

Masks are ``score > threshold`` everywhere in this package.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: default unsupervised threshold: the score exceeded by this fraction of normal voxels
#: (CLI, Detect widget and study share it; chosen on the realistic benchmark, docs/results.md)
DEFAULT_NORMAL_FRACTION = 0.005


def threshold_at_fraction(normal_scores: np.ndarray, fraction: float = 0.01) -> float:
    """The score exceeded by ``fraction`` of the given normal scores (1-D or any shape)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    s = np.asarray(normal_scores, dtype=np.float64).ravel()
    s = s[np.isfinite(s)]
    if s.size == 0:
        raise ValueError("no normal scores to calibrate a threshold on")
    return float(np.quantile(s, 1.0 - fraction))


@dataclass
class DiceCurve:
    """Dice pooled over volumes for each candidate threshold; ``best`` is its argmax."""

    thresholds: np.ndarray
    dice: np.ndarray

    @property
    def best(self) -> tuple[float, float]:
        i = int(np.argmax(self.dice))
        return float(self.thresholds[i]), float(self.dice[i])


def dice_curve(
    maps: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    masks: Sequence[np.ndarray] | None = None,
    n_thresholds: int = 256,
) -> DiceCurve:
    """Pooled Dice of ``map > t`` against ``labels > 0`` for candidate thresholds t.

    Candidates sit just below lesion scores (all of them, or ``n_thresholds`` quantiles of
    them), where the optimum lies. Exact counts from sorted scores (no pass per threshold). ``masks``
    restrict the voxels considered (e.g. the brain); outside them nothing is predicted.
    """
    scores, truth = [], []
    for i, (m, lab) in enumerate(zip(maps, labels, strict=True)):
        m = np.asarray(m)
        if m.shape != np.asarray(lab).shape:
            raise ValueError(f"map {i} has shape {m.shape} but its labels {np.shape(lab)}")
        sel = np.ones(m.shape, bool) if masks is None else np.asarray(masks[i], bool)
        scores.append(m[sel].astype(np.float64))
        truth.append(np.asarray(lab)[sel] > 0)
    s = np.concatenate(scores)
    t = np.concatenate(truth)
    n_pos = int(t.sum())
    if n_pos == 0:
        raise ValueError("the validation labels hold no lesion voxel; Dice is undefined")
    all_sorted = np.sort(s)
    pos_sorted = np.sort(s[t])
    # The best ``score > t`` always sits just below some lesion score: take (up to
    # n_thresholds quantiles of) the lesion scores and, for each, the next lower score overall.
    pos_vals = np.unique(pos_sorted) if pos_sorted.size <= n_thresholds else np.unique(
        np.quantile(pos_sorted, np.linspace(0.0, 1.0, n_thresholds), method="lower"))
    below = np.searchsorted(all_sorted, pos_vals, side="left") - 1
    cand = np.unique(np.where(below >= 0, all_sorted[np.maximum(below, 0)], pos_vals - 1.0))
    pred = all_sorted.size - np.searchsorted(all_sorted, cand, side="right")
    tp = pos_sorted.size - np.searchsorted(pos_sorted, cand, side="right")
    dice = 2.0 * tp / np.maximum(pred + n_pos, 1)
    return DiceCurve(cand, dice)


def best_dice_threshold(
    maps: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    masks: Sequence[np.ndarray] | None = None,
    n_thresholds: int = 256,
) -> tuple[float, float]:
    """(threshold, Dice) maximizing pooled Dice on labelled *validation* volumes."""
    return dice_curve(maps, labels, masks, n_thresholds).best
