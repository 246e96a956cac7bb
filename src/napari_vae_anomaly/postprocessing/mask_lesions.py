"""The mask and its lesion table from one labelling, slab by slab: what ``predict`` does last.

Why: :func:`.mask.postprocess` followed by :func:`.lesions.lesion_table` labels the mask
twice and, for the table, holds int64 indices, intp labels, float64 scores and three int64
coordinates of every labelled voxel at once; at a low threshold the mask covers half the
brain and these temporaries were one of the peaks of a large volume's ``predict``. Here the
components are labelled once (on the mask's bounding box, uint16 when they fit), small ones
are dropped and the rest renumbered in place, and the table's sums are taken a few planes at a
time. The mask and the rows are those of the two-pass functions, bit for bit: counts and sums
of voxel indices are exact integers in any order, and scores are added in raster order into
one float64 accumulator per lesion, the order ``np.bincount`` adds them in.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..io.geometry import Geometry
from .components import component_sizes, label_box, min_voxels_for, plane_runs
from .filters import bounding_box
from .lesions import Lesion, lesion_table, rows_from_sums
from .mask import MaskOptions, postprocess

SLAB_VOXELS = 1 << 20  # voxels of the labels handled at a time (a few MiB of temporaries)


def _slabs(shape: tuple[int, ...]) -> Iterator[slice]:
    return plane_runs(shape, SLAB_VOXELS)


def _renumber(labels: np.ndarray, n: int, need: int) -> np.ndarray:
    """Drop components under ``need`` voxels and renumber the rest in place, 1 = largest (ties
    in the order of their first voxels, as ``label_lesions``); returns the kept sizes."""
    sizes = component_sizes(labels, n, SLAB_VOXELS)
    sizes[0] = 0
    keep = np.flatnonzero(sizes >= max(need, 1))
    order = keep[np.argsort(-sizes[keep], kind="stable")]
    remap = np.zeros(n + 1, dtype=labels.dtype)
    remap[order] = np.arange(1, len(order) + 1)
    for sl in _slabs(labels.shape):
        labels[sl] = remap[labels[sl]]
    return np.concatenate([[0], sizes[order]])


def _sums(labels: np.ndarray, score: np.ndarray, start: tuple[int, ...], k: int) -> tuple:
    """Per-label score sums and maxima and (k + 1, ndim) sums of voxel indices of a labelled
    box whose first voxel is ``start`` in ``score``'s array."""
    sums = np.zeros(k + 1)
    maxes = np.full(k + 1, -np.inf)
    coords = np.zeros((k + 1, labels.ndim))
    for sl in _slabs(labels.shape):
        flat = labels[sl].ravel()
        idx = np.flatnonzero(flat)
        lab = flat[idx].astype(np.intp)
        box = tuple(slice(a + (sl.start if ax == 0 else 0),
                          a + (sl.stop if ax == 0 else labels.shape[ax]))
                    for ax, a in enumerate(start))
        s = score[box].ravel()[idx].astype(np.float64)
        np.add.at(sums, lab, s)  # in raster order, one accumulator per label: bincount's sum
        np.maximum.at(maxes, lab, s)
        for ax, c in enumerate(np.unravel_index(idx, labels[sl].shape)):
            offset = start[ax] + (sl.start if ax == 0 else 0)
            coords[:, ax] += np.bincount(lab, weights=c + offset, minlength=k + 1)
    return sums, maxes, coords


def mask_and_lesions(
    score: np.ndarray,
    threshold: float,
    options: MaskOptions,
    foreground: np.ndarray | None,
    geometry: Geometry,
) -> tuple[np.ndarray, list[Lesion]]:
    """The uint8 mask ``postprocess(score, threshold, options, foreground, geometry.spacing)``
    and its ``lesion_table(mask, score, geometry, options.connectivity)``, labelled once.

    Hole filling and a median filter change the mask after its components are known: with
    either, the two functions are called as they are.
    """
    o = options
    if o.fill_holes or o.median_size > 1:
        mask = postprocess(score, threshold, o, foreground, geometry.spacing)
        return mask, lesion_table(mask, score, geometry, o.connectivity)
    score = np.asarray(score)
    m = score > threshold
    if foreground is not None:
        m &= np.asarray(foreground, dtype=bool)
    box = bounding_box(m)
    if box is None:
        return m.view(np.uint8), []
    labels, n = label_box(m[box], o.connectivity)
    voxels = _renumber(labels, int(n), min_voxels_for(o.min_voxels, o.min_mm3, geometry.spacing))
    inside = m[box]
    for sl in _slabs(labels.shape):
        np.greater(labels[sl], 0, out=inside[sl])
    start = tuple(b.start for b in box)
    sums, maxes, coords = _sums(labels, score, start, len(voxels) - 1)
    means = sums / np.maximum(voxels, 1)
    return m.view(np.uint8), rows_from_sums(voxels, means, maxes, coords, geometry)
