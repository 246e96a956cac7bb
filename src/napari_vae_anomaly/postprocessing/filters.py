"""Voxel filters applied around thresholding: 3-D median filter (on the map) and hole filling.

The median filter is applied to the *map* once, not to every mask: a live threshold slider can
then re-threshold the filtered map cheaply. Both work on the bounding box of the non-zero
region only, which is much smaller than the volume for brain scans.
"""

from __future__ import annotations

from typing import Any

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


def median_filter_in_place(score: np.ndarray, size: int, foreground: np.ndarray,
                           device: Any = None) -> None:
    """:func:`median_filter_map` written back into ``score`` (float32), the same values
    without a copy of the map: only the foreground's box is allocated, once.

    ``device``: a CUDA device filters there (:func:`median_filter_torch`, the same values):
    on a GPU the model's maps take a fraction of a second and scipy's median on the CPU,
    seconds per map, would be what a cohort waits for. Anything else filters with scipy.
    """
    if size < 1:
        raise ValueError(f"median size must be >= 1, got {size}")
    if score.dtype != np.float32:
        raise ValueError(f"an in-place median needs a float32 map, got {score.dtype}")
    box = bounding_box(foreground, margin=size // 2)
    if size > 1 and box is not None:
        if device is not None and getattr(device, "type", str(device)) == "cuda":
            score[box] = median_filter_torch(score[box], size, device)
        else:
            score[box] = ndimage.median_filter(score[box], size=size, mode="nearest")


_MEDIAN_BUDGET = 1 << 26  # window values per slab (256 MiB of float32 on the device)


def median_filter_torch(a: np.ndarray, size: int, device: Any) -> np.ndarray:
    """scipy's ``median_filter(a, size, mode="nearest")`` of a 3-D float32 array, computed
    with torch on ``device`` a slab of slices at a time (the same values: each voxel gets the
    element of rank ``size**3 // 2`` of its window, with edges repeated).

    On the CPU scipy is faster; this is for GPUs, where it takes milliseconds.
    """
    import torch
    import torch.nn.functional as F

    if a.ndim != 3:
        raise ValueError(f"a 3-D array is needed, got {a.ndim}-D")
    lo, hi = size // 2, size - 1 - size // 2  # scipy's window around each voxel
    x = torch.as_tensor(np.ascontiguousarray(a, np.float32), device=device)
    padded = F.pad(x[None, None], (lo, hi, lo, hi, lo, hi), mode="replicate")[0, 0]
    rank = size**3 // 2 + 1  # kthvalue counts from 1
    per_slice = a.shape[1] * a.shape[2] * size**3
    slab = max(1, _MEDIAN_BUDGET // max(per_slice, 1))
    out = torch.empty_like(x)
    for z in range(0, a.shape[0], slab):
        block = padded[z : z + slab + size - 1]
        windows = block.unfold(0, size, 1).unfold(1, size, 1).unfold(2, size, 1)
        windows = windows.reshape(*windows.shape[:3], -1)
        out[z : z + slab] = windows.kthvalue(rank, dim=-1).values
    return out.cpu().numpy()


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill enclosed cavities of a 3-D (or 2-D) binary mask; same dtype as given."""
    m = np.asarray(mask) > 0
    box = bounding_box(m, margin=1)
    out = np.zeros(m.shape, dtype=bool)
    if box is not None:
        out[box] = ndimage.binary_fill_holes(m[box])
    return out.astype(np.asarray(mask).dtype, copy=False)
