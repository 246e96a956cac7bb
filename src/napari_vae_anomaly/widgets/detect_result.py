"""The Detect widget's result side: the last detection, its layers, and the live threshold.

Moving the threshold re-thresholds the cached map (no recomputation), rewrites the mask
(a new layer if the user edited ours, see :class:`.heatmap_layers.MaskLayer`) and the lesion
table. The threshold, map and predictor are kept in ``metadata["vae_anomaly"]`` of the mask
and of the map's heatmap, so other widgets (Evaluation) read what the user settled on.

What a first result shows, on purpose: the heatmap of the map the mask follows (the others
are listed, hidden; choosing one in the Map box shows it instead), the mask as an outline
over it, no ground truth (hidden, not removed), and a status line that ends with the next step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QCheckBox, QComboBox, QFormLayout, QGroupBox, QLabel, QSlider, QWidget

from ..postprocessing.lesions import label_lesions, lesion_rows
from ._common import warn
from .heatmap_layers import (
    MaskLayer,
    hide_other_labels,
    robust_limits,
    style_mask,
    tag_detection,
    upsert_heatmap,
)
from .lesion_table import LesionTable, focus_lesion

SLIDER_STEPS = 1000
SHORTCUT_HELP = {
    "Shift-Up": "raise the threshold",
    "Shift-Down": "lower the threshold",
    "Shift-H": "show or hide the heatmap of the map the mask follows",
}


@dataclass
class DetectionResult:
    """The detection shown: its source layer, the job's outcome, our layers, the threshold."""

    source: Any
    outcome: Any  # workers.detect_worker.DetectOutcome
    spacing: tuple[float, ...]  # napari (z, y, x) order
    mask: MaskLayer
    heatmaps: dict[str, Any] = field(default_factory=dict)  # map name -> Image layer
    map_name: str = ""  # the map the mask and table follow
    threshold: float = float("nan")
    limits: tuple[float, float] = (0.0, 1.0)  # the slider's range
    normal_fraction: float | None = None  # the calibration's fraction, if calibrated
    hidden_labels: list[str] = field(default_factory=list)  # hidden when the result came


NEXT_STEP = ("Next: correct the mask with the paint tools (P paint, E erase), "
             "then File > Save Selected Layers")


def threshold_meaning(value: float, marked: int, region: int, calibrated: float | None,
                      normal_fraction: float | None) -> str:
    """What a threshold means, in words: the share of this scan's foreground it marks
    (``marked`` of ``region`` voxels), and for the calibrated value, the share of the model's
    normal tissue it flags."""
    share = 100.0 * marked / max(region, 1)
    text = f"{value:.4g}: marks {share:.2g} % of this scan's foreground"
    if normal_fraction is not None and calibrated is not None and np.isfinite(calibrated):
        text += (f"; {calibrated:.4g} flags {100.0 * normal_fraction:.3g} % of normal tissue"
                 " (calibrated)")
    return text


class ResultPanel(QGroupBox):
    """The Detect widget's Result box: which map the mask follows, the live threshold (and
    what it means), outline or fill, the lesion table; it holds the last detection.

    A child widget of the Detect widget, not a mixin: it needs only the viewer and a way to
    read the smallest lesion size (``min_size``, from the Mask box), so the result side can be
    read and tested on its own.
    """

    def __init__(self, viewer: Any, min_size: Callable[[], tuple[int, float]],
                 parent: QWidget | None = None) -> None:
        super().__init__("Result", parent)
        self.viewer = viewer
        self._min_size = min_size
        self.result: DetectionResult | None = None
        self._previous: dict[int, DetectionResult] = {}  # id(source) -> result, for reuse
        self.last_update_ms = float("nan")
        self._build()

    def _build(self) -> None:
        rl = QFormLayout(self)
        self.map_combo = QComboBox()
        self.map_combo.setToolTip("The map the mask and lesion table follow; only its heatmap "
                                  "is shown, the others stay listed in the layer list "
                                  f"(Shift-H: {SHORTCUT_HELP['Shift-H']})")
        self.threshold_slider = QSlider(Qt.Orientation.Horizontal)
        self.threshold_slider.setRange(0, SLIDER_STEPS)
        self.threshold_slider.setToolTip(
            "Live threshold of the mask (no recomputation). "
            + "; ".join(f"{k}: {v}" for k, v in SHORTCUT_HELP.items()))
        self.threshold_value = QLabel("-")
        self.threshold_value.setWordWrap(True)
        self.fill_mask = QCheckBox("Fill the mask (default: outline over the heat)")
        self.fill_mask.setToolTip("Draw the mask filled instead of as an outline")
        rl.addRow("Map", self.map_combo)
        rl.addRow("Threshold", self.threshold_slider)
        rl.addRow("", self.threshold_value)
        rl.addRow(self.fill_mask)
        self.table = LesionTable()
        rl.addRow(self.table)
        self.threshold_slider.valueChanged.connect(self._on_slider)
        self.map_combo.currentTextChanged.connect(self._on_map_changed)
        self.table.lesion_clicked.connect(self._on_lesion_clicked)
        self.fill_mask.toggled.connect(self._on_fill_toggled)
        self.setEnabled(False)

    def show_result(self, source: Any, outcome: Any, normal_fraction: float | None) -> None:
        """Show a finished job's maps over ``source`` (reusing our layers of a previous run on
        it), hide what competes with them, and follow the primary map.

        ``normal_fraction``: the fraction the thresholds were calibrated at (None: fixed).
        """
        from ._common import layer_geometry

        prev = self._previous.get(id(source))
        res = DetectionResult(
            source, outcome, tuple(layer_geometry(source).scale),
            mask=prev.mask if prev is not None else MaskLayer(self.viewer, source),
            # our layers of a previous run are updated in place rather than stacked
            heatmaps=prev.heatmaps if prev is not None else {},
            map_name=outcome.primary, normal_fraction=normal_fraction)
        res.mask.filled = self.fill_mask.isChecked()
        for name, arr in outcome.maps.items():
            res.heatmaps[name] = upsert_heatmap(self.viewer, source, name, arr,
                                                outcome.foreground, res.heatmaps.get(name),
                                                threshold=outcome.thresholds.get(name),
                                                visible=name == outcome.primary)
        res.hidden_labels = hide_other_labels(self.viewer, source, keep=res.mask.layer)
        self._previous[id(source)] = res
        self.result = res
        self.setEnabled(True)
        self.map_combo.blockSignals(True)
        self.map_combo.clear()
        self.map_combo.addItems(list(outcome.maps))
        self.map_combo.setCurrentText(outcome.primary)
        self.map_combo.blockSignals(False)
        self._select_map(outcome.primary)
        self.viewer.layers.selection.active = res.mask.layer

    def summary(self) -> str:
        """The status line after a run: what was found, what was hidden, the next step."""
        res = self.result
        if res is None:
            return ""
        n = self.table.rowCount()
        text = f"{n} lesion(s) in {res.map_name} on {res.source.name}"
        if res.hidden_labels:
            text += f"; hidden: {', '.join(res.hidden_labels)} (eye icon to show)"
        return f"{text}. {NEXT_STEP}."

    def _on_fill_toggled(self, filled: bool) -> None:
        if self.result is None:
            return
        self.result.mask.filled = filled
        if self.result.mask.is_alive():
            style_mask(self.result.mask.layer, filled)

    def forget(self, layer: Any) -> None:
        """``layer`` left the viewer: drop what was computed on it."""
        if self.result is not None and layer is self.result.source:
            self.clear()
        self._previous.pop(id(layer), None)

    def clear(self) -> None:
        self.result = None
        self.setEnabled(False)
        self.table.set_rows([])

    def _on_map_changed(self, name: str) -> None:
        if self.result is not None and name in self.result.outcome.maps:
            self._select_map(name)

    def _select_map(self, name: str) -> None:
        """Follow map ``name``: its heatmap alone is shown, the mask and table follow it."""
        res = self.result
        res.map_name = name
        for map_name, layer in res.heatmaps.items():
            if layer in self.viewer.layers:
                layer.visible = map_name == name
        res.limits = robust_limits(res.outcome.mask_map(name), res.outcome.foreground,
                                   (0.0, 99.99))
        t = res.outcome.thresholds.get(name, float("nan"))
        if not np.isfinite(t):
            t = robust_limits(res.outcome.mask_map(name), res.outcome.foreground, (99.0, 99.5))[0]
        lo, hi = res.limits
        res.limits = (min(lo, t), max(hi, t))
        self.set_threshold(t)

    def _value_to_step(self, value: float) -> int:
        lo, hi = self.result.limits
        return int(round((value - lo) / (hi - lo) * SLIDER_STEPS)) if hi > lo else 0

    def _on_slider(self, step: int) -> None:
        if self.result is None:
            return
        lo, hi = self.result.limits
        self.set_threshold(lo + (hi - lo) * step / SLIDER_STEPS, from_slider=True)

    def threshold(self) -> float:
        return self.result.threshold if self.result is not None else float("nan")

    def set_threshold(self, value: float, from_slider: bool = False) -> None:
        """Re-threshold the cached map and update the mask layer and the lesion table."""
        res = self.result
        if res is None:
            return
        res.threshold = float(value)
        if not from_slider:
            self.threshold_slider.blockSignals(True)
            self.threshold_slider.setValue(self._value_to_step(value))
            self.threshold_slider.blockSignals(False)
        self._update_mask()

    def step_threshold(self, steps: int) -> None:
        """Move the threshold by ``steps`` hundredths of the slider range (keyboard)."""
        if self.result is None:
            return
        lo, hi = self.result.limits
        self.set_threshold(float(np.clip(self.result.threshold + steps * (hi - lo) / 100, lo, hi)))

    def _update_mask(self) -> None:
        from ..postprocessing.components import min_voxels_for
        from ..postprocessing.mask import make_mask
        from ._common import layer_geometry

        res = self.result
        t0 = time.perf_counter()
        score = res.outcome.mask_map(res.map_name)
        min_voxels, min_mm3 = self._min_size()
        mask = make_mask(score, res.threshold, res.outcome.foreground)
        # small-component removal and labelling in one pass (see label_lesions)
        labels = label_lesions(mask, min_voxels_for(min_voxels, min_mm3, res.spacing))
        layer, new_layer = res.mask.write(labels)
        if new_layer:
            warn(f"The mask you edited was kept; the new mask is in layer {layer.name!r}")
        self._tag_threshold(layer)
        self.table.set_rows(lesion_rows(labels, score, layer_geometry(res.source)))
        fg = res.outcome.foreground
        self.threshold_value.setText(threshold_meaning(
            res.threshold, int(np.count_nonzero(mask)),
            int(np.count_nonzero(fg)) if fg is not None else mask.size,
            res.outcome.thresholds.get(res.map_name), res.normal_fraction))
        self.last_update_ms = (time.perf_counter() - t0) * 1000.0

    def _tag_threshold(self, mask_layer: Any) -> None:
        """Record the threshold in use on the mask we just wrote and on the map's heatmap."""
        res = self.result
        fields = {"map": res.map_name, "predictor": res.map_name, "threshold": res.threshold,
                  "models": list(res.outcome.models)}
        tag_detection(mask_layer, **fields)
        heat = res.heatmaps.get(res.map_name)
        if heat is not None and heat in self.viewer.layers:
            tag_detection(heat, **fields)

    def refresh_mask(self, *_: Any) -> None:
        """Redo the mask with the current threshold (the Mask box's size options changed)."""
        if self.result is not None and self.result.mask.is_alive():
            self._update_mask()

    def _on_lesion_clicked(self, row: Any) -> None:
        if self.result is not None and self.result.mask.is_alive():
            focus_lesion(self.viewer, self.result.mask.layer, row)

    def toggle_heatmaps(self) -> None:
        """Show or hide the heatmap of the map the mask follows (Shift-H)."""
        if self.result is None:
            return
        layer = self.result.heatmaps.get(self.result.map_name)
        if layer is not None and layer in self.viewer.layers:
            layer.visible = not layer.visible
