"""Per-lesion table: one row per connected component of a mask.

Rows are numbered by decreasing size (label 1 = largest). Centroids are given in voxel
indices (z, y, x) and in world coordinates (ITK/LPS x, y, z, mm) using the full geometry
(origin + direction · spacing · index), so a row points at the same spot in any viewer. The
CLI, the core detection and the Detect widget's live table all label and tabulate here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..io.geometry import Geometry
from .components import label_box, voxel_volume_mm3
from .filters import bounding_box


@dataclass
class Lesion:
    """One connected component of a mask."""

    label: int
    voxels: int
    volume_ml: float
    mean_score: float
    max_score: float
    centroid_voxel: tuple[float, ...]  # array order (z, y, x)
    centroid_world: tuple[float, ...]  # ITK order (x, y, z), mm

    def to_dict(self) -> dict:
        return asdict(self)


def index_to_world(index_zyx: np.ndarray, geometry: Geometry) -> np.ndarray:
    """World (x, y, z) positions of (…, ndim) array-ordered voxel indices."""
    idx_xyz = np.asarray(index_zyx, dtype=np.float64)[..., ::-1]
    m = geometry.direction_matrix @ np.diag(geometry.spacing)
    return idx_xyz @ m.T + np.asarray(geometry.origin)


def label_lesions(mask: np.ndarray, min_voxels: int = 0, connectivity: int = 1) -> np.ndarray:
    """Component labels of ``mask`` (1 = largest), components under ``min_voxels`` dropped.

    One labelling pass over the bounding box of the mask (the Detect widget runs this on every
    slider move); the smallest unsigned dtype that holds the labels keeps a Labels layer light.
    Ties in size keep the raster order of the components' first voxels.
    """
    m = np.asarray(mask) > 0
    box = bounding_box(m)
    if box is None:
        return np.zeros(m.shape, dtype=np.uint8)
    sub, n = label_box(m[box], connectivity)
    flat = sub.ravel()
    idx = np.flatnonzero(flat)  # only the labelled voxels from here on
    lab = flat[idx]
    sizes = np.bincount(lab, minlength=n + 1)
    sizes[0] = 0
    keep = np.flatnonzero(sizes >= max(int(min_voxels), 1))
    order = keep[np.argsort(-sizes[keep], kind="stable")]
    k = len(order)
    dtype = np.uint8 if k < 2**8 else np.uint16 if k < 2**16 else np.uint32
    remap = np.zeros(n + 1, dtype=dtype)
    remap[order] = np.arange(1, k + 1, dtype=dtype)
    sub_out = np.zeros(sub.shape, dtype=dtype)
    sub_out.ravel()[idx] = remap[lab]
    out = np.zeros(m.shape, dtype=dtype)
    out[box] = sub_out
    return out


def lesion_rows(
    labels: np.ndarray, score: np.ndarray | None = None, geometry: Geometry | None = None
) -> list[Lesion]:
    """One row per label of ``labels``, largest first (ties by label).

    ``bincount`` over the labelled voxels only: on a 155x240x240 scan this takes milliseconds
    where ``ndimage.maximum`` (a sort) takes a second, so the Detect widget's slider can use it.
    ``centroid_world`` is the centroid through the full ``geometry`` (see module docstring);
    without a geometry, the voxel grid (unit spacing, zero origin). No score: NaN scores.
    """
    labels = np.asarray(labels)
    flat = labels.ravel()
    idx = np.flatnonzero(flat)
    if idx.size == 0:
        return []
    lab = flat[idx].astype(np.intp)
    n = int(lab.max())
    voxels = np.bincount(lab, minlength=n + 1)
    if score is None:
        means = maxes = np.full(n + 1, np.nan)
    else:
        s = np.asarray(score).ravel()[idx].astype(np.float64)
        means = np.bincount(lab, weights=s, minlength=n + 1) / np.maximum(voxels, 1)
        maxes = np.full(n + 1, -np.inf)
        np.maximum.at(maxes, lab, s)
    coords = np.unravel_index(idx, labels.shape)
    sums = np.stack([np.bincount(lab, weights=c, minlength=n + 1) for c in coords], axis=1)
    return rows_from_sums(voxels, means, maxes, sums, geometry or Geometry.identity(labels.ndim))


def rows_from_sums(voxels: np.ndarray, means: np.ndarray, maxes: np.ndarray,
                   coord_sums: np.ndarray, geometry: Geometry) -> list[Lesion]:
    """Rows of every label with voxels (index 0 = background, skipped), largest first (ties
    by label), from per-label voxel counts, scores and (n + 1, ndim) sums of voxel indices."""
    present = np.flatnonzero(voxels[1:]) + 1
    cents = coord_sums[present] / voxels[present, None]
    world = index_to_world(cents, geometry)
    vox_ml = voxel_volume_mm3(geometry.spacing) / 1000.0
    rows = [
        Lesion(int(k), int(voxels[k]), float(voxels[k] * vox_ml), float(means[k]), float(maxes[k]),
               tuple(float(c) for c in cents[i]), tuple(float(w) for w in world[i]))
        for i, k in enumerate(present)
    ]
    rows.sort(key=lambda r: (-r.voxels, r.label))
    return rows


def lesion_table(
    mask: np.ndarray,
    score: np.ndarray | None = None,
    geometry: Geometry | None = None,
    connectivity: int = 1,
    labels: np.ndarray | None = None,
) -> list[Lesion]:
    """Rows for each component of ``mask`` (or of a ready ``labels`` image), largest first."""
    if labels is None:
        labels = label_lesions(mask, 0, connectivity)
    return lesion_rows(labels, score, geometry)
