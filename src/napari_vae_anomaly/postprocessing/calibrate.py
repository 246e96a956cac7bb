"""Fit the threshold (and ensemble weights) of anomaly maps to a user's corrected slices.

The user corrects the mask on a few slices; everything else is left as the detector made it.
The slices they touched are found by comparing the corrected Labels with a reference copy
(:func:`edited_slices`). On those slices only, :func:`calibrate` picks

* the threshold maximizing Dice (exact, over every distinct score: :func:`oracle_best_dice`
  restricted to the corrected slices, which *are* labels the user supplied, so this is a fit,
  not an oracle on test data), and
* with several maps, the weights of a weighted mean of their z-scored maps, by a grid search on
  the simplex (equal weights first, so ties keep them).

:meth:`Calibration.apply` then thresholds the whole volume. The reported Dice values are
in-sample (on the slices the fit saw): a measure of fit, not of generalization.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..metrics import dice, oracle_best_dice


def edited_slices(current: np.ndarray, reference: np.ndarray, axis: int = 0) -> np.ndarray:
    """Indices along ``axis`` of the slices where ``current`` differs from ``reference``."""
    a, b = np.asarray(current), np.asarray(reference)
    if a.shape != b.shape:
        raise ValueError(f"mask has shape {a.shape} but its reference has shape {b.shape}")
    other = tuple(i for i in range(a.ndim) if i != axis % a.ndim)
    return np.flatnonzero(((a > 0) != (b > 0)).any(axis=other))


def _slab(shape: tuple[int, ...], slices: Sequence[int], axis: int) -> np.ndarray:
    """Boolean volume that is True on the given slices along ``axis``."""
    sel = np.zeros(shape[axis], dtype=bool)
    sel[np.asarray(list(slices), dtype=int)] = True
    view = [1] * len(shape)
    view[axis] = shape[axis]
    return np.broadcast_to(sel.reshape(view), shape)


def weight_grid(n: int, step: float = 0.25) -> list[tuple[float, ...]]:
    """Weight vectors on the simplex (sum 1, multiples of ``step``), equal weights first."""
    if n < 1:
        raise ValueError("need at least one map")
    equal = tuple([1.0 / n] * n)
    if n == 1:
        return [equal]
    k = max(1, round(1.0 / step))
    grid = [equal]
    for c in itertools.product(range(k + 1), repeat=n - 1):
        if sum(c) <= k:
            w = tuple(x / k for x in (*c, k - sum(c)))
            if not np.allclose(w, equal):
                grid.append(w)
    return grid


@dataclass
class Calibration:
    """A fitted threshold and weights, with the fit on the corrected slices."""

    threshold: float
    weights: tuple[float, ...]
    stats: tuple[tuple[float, float], ...]  # (mean, std) per map for z-scoring; (0, 1) if one map
    slices: tuple[int, ...]
    axis: int = 0
    dice_before: float = math.nan  # the reference mask (or default threshold) on those slices
    dice_after: float = math.nan
    notes: list[str] = field(default_factory=list)

    def combine(self, maps: Sequence[np.ndarray]) -> np.ndarray:
        """The weighted mean of z-scored maps (a single map is returned unchanged)."""
        if len(maps) != len(self.weights):
            raise ValueError(f"calibrated for {len(self.weights)} maps, got {len(maps)}")
        return _combine(maps, self.weights, self.stats)

    def apply(self, maps: Sequence[np.ndarray], foreground: np.ndarray | None = None) -> np.ndarray:
        """uint8 mask of ``combine(maps) > threshold`` (inside ``foreground`` when given)."""
        m = self.combine(maps) > self.threshold
        if foreground is not None:
            m &= np.asarray(foreground, dtype=bool)
        return m.astype(np.uint8)

    def describe(self) -> str:
        w = ", ".join(f"{x:.2f}" for x in self.weights)
        return (
            f"threshold {self.threshold:.4g}, weights [{w}] on {len(self.slices)} corrected "
            f"slices: Dice {self.dice_before:.3f} before -> {self.dice_after:.3f} after"
        )


def _combine(
    maps: Sequence[np.ndarray], weights: Sequence[float], stats: Sequence[tuple[float, float]]
) -> np.ndarray:
    """float32 weighted sum of z-scored maps; one map passes through unchanged."""
    if len(maps) == 1:
        return np.asarray(maps[0], dtype=np.float32)
    out = np.zeros(np.shape(maps[0]), np.float32)
    for m, w, (mu, sd) in zip(maps, weights, stats, strict=True):
        if w:
            out += np.float32(w) * ((np.asarray(m, np.float32) - np.float32(mu)) / np.float32(sd))
    return out


def _zstats(m: np.ndarray, fg: np.ndarray | None) -> tuple[float, float]:
    v = np.asarray(m, np.float64)[fg] if fg is not None else np.asarray(m, np.float64).ravel()
    sd = float(v.std()) if v.size else 1.0
    return (float(v.mean()) if v.size else 0.0), (sd if sd > 0 else 1.0)


def calibrate(
    maps: Sequence[np.ndarray],
    corrected: np.ndarray,
    slices: Sequence[int],
    axis: int = 0,
    foreground: np.ndarray | None = None,
    before: np.ndarray | None = None,
    default_threshold: float | None = None,
    step: float = 0.25,
) -> Calibration:
    """Threshold (and weights, for several maps) maximizing Dice on the corrected ``slices``.

    ``before`` is the mask the user started from (Dice before = its fit); otherwise the fit of
    ``default_threshold`` on the combined map is reported as before. Raises ValueError when no
    slice is given or shapes differ.
    """
    maps = [np.asarray(m) for m in maps]
    if not maps:
        raise ValueError("no anomaly map given")
    truth = np.asarray(corrected) > 0
    for m in maps:
        if m.shape != truth.shape:
            raise ValueError(f"map has shape {m.shape} but the corrected mask has {truth.shape}")
    slices = sorted({int(s) for s in slices})
    if not slices:
        raise ValueError("no corrected slice: edit the mask on a few slices first")
    fg = None if foreground is None else np.asarray(foreground, dtype=bool)
    region = _slab(truth.shape, slices, axis)
    if fg is not None:
        region = region & fg
    stats = tuple((0.0, 1.0) for _ in maps) if len(maps) == 1 else tuple(_zstats(m, fg) for m in maps)
    y = truth[region]
    inside = [m[region] for m in maps]
    notes: list[str] = []
    best: tuple[float, float, tuple[float, ...]] | None = None
    for w in weight_grid(len(maps), step if len(maps) <= 4 else 0.5):
        s = _combine(inside, w, stats)
        if not y.any():  # the user erased everything there: mark nothing on those slices
            d, t = 1.0, float(np.max(s)) if s.size else 0.0
        else:
            d, t = oracle_best_dice(s, y)
        if best is None or d > best[0] + 1e-12:
            best = (d, t, tuple(float(x) for x in w))
    assert best is not None
    if not y.any():
        notes.append("no lesion on the corrected slices: threshold set to mark nothing there")
    cal = Calibration(best[1], best[2], stats, tuple(slices), axis, notes=notes)
    combined = cal.combine(maps)
    if before is not None:
        cal.dice_before = dice(np.asarray(before) > 0, truth, region)
    elif default_threshold is not None:
        cal.dice_before = dice(combined > default_threshold, truth, region)
    cal.dice_after = dice(combined > cal.threshold, truth, region)
    return cal
