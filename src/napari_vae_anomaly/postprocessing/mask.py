"""From an anomaly map to a binary mask: threshold, small-component removal, hole filling.

``make_mask`` is what a live threshold slider calls on every move, so it does no median
filtering (filter the map once with :func:`~.filters.median_filter_map` and re-threshold the
result) and works on the bounding box of the thresholded voxels only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .components import remove_small_components
from .filters import fill_holes, median_filter_map


@dataclass
class MaskOptions:
    """Post-processing of a thresholded map (reference: median 5, components <= 7 voxels)."""

    median_size: int = 0
    min_voxels: int = 0
    min_mm3: float = 0.0
    fill_holes: bool = False
    connectivity: int = 1

    def to_dict(self) -> dict:
        return asdict(self)


def make_mask(
    score: np.ndarray,
    threshold: float,
    foreground: np.ndarray | None = None,
    min_voxels: int = 0,
    min_mm3: float = 0.0,
    spacing: tuple[float, ...] | None = None,
    fill: bool = False,
    connectivity: int = 1,
) -> np.ndarray:
    """uint8 mask of ``score > threshold`` (inside ``foreground``), cleaned as asked.

    ``spacing`` (any axis order; only its product is used) converts ``min_mm3`` to voxels.
    """
    m = np.asarray(score) > threshold
    if foreground is not None:
        m &= np.asarray(foreground, dtype=bool)
    if min_voxels > 1 or min_mm3 > 0:
        m = remove_small_components(m, min_voxels, min_mm3, spacing, connectivity) > 0
    if fill:
        m = fill_holes(m)
    return m.astype(np.uint8, copy=False)


def postprocess(
    score: np.ndarray,
    threshold: float,
    options: MaskOptions | None = None,
    foreground: np.ndarray | None = None,
    spacing: tuple[float, ...] | None = None,
) -> np.ndarray:
    """Full post-processing in the reference order: median filter the map, then make_mask."""
    o = options or MaskOptions()
    if o.median_size > 1:
        score = median_filter_map(score, o.median_size, foreground)
    return make_mask(score, threshold, foreground, o.min_voxels, o.min_mm3, spacing,
                     o.fill_holes, o.connectivity)
