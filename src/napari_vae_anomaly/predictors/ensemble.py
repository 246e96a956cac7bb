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

from collections.abc import Sequence

import numpy as np
from scipy import stats

NORMALIZATIONS: tuple[str, ...] = ("reference", "zscore", "rank")


def normalize_values(values: np.ndarray, method: str = "zscore") -> np.ndarray:
    """Normalize a 1-D array of foreground scores as one volume (float64)."""
    v = np.asarray(values, dtype=np.float64)
    if method == "zscore":
        sd = v.std()
        return (v - v.mean()) / (sd if sd > 0 else 1.0)
    if method == "rank":
        return (stats.rankdata(v, method="average") - 0.5) / max(v.size, 1)
    raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {method!r}")


def normalize_map(score: np.ndarray, foreground: np.ndarray, method: str = "zscore",
                  stats: tuple[float, float] | None = None) -> np.ndarray:
    """A map normalized over its volume's foreground; float32, 0 outside. ``"reference"``
    needs ``stats`` = (normal mean, normal std)."""
    fg = np.asarray(foreground, dtype=bool)
    out = np.zeros(score.shape, np.float32)
    if method == "reference":
        if stats is None:
            raise ValueError("reference normalization needs the normal (mean, std) of the map")
        mu, sd = stats
        out[fg] = (np.asarray(score)[fg] - mu) / (sd if sd > 0 else 1.0)
    elif fg.any():
        out[fg] = normalize_values(np.asarray(score)[fg], method)
    return out


def ensemble_maps(
    maps: Sequence[np.ndarray], foreground: np.ndarray, method: str = "zscore",
    stats: Sequence[tuple[float, float] | None] | None = None,
) -> np.ndarray:
    """Mean of the normalized maps (float32, 0 outside the foreground); ``stats`` gives each
    member's normal (mean, std) for ``method="reference"``."""
    if not maps:
        raise ValueError("an ensemble needs at least one map")
    acc = np.zeros(np.shape(maps[0]), np.float64)
    for i, m in enumerate(maps):
        acc += normalize_map(m, foreground, method, None if stats is None else stats[i])
    return (acc / len(maps)).astype(np.float32)


def ensemble_values(values: Sequence[np.ndarray], method: str = "zscore") -> np.ndarray:
    """The same combination for 1-D foreground score vectors (used for calibration)."""
    return np.mean([normalize_values(v, method) for v in values], axis=0)
