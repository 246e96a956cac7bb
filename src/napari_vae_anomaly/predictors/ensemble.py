"""Ensembles of maps: of several predictors and/or of several models (e.g. different beta).

Maps of different predictors or models live on different scales, so each is first normalized
*per volume* over the foreground, then the normalized maps are averaged:

* ``"zscore"``: (m - mean) / std of the foreground voxels of that volume;
* ``"rank"``: the fraction of foreground voxels of that volume scoring lower (0..1), robust
  to heavy tails;
* ``"reference"``: (m - mean) / std with the mean and std of that map on *normal* volumes
  (stored in the checkpoint, :mod:`.normal_reference`), so the lesions of the test volume
  cannot shift the scale; the default wherever the models carry a reference.

Voxels outside the foreground are 0 in every output. Because the normalization uses the
volume's own statistics, a threshold for an ensemble must be calibrated on reference maps
normalized the same way (see :mod:`.calibration`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

NORMALIZATIONS: tuple[str, ...] = ("reference", "zscore", "rank")


_CHUNK = 1 << 20  # values converted to float64 at a time


def zscore_moments(values: np.ndarray) -> tuple[float, float]:
    """Mean and (population) standard deviation of a 1-D array, in float64.

    Computed a chunk at a time, two passes, so a float32 map's foreground never needs a
    float64 copy (numpy's ``std`` makes two: the converted values and their deviations)."""
    v = np.asarray(values).ravel()
    if v.size == 0:
        return 0.0, 0.0
    parts = range(0, v.size, _CHUNK)
    mean = math.fsum(float(v[i : i + _CHUNK].sum(dtype=np.float64)) for i in parts) / v.size
    squares = 0.0
    for i in parts:
        d = v[i : i + _CHUNK].astype(np.float64)
        d -= mean
        squares += float(np.dot(d, d))
    return mean, math.sqrt(squares / v.size)


def _zscore_in_place(v: np.ndarray) -> np.ndarray:
    """``(v - mean) / sd`` over the array itself (float64 arithmetic, chunk by chunk)."""
    mean, sd = zscore_moments(v)
    sd = sd if sd > 0 else 1.0
    for i in range(0, v.size, _CHUNK):
        part = v[i : i + _CHUNK]
        part[...] = (part.astype(np.float64) - mean) / sd
    return v


def normalize_values(values: np.ndarray, method: str = "zscore") -> np.ndarray:
    """Normalize a 1-D array of foreground scores as one volume (float64)."""
    v = np.array(values, dtype=np.float64)  # a copy: normalized in place below
    if method == "zscore":
        return _zscore_in_place(v)
    if method == "rank":
        return (stats.rankdata(v, method="average") - 0.5) / max(v.size, 1)
    raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {method!r}")


def normalized_foreground(score: np.ndarray, foreground: np.ndarray, method: str = "zscore",
                          stats: tuple[float, float] | None = None) -> np.ndarray:
    """The foreground voxels of a map, normalized as one volume (float32, 1-D in the order of
    ``score[foreground]``): what :func:`normalize_map` puts inside the foreground."""
    fg = np.asarray(foreground, dtype=bool)
    if method == "reference":
        if stats is None:
            raise ValueError("reference normalization needs the normal (mean, std) of the map")
        mu, sd = stats
        return ((np.asarray(score)[fg] - mu) / (sd if sd > 0 else 1.0)).astype(np.float32)
    if not fg.any():
        return np.zeros(0, np.float32)
    values = np.asarray(score)[fg]  # a copy
    if method == "zscore" and values.dtype == np.float32:  # in place, the same values as
        return _zscore_in_place(values)  # normalize_values gives, rounded to float32
    return normalize_values(values, method).astype(np.float32)


def normalize_map(score: np.ndarray, foreground: np.ndarray, method: str = "zscore",
                  stats: tuple[float, float] | None = None) -> np.ndarray:
    """A map normalized over its volume's foreground; float32, 0 outside. ``"reference"``
    needs ``stats`` = (normal mean, normal std)."""
    fg = np.asarray(foreground, dtype=bool)
    out = np.zeros(score.shape, np.float32)
    out[fg] = normalized_foreground(score, fg, method, stats)
    return out


class EnsembleSum:
    """The mean of normalized maps, added one map at a time.

    Why: holding every member until the end cost one volume per member. The sum is kept in
    float64 over the foreground voxels only (the same sums, in the same order, as a full
    float64 volume: the values are identical), so a member can be released once added.
    """

    def __init__(self, foreground: np.ndarray, method: str = "zscore"):
        self.foreground = np.asarray(foreground, dtype=bool)
        self.method = method
        self.sum: np.ndarray | None = np.zeros(int(self.foreground.sum()), np.float64)
        self.count = 0

    def add(self, score: np.ndarray, stats: tuple[float, float] | None = None) -> None:
        if self.sum is None:
            raise ValueError("the ensemble's mean was taken: nothing can be added")
        self.sum += normalized_foreground(score, self.foreground, self.method, stats)
        self.count += 1

    def take_mean(self) -> np.ndarray:
        """The ensemble map (float32, 0 outside the foreground), with the sum divided in place
        and released: no float64 copy of it beside the map, and the sum gone before the map is
        handed on. Nothing can be added after."""
        if not self.count or self.sum is None:
            raise ValueError("an ensemble needs at least one map, and its sum")
        total, self.sum = self.sum, None
        total /= self.count
        out = np.zeros(self.foreground.shape, np.float32)
        out[self.foreground] = total
        return out


def ensemble_maps(
    maps: Sequence[np.ndarray], foreground: np.ndarray, method: str = "zscore",
    stats: Sequence[tuple[float, float] | None] | None = None,
) -> np.ndarray:
    """Mean of the normalized maps (float32, 0 outside the foreground); ``stats`` gives each
    member's normal (mean, std) for ``method="reference"``."""
    if not maps:
        raise ValueError("an ensemble needs at least one map")
    acc = EnsembleSum(foreground, method)
    for i, m in enumerate(maps):
        acc.add(m, None if stats is None else stats[i])
    return acc.take_mean()


def ensemble_values(values: Sequence[np.ndarray], method: str = "zscore") -> np.ndarray:
    """The same combination for 1-D foreground score vectors (used for calibration)."""
    return np.mean([normalize_values(v, method) for v in values], axis=0)
