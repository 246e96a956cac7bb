"""The per-lesion table of the Detect widget, and centring the viewer on a lesion.

One row per connected component of the mask: label, volume in mL, voxel count, mean and max
score. Clicking a row selects that label in the Labels layer and moves the view to the
lesion's centroid, converted to world coordinates through the layer's own transform so the
centre is right on anisotropic, translated scans.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import QAbstractItemView, QTableWidget, QTableWidgetItem

from ._common import fit_columns, readable_headers

MAX_ROWS = 500  # thousands of specks at a low threshold would only slow the slider down
COLUMNS = ("label", "volume (mL)", "voxels", "mean score", "max score")


def label_lesions(mask: np.ndarray, min_voxels: int = 0, connectivity: int = 1) -> np.ndarray:
    """Component labels of ``mask`` (1 = largest), components under ``min_voxels`` dropped.

    One labelling pass over the bounding box of the mask (this runs on every slider move);
    the smallest unsigned dtype that holds the labels keeps the Labels layer light.
    """
    from scipy import ndimage

    from ..postprocessing.components import structure
    from ..postprocessing.filters import bounding_box

    box = bounding_box(mask)
    if box is None:
        return np.zeros(mask.shape, dtype=np.uint8)
    sub, n = ndimage.label(mask[box], structure=structure(mask.ndim, connectivity))
    flat = sub.ravel()
    idx = np.flatnonzero(flat)  # only the labelled voxels from here on
    lab = flat[idx]
    sizes = np.bincount(lab, minlength=n + 1)
    sizes[0] = 0
    keep = np.flatnonzero(sizes >= max(int(min_voxels), 1))
    order = keep[np.argsort(-sizes[keep], kind="stable")]
    m = len(order)
    dtype = np.uint8 if m < 2**8 else np.uint16 if m < 2**16 else np.uint32
    remap = np.zeros(n + 1, dtype=dtype)
    remap[order] = np.arange(1, m + 1, dtype=dtype)
    sub_out = np.zeros(sub.shape, dtype=dtype)
    sub_out.ravel()[idx] = remap[lab]
    out = np.zeros(mask.shape, dtype=dtype)
    out[box] = sub_out
    return out


def lesions_in(labels: np.ndarray, score: np.ndarray, spacing_zyx: Sequence[float]) -> list[Any]:
    """Table rows (:class:`~napari_vae_anomaly.postprocessing.lesions.Lesion`) of ``labels``.

    Same rows as :func:`~napari_vae_anomaly.postprocessing.lesions.lesion_table`, computed with
    ``bincount`` over the labelled voxels only, because this runs on every slider move: on a
    155x240x240 scan it takes milliseconds where ``ndimage.maximum`` (a sort) takes a second.
    Centroids are voxel indices (z, y, x); ``centroid_world`` uses spacing only (no origin
    or direction: the widget converts with the layer's own transform).
    """
    from ..postprocessing.lesions import Lesion

    flat = labels.ravel()
    idx = np.flatnonzero(flat)
    if idx.size == 0:
        return []
    lab = flat[idx]
    n = int(lab.max())
    voxels = np.bincount(lab, minlength=n + 1)
    s = np.asarray(score).ravel()[idx].astype(np.float64)
    sums = np.bincount(lab, weights=s, minlength=n + 1)
    maxes = np.full(n + 1, -np.inf)
    np.maximum.at(maxes, lab, s)
    coords = np.unravel_index(idx, labels.shape)
    cents = np.stack([np.bincount(lab, weights=c, minlength=n + 1) for c in coords], axis=1)
    sp = np.asarray(spacing_zyx, dtype=float)
    voxel_ml = float(np.prod(sp)) / 1000.0
    rows = []
    for k in np.flatnonzero(voxels):
        if k == 0:
            continue
        c = cents[k] / voxels[k]
        rows.append(Lesion(
            label=int(k), voxels=int(voxels[k]), volume_ml=float(voxels[k]) * voxel_ml,
            mean_score=float(sums[k] / voxels[k]), max_score=float(maxes[k]),
            centroid_voxel=tuple(float(v) for v in c),
            centroid_world=tuple(float(v) for v in (c * sp)[::-1]),
        ))
    rows.sort(key=lambda r: (-r.voxels, r.label))
    return rows


def focus_lesion(viewer: Any, layer: Any, row: Any) -> None:
    """Select ``row.label`` in ``layer`` and centre the view (slice and camera) on it."""
    layer.selected_label = int(row.label)
    world = np.asarray(layer.data_to_world(row.centroid_voxel), dtype=float)
    offset = viewer.dims.ndim - world.size  # the viewer may hold higher-dimensional layers
    axes = [offset + i for i in range(world.size)]
    not_displayed = [a for a in axes if a not in viewer.dims.displayed]
    if not_displayed:
        viewer.dims.set_point(not_displayed, [world[a - offset] for a in not_displayed])
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera  # napari < 0.9
    camera.center = tuple(world[a - offset] for a in viewer.dims.displayed if a >= offset)


class LesionTable(QTableWidget):
    """Read-only table of lesion rows; emits ``lesion_clicked(row)`` on a click."""

    lesion_clicked = Signal(object)

    def __init__(self, parent: Any = None) -> None:
        super().__init__(0, len(COLUMNS), parent)
        self.setHorizontalHeaderLabels(list(COLUMNS))
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.verticalHeader().setVisible(False)
        self.setToolTip("Connected components of the mask. Click a row to select and centre it.")
        self.rows: list[Any] = []
        self.cellClicked.connect(self._on_click)
        readable_headers(self)

    def set_rows(self, rows: list[Any]) -> None:
        """Show ``rows`` (largest first); only the first :data:`MAX_ROWS` get table items."""
        self.rows = list(rows)[:MAX_ROWS]
        self.setUpdatesEnabled(False)
        self.setRowCount(len(self.rows))
        for i, r in enumerate(self.rows):
            values = (str(r.label), f"{r.volume_ml:.3f}", str(r.voxels),
                      f"{r.mean_score:.4g}", f"{r.max_score:.4g}")
            for j, text in enumerate(values):
                item = QTableWidgetItem(text)
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.setItem(i, j, item)
        fit_columns(self)
        self.setUpdatesEnabled(True)

    def _on_click(self, row: int, _col: int = 0) -> None:
        if 0 <= row < len(self.rows):
            self.lesion_clicked.emit(self.rows[row])
