"""Per-lesion table: one row per connected component of a mask.

Rows are numbered by decreasing size (label 1 = largest). Centroids are given in voxel
indices (z, y, x) and in world coordinates (ITK/LPS x, y, z, mm) using the full geometry
(origin + direction · spacing · index), so a row points at the same spot in any viewer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from ..io.geometry import Geometry
from .components import label_components, voxel_volume_mm3
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


def relabel_by_size(mask: np.ndarray, connectivity: int = 1) -> tuple[np.ndarray, int]:
    """Component labels numbered by decreasing voxel count (int32, 0 = background)."""
    labels, n = label_components(mask, connectivity)
    if n == 0:
        return labels, 0
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    order = np.argsort(-sizes[1:], kind="stable") + 1
    remap = np.zeros(n + 1, dtype=np.int32)
    remap[order] = np.arange(1, n + 1, dtype=np.int32)
    return remap[labels], n


def lesion_table(
    mask: np.ndarray,
    score: np.ndarray | None = None,
    geometry: Geometry | None = None,
    connectivity: int = 1,
    labels: np.ndarray | None = None,
) -> list[Lesion]:
    """Rows for each component of ``mask`` (or of a ready ``labels`` image), largest first."""
    if labels is None:
        labels, n = relabel_by_size(mask, connectivity)
    else:
        n = int(labels.max()) if labels.size else 0
    if n == 0:
        return []
    geometry = geometry or Geometry.identity(labels.ndim)
    box = bounding_box(labels > 0)
    offset = np.array([b.start for b in box], dtype=np.float64)
    lab = labels[box]  # all work on the lesions' bounding box only
    idx = np.arange(1, n + 1)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)[1 : n + 1]
    if score is None:
        means = maxs = np.full(n, np.nan)
    else:
        s = np.asarray(score, dtype=np.float64)[box]
        means = np.asarray(ndimage.mean(s, lab, idx))
        maxs = np.asarray(ndimage.maximum(s, lab, idx))
    cents = np.asarray(ndimage.center_of_mass(np.ones(lab.shape, np.uint8), lab, idx))
    cents = cents.reshape(n, labels.ndim) + offset
    world = index_to_world(cents, geometry)
    vox_ml = voxel_volume_mm3(geometry.spacing) / 1000.0
    rows = []
    for i in range(n):
        if sizes[i] == 0:
            continue
        rows.append(Lesion(
            int(idx[i]), int(sizes[i]), float(sizes[i] * vox_ml), float(means[i]),
            float(maxs[i]), tuple(float(c) for c in cents[i]), tuple(float(w) for w in world[i]),
        ))
    return rows
