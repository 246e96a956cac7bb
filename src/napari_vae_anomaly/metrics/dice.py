"""Dice overlap at a threshold, and the oracle best Dice over all thresholds.

Convention: a voxel is predicted anomalous when ``score > threshold`` (so a threshold of 0
leaves a masked-out background of zeros unmarked). Dice is undefined (NaN) when both the
prediction and the truth are empty inside the mask.

The best Dice over thresholds chosen *on the test labels themselves* is an upper bound no
real method can claim, so it is always called "oracle" (``oracle_dice``,
``oracle_threshold``). It is computed exactly in one sort: after sorting scores from high to
low, each threshold between two distinct values predicts a prefix, whose true positives are a
cumulative sum.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .voxel import masked_voxels


def dice(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Dice of a binary prediction (nonzero) and truth (> 0) inside ``mask``; NaN if both empty."""
    p, t = masked_voxels(np.asarray(pred) != 0, truth, mask)
    p = p > 0
    denom = int(p.sum()) + int(t.sum())
    if denom == 0:
        return math.nan
    return 2.0 * int((p & t).sum()) / denom


class DiceCounts(NamedTuple):
    """Counts behind a Dice value; sums over volumes give the pooled (data-set) Dice."""

    tp: int
    n_pred: int
    n_true: int

    @property
    def dice(self) -> float:
        denom = self.n_pred + self.n_true
        return math.nan if denom == 0 else 2.0 * self.tp / denom

    def __add__(self, other: object) -> DiceCounts:
        if not isinstance(other, DiceCounts):
            return NotImplemented
        return DiceCounts(
            self.tp + other.tp, self.n_pred + other.n_pred, self.n_true + other.n_true
        )


def dice_counts(
    scores: np.ndarray, truth: np.ndarray, threshold: float, mask: np.ndarray | None = None
) -> DiceCounts:
    """True positives, predicted and true voxel counts for ``scores > threshold``."""
    s, t = masked_voxels(scores, truth, mask)
    p = s > threshold
    return DiceCounts(int((p & t).sum()), int(p.sum()), int(t.sum()))


def dice_at_threshold(
    scores: np.ndarray, truth: np.ndarray, threshold: float, mask: np.ndarray | None = None
) -> float:
    """Dice of ``scores > threshold`` against ``truth > 0`` inside ``mask``."""
    return dice_counts(scores, truth, threshold, mask).dice


class OracleDice(NamedTuple):
    """Best Dice over all thresholds and the threshold reaching it (``score > threshold``)."""

    dice: float
    threshold: float


def _between(hi: float, lo: float | None, dtype: np.dtype) -> float:
    """A threshold t with lo <= t < hi that survives a cast to the scores' dtype."""
    if lo is None:
        t = np.nextafter(np.asarray(hi, dtype=dtype), -np.inf)
        return float(t)
    t = np.asarray((hi + lo) / 2.0).astype(dtype)
    return float(t) if lo <= float(t) < hi else lo


def oracle_best_dice(
    scores: np.ndarray,
    truth: np.ndarray,
    mask: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> OracleDice:
    """The oracle (best over all thresholds) Dice of ``scores`` against ``truth > 0`` in ``mask``.

    Returns ``(dice, threshold)``; ``scores > threshold`` reproduces the best Dice (and so does
    ``>=``, the threshold lying strictly between two score values where the dtype allows).
    ``weights`` (per voxel, for a subsampled pool) weight the counts. NaN for both when there
    is no lesion voxel inside the mask. Ties go to the highest threshold (smallest mask).
    """
    dtype = np.asarray(scores).dtype
    dtype = dtype if np.issubdtype(dtype, np.floating) else np.dtype(np.float64)
    s, y = masked_voxels(scores, truth, mask)
    w = np.ones(s.size) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if w.size != s.size:
        raise ValueError(f"{w.size} weights for {s.size} voxels")
    n_true = float(w[y].sum())
    if n_true == 0:
        return OracleDice(math.nan, math.nan)
    order = np.argsort(-s, kind="stable")
    s, y, w = s[order], y[order], w[order]
    tp = np.cumsum(np.where(y, w, 0.0))
    n_pred = np.cumsum(w)
    # a threshold can only fall between distinct values: keep each run of ties' last index
    ends = np.flatnonzero(np.append(s[1:] != s[:-1], True))
    d = 2.0 * tp[ends] / (n_pred[ends] + n_true)
    best = int(np.argmax(d))
    i = int(ends[best])
    lo = float(s[i + 1]) if i + 1 < s.size else None
    return OracleDice(float(d[best]), _between(float(s[i]), lo, dtype))
