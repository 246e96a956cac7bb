"""Connected components of masks: labelling and removal of small ones by voxels or mm³.

Geometry spacing is ITK-ordered (x, y, z) while arrays are (z, y, x); only the *product* of the
spacing (the voxel volume) enters here, which is order-free, but connectivity is in array axes.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from scipy import ndimage

from .filters import bounding_box


def voxel_volume_mm3(spacing: tuple[float, ...] | None) -> float:
    """Volume of one voxel in mm³ from its spacing (any axis order)."""
    return 1.0 if spacing is None else float(np.prod(np.asarray(spacing, dtype=np.float64)))


def structure(ndim: int, connectivity: int = 1) -> np.ndarray:
    """Neighbourhood: 1 = faces (6 in 3-D), ndim = faces, edges and corners (26)."""
    return ndimage.generate_binary_structure(ndim, connectivity)


def label_box(m: np.ndarray, connectivity: int = 1) -> tuple[np.ndarray, int]:
    """``ndimage.label`` of a boolean array in uint16 when its components fit (most masks),
    else int32: half the memory of the labels of a large, fragmented mask."""
    st = structure(m.ndim, connectivity)
    try:
        return ndimage.label(m, structure=st, output=np.uint16)
    except RuntimeError:  # more than 65535 components
        return ndimage.label(m, structure=st)


def plane_runs(shape: tuple[int, ...], voxels: int = 1 << 20) -> Iterator[slice]:
    """Runs of planes along the first axis of about ``voxels`` voxels each (at least one
    plane): what a full-size temporary is cut into."""
    plane = max(1, int(np.prod(shape[1:], dtype=np.int64)))
    step = max(1, voxels // plane)
    for z in range(0, shape[0], step):
        yield slice(z, min(z + step, shape[0]))


def component_sizes(labels: np.ndarray, n: int, voxels: int = 1 << 20) -> np.ndarray:
    """Voxels of each label 0..n, ``np.bincount(labels.ravel())`` counted a run of planes at
    a time (bincount casts the labels to intp: a full-size int64 copy otherwise)."""
    sizes = np.zeros(n + 1, dtype=np.intp)
    for sl in plane_runs(labels.shape, voxels):
        sizes += np.bincount(labels[sl].ravel(), minlength=n + 1)
    return sizes


def label_components(mask: np.ndarray, connectivity: int = 1) -> tuple[np.ndarray, int]:
    """Label image (int32, 0 = background) and the number of components."""
    m = np.asarray(mask) > 0
    labels = np.zeros(m.shape, dtype=np.int32)
    box = bounding_box(m)
    if box is None:
        return labels, 0
    sub, n = label_box(m[box], connectivity)
    labels[box] = sub
    return labels, int(n)


def min_voxels_for(min_voxels: int = 0, min_mm3: float = 0.0, spacing: tuple[float, ...] | None = None) -> int:
    """Smallest component size kept, in voxels, from a voxel count and/or a volume in mm³."""
    need = int(min_voxels)
    if min_mm3 > 0:
        need = max(need, int(np.ceil(min_mm3 / voxel_volume_mm3(spacing) - 1e-9)))
    return need


def remove_small_components(
    mask: np.ndarray,
    min_voxels: int = 0,
    min_mm3: float = 0.0,
    spacing: tuple[float, ...] | None = None,
    connectivity: int = 1,
) -> np.ndarray:
    """Drop components smaller than ``min_voxels`` voxels or ``min_mm3`` mm³ (uint8 result)."""
    m = np.asarray(mask) > 0
    need = min_voxels_for(min_voxels, min_mm3, spacing)
    if need <= 1:
        return m.astype(np.uint8)
    box = bounding_box(m)
    out = np.zeros(m.shape, dtype=np.uint8)
    if box is None:
        return out
    sub, n = label_box(m[box], connectivity)
    sizes = np.bincount(sub.ravel(), minlength=n + 1)
    keep = sizes >= need
    keep[0] = False
    out[box] = keep[sub]
    return out
