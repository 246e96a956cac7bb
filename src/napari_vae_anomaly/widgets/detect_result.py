"""The Detect widget's result side: the last detection, its layers, and the live threshold.

Moving the threshold re-thresholds the cached map (no recomputation), rewrites the mask
(a new layer if the user edited ours, see :class:`.heatmap_layers.MaskLayer`) and the lesion
table. The threshold, map and predictor are kept in ``metadata["vae_anomaly"]`` of the mask
and of the map's heatmap, so other widgets (Evaluation) read what the user settled on.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..postprocessing.lesions import label_lesions, lesion_rows
from ._common import warn
from .detect_form import SLIDER_STEPS
from .heatmap_layers import MaskLayer, robust_limits, tag_detection, upsert_heatmap
from .lesion_table import focus_lesion


class DetectionResult:
    """The last finished job: its source layer, maps, layers and current threshold."""

    def __init__(self, viewer: Any, source: Any, outcome: Any, spacing: tuple[float, ...]):
        self.source = source
        self.outcome = outcome
        self.spacing = spacing  # napari (z, y, x) order
        self.heatmaps: dict[str, Any] = {}
        self.mask = MaskLayer(viewer, source)
        self.map_name = outcome.primary
        self.threshold = float("nan")
        self.limits = (0.0, 1.0)


class DetectResultMixin:
    """Showing a detection and following the threshold; mixed into the Detect widget."""

    result: DetectionResult | None

    def _show(self, source: Any, outcome: Any) -> None:
        from ._common import layer_geometry

        prev = self._previous_results.get(id(source))
        res = DetectionResult(self.viewer, source, outcome, tuple(layer_geometry(source).scale))
        if prev is not None:  # reuse our layers: update in place rather than stacking
            res.heatmaps = prev.heatmaps
            res.mask = prev.mask
        for name, arr in outcome.maps.items():
            res.heatmaps[name] = upsert_heatmap(self.viewer, source, name, arr,
                                                outcome.foreground, res.heatmaps.get(name),
                                                threshold=outcome.thresholds.get(name))
        self._previous_results[id(source)] = res
        self.result = res
        self._result_box.setEnabled(True)
        self.map_combo.blockSignals(True)
        self.map_combo.clear()
        self.map_combo.addItems(list(outcome.maps))
        self.map_combo.setCurrentText(outcome.primary)
        self.map_combo.blockSignals(False)
        self._select_map(outcome.primary)
        self.viewer.layers.selection.active = res.mask.layer

    def _clear_result(self) -> None:
        self.result = None
        self._result_box.setEnabled(False)
        self.table.set_rows([])

    def _on_map_changed(self, name: str) -> None:
        if self.result is not None and name in self.result.outcome.maps:
            self._select_map(name)

    def _select_map(self, name: str) -> None:
        res = self.result
        res.map_name = name
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
        self.threshold_value.setText(f"{value:.5g}")
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

    def _refresh_mask(self, *_: Any) -> None:
        if self.result is not None and self.result.mask.is_alive():
            self._update_mask()

    def _on_lesion_clicked(self, row: Any) -> None:
        if self.result is not None and self.result.mask.is_alive():
            focus_lesion(self.viewer, self.result.mask.layer, row)

    def toggle_heatmaps(self) -> None:
        if self.result is None:
            return
        layers = [la for la in self.result.heatmaps.values() if la in self.viewer.layers]
        visible = not any(la.visible for la in layers)
        for la in layers:
            la.visible = visible
