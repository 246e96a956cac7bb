"""The per-lesion table of the Detect widget, and centring the viewer on a lesion.

One row per connected component of the mask (labelled and tabulated by the core's
``postprocessing/lesions``): label, volume in mL, voxel count, mean and max score. Clicking a row selects that label in the Labels layer and moves the view to the
lesion's centroid, converted to world coordinates through the layer's own transform so the
centre is right on anisotropic, translated scans.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import QAbstractItemView, QTableWidget, QTableWidgetItem

from ._common import fit_columns, readable_headers

MAX_ROWS = 500  # thousands of specks at a low threshold would only slow the slider down
COLUMNS = ("label", "volume (mL)", "voxels", "mean score", "max score")


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
