"""The "Detect anomalies" dock widget: anomaly maps and a mask over the selected scan.

A view over the core: the maps come from :mod:`napari_vae_anomaly.predictors.pipeline` in a
background worker (:mod:`..workers.detect_worker`), the mask from
:func:`napari_vae_anomaly.postprocessing.mask.make_mask`. Layer creation lives in
:mod:`.heatmap_layers`, the lesion table in :mod:`.lesion_table`.

Results are bound to the layer the job started from (the user may switch layers meanwhile);
a mask the user edited is never overwritten; the threshold slider re-thresholds the cached
map without recomputing anything. Keyboard shortcuts on the viewer: see :data:`SHORTCUTS`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QSettings, Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..predictors.registry import PredictorOptions
from ._common import connect_layer_list, error, info, report_error, warn
from .heatmap_layers import MaskLayer, is_scan_layer, robust_limits, upsert_heatmap
from .lesion_table import LesionTable, focus_lesion, label_lesions, lesions_in
from .settings import load_detect_settings, model_dialog_folder, open_settings, save_detect_settings

if TYPE_CHECKING:
    import napari

DEFAULT_PREDICTORS = ("rec", "kl_grad", "combi")  # overridden by the plugin preferences
ENSEMBLE_CHOICES = (("none", "none"), ("zscore", "mean of z-scored maps"),
                    ("rank", "mean of rank-normalized maps"))
THRESHOLD_MODES = (("normal", "from normal data (fraction)"), ("fixed", "fixed value"))
SHORTCUTS = {
    "Shift-Up": "raise the threshold",
    "Shift-Down": "lower the threshold",
    "Shift-H": "show or hide the heatmaps",
    "Shift-D": "run detection",
}
SLIDER_STEPS = 1000
# On close, wait this long for the job to reach its next batch; after that the thread ends on
# its own (it only checks the stop event and touches no widget), so closing never hangs.
ABORT_WAIT_S = 2.0


def shortcut_help(*keys: str) -> str:
    return "; ".join(f"{k}: {SHORTCUTS[k]}" for k in keys)


class _Result:
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


class DetectWidget(QWidget):
    """Choose scan, models, predictors; run; inspect heatmaps, mask and lesions."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, settings: QSettings | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        from ..preferences import load_preferences

        self.preferences = load_preferences()
        self._settings = settings if settings is not None else open_settings()
        self._models: list[Any] = []  # LoadedModel, parallel to model_list rows
        self._release_after_job: list[Any] = []
        self._closed = False  # set on close: late worker signals must not touch dead widgets
        self._scan_layers: list[Any] = []
        self._job: Any = None
        self._job_source: Any = None
        self._progress_bar: Any = None
        self.result: _Result | None = None
        self._previous_results: dict[int, _Result] = {}  # id(source) -> result, for reuse
        self.last_update_ms = float("nan")
        self._build()
        self._refresh_layers()
        connect_layer_list(self.viewer, self._refresh_layers_safe)
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        self._load_settings()
        self._bind_keys()
        self.destroyed.connect(_make_cleanup(self.viewer, self))

    # ------------------------------------------------------------------ UI
    def _build(self) -> None:
        lay = QVBoxLayout(self)
        form = QFormLayout()
        self.image_combo = QComboBox()
        self.image_combo.setToolTip("Scan to analyse (heatmaps made by this plugin are not listed)")
        form.addRow("Image", self.image_combo)
        lay.addLayout(form)

        models = QGroupBox("Models")
        ml = QVBoxLayout(models)
        self.model_list = QListWidget()
        self.model_list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.model_list.setMaximumHeight(80)
        row = QHBoxLayout()
        self.add_model_button = QPushButton("Add model...")
        self.remove_model_button = QPushButton("Remove")
        self.remove_model_button.setToolTip("Unload the selected models and free their memory")
        row.addWidget(self.add_model_button)
        row.addWidget(self.remove_model_button)
        ml.addWidget(self.model_list)
        ml.addLayout(row)
        lay.addWidget(models)

        preds = QGroupBox("Predictors")
        pl = QVBoxLayout(preds)
        self.predictor_list = QListWidget()
        self.predictor_list.setMaximumHeight(150)
        from ..predictors.registry import PREDICTORS

        for name, pinfo in PREDICTORS.items():
            item = QListWidgetItem(name)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if name in DEFAULT_PREDICTORS
                               else Qt.CheckState.Unchecked)
            item.setToolTip(f"{pinfo.formula}\n{pinfo.description}")
            self.predictor_list.addItem(item)
        pl.addWidget(self.predictor_list)
        pf = QFormLayout()
        defaults = PredictorOptions()  # one source of truth for the energy defaults
        self.energy_steps = QSpinBox(minimum=1, maximum=1000, value=defaults.energy_steps)
        self.energy_alpha = QDoubleSpinBox(minimum=0.0, maximum=10.0, decimals=3,
                                           value=defaults.energy_alpha, singleStep=0.01)
        self.energy_lambda = QDoubleSpinBox(minimum=0.0, maximum=10.0, decimals=3,
                                            value=defaults.energy_lambda, singleStep=0.05)
        self.energy_variant = QComboBox()
        self.energy_variant.addItem("|x0 - xT|", "x0_xT")
        self.energy_variant.addItem("|x0 - f(xT)|", "x0_fxT")
        for w, tip in ((self.energy_steps, "Projection steps T (energy predictor)"),
                       (self.energy_alpha, "Step size alpha (energy predictor)"),
                       (self.energy_lambda, "Weight lambda of ||x - x0||_1 (energy predictor)"),
                       (self.energy_variant, "Which difference the energy map shows")):
            w.setToolTip(tip)
        pf.addRow("Energy steps", self.energy_steps)
        pf.addRow("Alpha", self.energy_alpha)
        pf.addRow("Lambda", self.energy_lambda)
        pf.addRow("Energy map", self.energy_variant)
        self.ensemble_combo = QComboBox()
        for key, text in ENSEMBLE_CHOICES:
            self.ensemble_combo.addItem(text, key)
        self.ensemble_combo.setToolTip("Combine the chosen maps (and models) after normalizing "
                                       "each per volume; the mask follows the ensemble")
        pf.addRow("Ensemble", self.ensemble_combo)
        pl.addLayout(pf)
        lay.addWidget(preds)

        post = QGroupBox("Mask")
        mf = QFormLayout(post)
        self.threshold_mode = QComboBox()
        for key, text in THRESHOLD_MODES:
            self.threshold_mode.addItem(text, key)
        self.threshold_mode.setToolTip("Initial threshold: the score exceeded by this fraction of "
                                       "the model's normal reference voxels, or a fixed value")
        self.fraction = QDoubleSpinBox(minimum=0.001, maximum=50.0, value=1.0, decimals=3,
                                       suffix=" %")
        self.fixed_threshold = QDoubleSpinBox(minimum=-1e9, maximum=1e9, value=0.0, decimals=5)
        size_row = QHBoxLayout()
        self.min_size = QDoubleSpinBox(minimum=0.0, maximum=1e6, value=8.0, decimals=3)
        self.min_size_unit = QComboBox()
        self.min_size_unit.addItems(["voxels", "mL"])
        size_row.addWidget(self.min_size)
        size_row.addWidget(self.min_size_unit)
        self.median = QCheckBox("3-D median filter (5) of the maps")
        mf.addRow("Threshold", self.threshold_mode)
        mf.addRow("Normal fraction", self.fraction)
        mf.addRow("Fixed value", self.fixed_threshold)
        mf.addRow("Min lesion size", size_row)
        mf.addRow(self.median)
        lay.addWidget(post)

        run_row = QHBoxLayout()
        self.run_button = QPushButton("Run")
        self.run_button.setToolTip(f"Compute the maps and the mask ({shortcut_help('Shift-D')})")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.setToolTip("Stop at the next batch of slices")
        run_row.addWidget(self.run_button)
        run_row.addWidget(self.cancel_button)
        lay.addLayout(run_row)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        lay.addWidget(self.status)

        res = QGroupBox("Result")
        rl = QFormLayout(res)
        self.map_combo = QComboBox()
        self.map_combo.setToolTip("The map the mask and lesion table follow "
                                  f"({shortcut_help('Shift-H')})")
        self.threshold_slider = QSlider(Qt.Orientation.Horizontal)
        self.threshold_slider.setRange(0, SLIDER_STEPS)
        self.threshold_slider.setToolTip(
            "Live threshold of the mask (no recomputation). "
            + shortcut_help("Shift-Up", "Shift-Down") + "; " + shortcut_help("Shift-H"))
        self.threshold_value = QLabel("-")
        rl.addRow("Map", self.map_combo)
        rl.addRow("Threshold", self.threshold_slider)
        rl.addRow("", self.threshold_value)
        self.table = LesionTable()
        rl.addRow(self.table)
        res.setToolTip("Keyboard shortcuts in the viewer: " + shortcut_help(*SHORTCUTS))
        lay.addWidget(res)
        res.setEnabled(False)
        self._result_box = res

        self.add_model_button.clicked.connect(self._choose_models)
        self.remove_model_button.clicked.connect(self.remove_selected_models)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.threshold_slider.valueChanged.connect(self._on_slider)
        self.map_combo.currentTextChanged.connect(self._on_map_changed)
        self.table.lesion_clicked.connect(self._on_lesion_clicked)
        self.threshold_mode.currentIndexChanged.connect(self._sync_enabled)
        self.min_size.valueChanged.connect(self._refresh_mask)
        self.min_size_unit.currentIndexChanged.connect(self._refresh_mask)
        self._sync_enabled()

    def _sync_enabled(self) -> None:
        fixed = self.threshold_mode.currentData() == "fixed"
        self.fraction.setEnabled(not fixed)
        self.fixed_threshold.setEnabled(fixed)

    # ------------------------------------------------------------------ layers
    def _refresh_layers_safe(self) -> None:
        try:
            self._refresh_layers()
        except RuntimeError:  # Qt object already deleted
            pass

    def _refresh_layers(self) -> None:
        current = self.selected_layer()
        self._scan_layers = [layer for layer in self.viewer.layers if is_scan_layer(layer)]
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        self.image_combo.addItems([layer.name for layer in self._scan_layers])
        if current in self._scan_layers:
            self.image_combo.setCurrentIndex(self._scan_layers.index(current))
        self.image_combo.blockSignals(False)

    def selected_layer(self) -> Any | None:
        i = self.image_combo.currentIndex()
        layers = getattr(self, "_scan_layers", [])
        return layers[i] if 0 <= i < len(layers) else None

    def select_layer(self, layer: Any) -> None:
        self.image_combo.setCurrentIndex(self._scan_layers.index(layer))

    def _on_layer_removed(self, event: Any) -> None:
        layer = event.value
        if self._job is not None and layer is self._job_source and self._job.running:
            self._job.request_stop()  # its results would have nowhere to go
        if self.result is not None and layer is self.result.source:
            self._clear_result()
        self._previous_results.pop(id(layer), None)

    # ------------------------------------------------------------------ models
    def _choose_models(self) -> None:
        start = model_dialog_folder(self._settings, self.preferences)
        paths, _ = QFileDialog.getOpenFileNames(self, "Add model", start,
                                                "Checkpoints (*.safetensors);;All files (*)")
        for p in paths:
            self.add_model_path(p)

    def add_model_path(self, path: str | Path) -> Any | None:
        """Load a checkpoint and list it (no duplicates); returns the LoadedModel or None."""
        from ..models.checkpoint import load_checkpoint
        from ..training.devices import resolve_device

        path = Path(path)
        for m in self._models:
            if m.path is not None and Path(m.path).resolve() == path.resolve():
                return m
        try:
            loaded = load_checkpoint(path, device=resolve_device(self.preferences.device))
        except Exception as exc:  # noqa: BLE001 - shown to the user as one line
            report_error(exc, f"cannot add model {path.name}")
            return None
        self._models.append(loaded)
        item = QListWidgetItem(loaded.name)
        c = loaded.config
        item.setToolTip(f"{path}\nbeta {c.beta:g}, {c.likelihood} likelihood, size {c.size}\n\n"
                        f"{loaded.summary()}")
        self.model_list.addItem(item)
        if self._settings is not None:
            self._settings.setValue("model_dir", str(path.parent))
        return loaded

    def remove_selected_models(self) -> None:
        rows = sorted((self.model_list.row(i) for i in self.model_list.selectedItems()),
                      reverse=True)
        for r in rows:
            self.remove_model(r)

    def remove_model(self, row: int) -> None:
        """Unlist a model and free its memory (GPU included)."""
        from ..training.devices import release_model

        loaded = self._models.pop(row)
        self.model_list.takeItem(row)
        if self.is_running():  # the job still uses it: free it when the job ends
            self._release_after_job.append(loaded)
        else:
            release_model(loaded)

    @property
    def models(self) -> list[Any]:
        return list(self._models)

    # ------------------------------------------------------------------ options
    def chosen_predictors(self) -> list[str]:
        out = []
        for i in range(self.predictor_list.count()):
            item = self.predictor_list.item(i)
            if item.checkState() == Qt.CheckState.Checked:
                out.append(item.text())
        return out

    def set_predictors(self, names: list[str]) -> None:
        for i in range(self.predictor_list.count()):
            item = self.predictor_list.item(i)
            item.setCheckState(Qt.CheckState.Checked if item.text() in names
                               else Qt.CheckState.Unchecked)

    def predictor_options(self) -> Any:

        return PredictorOptions(energy_steps=self.energy_steps.value(),
                                energy_alpha=self.energy_alpha.value(),
                                energy_lambda=self.energy_lambda.value(),
                                energy_variant=self.energy_variant.currentData())

    def _min_size(self) -> tuple[int, float]:
        v = self.min_size.value()
        return (0, v * 1000.0) if self.min_size_unit.currentText() == "mL" else (int(round(v)), 0.0)

    # ------------------------------------------------------------------ running
    def run(self) -> None:
        """Start a detection on the selected scan (no-op with a message if not ready)."""
        from ..workers._base import start_job
        from ..workers.detect_worker import DetectRequest, detect_job
        from ._common import layer_geometry

        if self._job is not None and self._job.running:
            warn("Detection is already running; cancel it first")
            return
        source = self.selected_layer()
        names = self.chosen_predictors()
        problem = ("no image layer to analyse" if source is None else
                   "no model: add one with 'Add model...'" if not self._models else
                   "no predictor chosen" if not names else "")
        if problem:
            error(f"Cannot detect: {problem}")
            return
        data = np.asarray(source.data)
        try:
            request = DetectRequest(
                data=data, geometry=layer_geometry(source), models=list(self._models),
                names=names, options=self.predictor_options(),
                ensemble=self.ensemble_combo.currentData(),
                threshold_mode=self.threshold_mode.currentData(),
                fraction=self.fraction.value() / 100.0,
                fixed_threshold=self.fixed_threshold.value(),
                median_size=5 if self.median.isChecked() else 0,
            )
        except Exception as exc:  # noqa: BLE001
            report_error(exc, "Cannot detect")
            return
        self._save_settings()
        self._job_source = source
        self._job_t0 = time.perf_counter()
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status.setText(f"Detecting on {source.name}...")
        self._job = start_job(
            detect_job, request,
            on_yield=self._on_progress, on_return=self._on_done,
            on_error=self._on_error, on_finish=self._on_finish,
            description=f"Detect anomalies: {source.name}",
        )

    @property
    def job(self) -> Any:
        return self._job

    def is_running(self) -> bool:
        return self._job is not None and self._job.running

    def cancel(self) -> None:
        """Stop the job at the next batch; its partial result is discarded."""
        if self._job is not None and self._job.running:
            self._job.request_stop()
            self.status.setText("Cancelling at the next batch...")

    def _on_progress(self, p: Any) -> None:
        if self._closed:
            return
        pbar = self._job.pbar if self._job is not None else None
        if pbar is not None and p.total > 0:
            if pbar.total != p.total:
                pbar.total = p.total
            pbar.n = min(p.done, p.total)
            pbar.update(0)  # emits the value event the activity bar listens to
            pbar.set_description(f"Detect: {p.stage}")
        self.status.setText(f"{p.stage}: {p.done}/{p.total}")

    def _on_error(self, exc: BaseException) -> None:
        if self._closed:
            return
        report_error(exc, "Detection failed")
        self.status.setText("Failed")

    def _on_finish(self) -> None:
        if self._release_after_job:
            from ..training.devices import release_model

            for loaded in self._release_after_job:
                release_model(loaded)
            self._release_after_job = []
        if self._closed:
            return
        try:
            self.run_button.setEnabled(True)
            self.cancel_button.setEnabled(False)
        except RuntimeError:  # widget already deleted
            pass

    def _on_done(self, outcome: Any) -> None:
        source, self._job_source = self._job_source, None
        if self._closed:
            return
        if source is None or source not in self.viewer.layers:
            name = getattr(source, "name", "the scan")
            warn(f"Layer {name!r} was removed while detecting; results discarded")
            self.status.setText("Discarded (layer removed)")
            return
        if outcome.cancelled:
            info("Detection cancelled")
            self.status.setText("Cancelled")
            return
        self._show(source, outcome)
        self.status.setText(f"Done in {outcome.seconds:.1f} s on {source.name}")

    # ------------------------------------------------------------------ results
    def _show(self, source: Any, outcome: Any) -> None:
        from ._common import layer_geometry

        prev = self._previous_results.get(id(source))
        res = _Result(self.viewer, source, outcome, tuple(layer_geometry(source).scale))
        if prev is not None:  # reuse our layers: update in place rather than stacking
            res.heatmaps = prev.heatmaps
            res.mask = prev.mask
        for name, arr in outcome.maps.items():
            res.heatmaps[name] = upsert_heatmap(self.viewer, source, name, arr,
                                                outcome.foreground, res.heatmaps.get(name))
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
        self.table.set_rows(lesions_in(labels, score, res.spacing))
        self.last_update_ms = (time.perf_counter() - t0) * 1000.0

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

    # ------------------------------------------------------------------ keys
    def _bind_keys(self) -> None:
        actions = {
            "Shift-Up": lambda _v: self.step_threshold(1),
            "Shift-Down": lambda _v: self.step_threshold(-1),
            "Shift-H": lambda _v: self.toggle_heatmaps(),
            "Shift-D": lambda _v: self.run(),
        }
        for key, func in actions.items():
            self.viewer.bind_key(key, func, overwrite=True)
        self._bound_keys = list(actions)

    def unbind_keys(self) -> None:
        for key in getattr(self, "_bound_keys", []):
            try:
                self.viewer.bind_key(key, None)
            except (KeyError, ValueError):
                pass
        self._bound_keys = []

    # ------------------------------------------------------------------ settings
    def _save_settings(self) -> None:
        save_detect_settings(self, self._settings)

    def _load_settings(self) -> None:
        load_detect_settings(self, self._settings, self.preferences)

    # ------------------------------------------------------------------ closing
    def shutdown(self) -> None:
        """Stop a running job, unbind the shortcuts, save settings (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._job is not None and self._job.running:
            self._job.abort(wait_s=ABORT_WAIT_S)
        self.unbind_keys()
        try:
            self.viewer.layers.events.removed.disconnect(self._on_layer_removed)
        except (TypeError, ValueError, RuntimeError):
            pass
        self._save_settings()

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        self.shutdown()
        super().closeEvent(event)

    # ------------------------------------------------------------------ demo
    def run_demo_detection(self, model: str | Path | None = None, wait: bool = False,
                           timeout_s: float = 300.0, predictors: list[str] | None = None,
                           ensemble: str | None = None) -> dict[str, Any]:
        """Used by ``make demo``: add ``model`` (or the bundled one), run, optionally wait.

        ``predictors``/``ensemble`` override the widget's choice (the demo wants the same
        maps whatever the last session left behind).
        """
        from ..errors import AnomalyError

        if model is None:
            try:
                from ..models import bundled_model_path

                model = bundled_model_path()
            except (ImportError, AnomalyError, FileNotFoundError) as exc:
                report_error(exc, "No demo model")
                return {"detect": "no model available"}
        loaded = self.add_model_path(model)
        if loaded is None:
            return {"detect": f"could not load {model}"}
        if predictors:
            self.set_predictors(list(predictors))
        if ensemble is not None:
            i = self.ensemble_combo.findData(ensemble)
            if i >= 0:
                self.ensemble_combo.setCurrentIndex(i)
        self.run()
        if not wait or self._job is None:
            return {"detect": "started"}
        from qtpy.QtWidgets import QApplication

        t0 = time.perf_counter()
        while self._job.running and time.perf_counter() - t0 < timeout_s:
            QApplication.processEvents()
            time.sleep(0.02)
        QApplication.processEvents()
        res = self.result
        if res is None:
            return {"detect": "timed out" if self._job.running else "no result"}
        return {"detect": {
            "model": str(loaded.path), "models": [str(m.path) for m in self._models],
            "maps": list(res.outcome.maps), "primary": res.map_name,
            "threshold": res.threshold, "lesions": self.table.rowCount(),
            "seconds": res.outcome.seconds,
            "heatmap_layers": [la.name for la in res.heatmaps.values()],
            "mask_layer": res.mask.layer.name if res.mask.layer is not None else None,
        }}


def _make_cleanup(viewer: Any, widget: DetectWidget) -> Any:
    """A closure for ``destroyed`` that does not keep the widget alive nor touch its Qt side."""
    import weakref

    ref = weakref.ref(widget)

    def cleanup(*_: Any) -> None:
        w = ref()
        if w is None or w._closed:
            return
        w._closed = True
        job = w._job
        if job is not None and job.running:
            job.abort(wait_s=ABORT_WAIT_S)
        for key in getattr(w, "_bound_keys", []):
            try:
                viewer.bind_key(key, None)
            except Exception:  # noqa: BLE001 - the viewer may be gone too
                pass

    return cleanup
