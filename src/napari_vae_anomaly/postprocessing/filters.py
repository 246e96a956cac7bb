"""Voxel filters applied around thresholding: 3-D median filter (on the map) and hole filling.

The median filter is applied to the *map* once, not to every mask: a live threshold slider can
then re-threshold the filtered map cheaply. Both work on the bounding box of the non-zero
region only, which is much smaller than the volume for brain scans.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...] | None:
    """Slices of the smallest box holding all True voxels (grown by ``margin``), or None."""
    idx = []
    for ax in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != ax)
        hit = np.flatnonzero(mask.any(axis=other))
        if hit.size == 0:
            return None
        idx.append(slice(max(0, hit[0] - margin), min(mask.shape[ax], hit[-1] + 1 + margin)))
    return tuple(idx)


def median_filter_map(score: np.ndarray, size: int = 5, foreground: np.ndarray | None = None) -> np.ndarray:
    """3-D median filter (``size`` voxels a side, reference 5) of a map, as float32.

    With ``foreground`` only its bounding box is filtered (outside stays as it was).
    """
    if size < 1:
        raise ValueError(f"median size must be >= 1, got {size}")
    score = np.asarray(score, dtype=np.float32)
    if size == 1:
        return score.copy()
    box = bounding_box(foreground if foreground is not None else score != 0, margin=size // 2)
    out = score.copy()
    if box is not None:
        out[box] = ndimage.median_filter(score[box], size=size, mode="nearest")
    return out


def median_filter_in_place(score: np.ndarray, size: int, foreground: np.ndarray) -> None:
    """:func:`median_filter_map` written back into ``score`` (float32), the same values
    without a copy of the map: only the foreground's box is allocated, once."""
    if size < 1:
        raise ValueError(f"median size must be >= 1, got {size}")
    if score.dtype != np.float32:
        raise ValueError(f"an in-place median needs a float32 map, got {score.dtype}")
    box = bounding_box(foreground, margin=size // 2)
    if size > 1 and box is not None:
        score[box] = ndimage.median_filter(score[box], size=size, mode="nearest")


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill enclosed cavities of a 3-D (or 2-D) binary mask; same dtype as given."""
    m = np.asarray(mask) > 0
    box = bounding_box(m, margin=1)
    out = np.zeros(m.shape, dtype=bool)
    if box is not None:
        out[box] = ndimage.binary_fill_holes(m[box])
    return out.astype(np.asarray(mask).dtype, copy=False)
