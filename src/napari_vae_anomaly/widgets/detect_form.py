"""The Detect widget's controls: scan, models, predictors, mask options, run row.

Kept apart from :mod:`.detect` (which runs jobs and owns the layers) so the form - what the
user can choose and how it reads back as :class:`~..detection.DetectionSettings` - is in
one place; every default comes from those settings.
:class:`DetectFormMixin` builds the controls as attributes of the widget (``w.fraction``,
``w.threshold_slider``...), which the settings (:mod:`.settings`), the demo and the tests use.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
)

from ..detection import DetectionSettings
from ._common import LayerCombo, scroll_layout
from .detect_result import SHORTCUT_HELP
from .heatmap_layers import is_scan_layer

ENSEMBLE_CHOICES = (("none", "none"), ("reference", "mean, normalized on normal data"),
                    ("zscore", "mean of z-scored maps"),
                    ("rank", "mean of rank-normalized maps"))
THRESHOLD_MODES = (("normal", "from normal data (fraction)"), ("fixed", "fixed value"))
SHORTCUTS = {**SHORTCUT_HELP, "Shift-D": "run detection"}
EXTRA_MEDIAN = 5  # the size the "extra median" box asks for
#: every default (and the tooltips' wording) comes from the core settings
DEFAULTS = DetectionSettings()
HELP = {f.name: f.metadata["help"] for f in fields(DetectionSettings)}


def shortcut_help(*keys: str) -> str:
    return "; ".join(f"{k}: {SHORTCUTS[k]}" for k in keys)


class DetectFormMixin:
    """Builds the Detect widget's controls and reads the user's choices back.

    Mixed into :class:`.detect.DetectWidget` (a QWidget); the handlers it connects
    (``run``, ``cancel``...) live there; the Result box is a child widget,
    :class:`.detect_result.ResultPanel` (``w.result_panel``).
    """

    # ------------------------------------------------------------------ building
    def _build(self) -> None:
        lay = scroll_layout(self)
        form = QFormLayout()
        self.image_combo = LayerCombo(self.viewer, accept=is_scan_layer)
        self.image_combo.setToolTip("Scan to analyse (heatmaps made by this plugin are not listed)")
        form.addRow("Image", self.image_combo)
        lay.addLayout(form)
        lay.addWidget(self._build_models_box())
        lay.addWidget(self._build_predictors_box())
        lay.addWidget(self._build_mask_box())

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

        from .detect_result import ResultPanel

        self.result_panel = ResultPanel(self.viewer, self._min_size)
        self.result_panel.setToolTip("Keyboard shortcuts in the viewer: "
                                     + shortcut_help(*SHORTCUTS))
        lay.addWidget(self.result_panel)
        self._connect_form()
        self._sync_enabled()

    def _build_models_box(self) -> QGroupBox:
        models = QGroupBox("Models")
        ml = QVBoxLayout(models)
        self.model_list = QListWidget()
        self.model_list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.model_list.setMaximumHeight(80)
        row = QHBoxLayout()
        self.add_model_button = QPushButton("Add model")
        self.add_model_button.setToolTip("The bundled demo model, the one just trained, recent "
                                         "models, the preferences' model folder, or a file")
        self.remove_model_button = QPushButton("Remove")
        self.remove_model_button.setToolTip("Unload the selected models and free their memory")
        row.addWidget(self.add_model_button)
        row.addWidget(self.remove_model_button)
        ml.addWidget(self.model_list)
        ml.addLayout(row)
        return models

    def _build_predictors_box(self) -> QGroupBox:
        from ..predictors.registry import PREDICTORS

        preds = QGroupBox("Predictors")
        pl = QVBoxLayout(preds)
        self.predictor_list = QListWidget()
        self.predictor_list.setMaximumHeight(150)
        for name, pinfo in PREDICTORS.items():
            item = QListWidgetItem(name)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if name in DEFAULTS.predictors
                               else Qt.CheckState.Unchecked)
            item.setToolTip(f"{pinfo.formula}\n{pinfo.description}")
            self.predictor_list.addItem(item)
        pl.addWidget(self.predictor_list)
        pf = QFormLayout()
        defaults = DEFAULTS  # one source of truth for every default
        self.energy_steps = QSpinBox(minimum=1, maximum=1000, value=defaults.energy_steps)
        self.energy_alpha = QDoubleSpinBox(minimum=0.0, maximum=10.0, decimals=3,
                                           value=defaults.energy_alpha, singleStep=0.01)
        self.energy_lambda = QDoubleSpinBox(minimum=0.0, maximum=10.0, decimals=3,
                                            value=defaults.energy_lambda, singleStep=0.05)
        self.energy_variant = QComboBox()
        self.energy_variant.addItem("|x0 - xT|", "x0_xT")
        self.energy_variant.addItem("|x0 - f(xT)|", "x0_fxT")
        self.energy_variant.setCurrentIndex(self.energy_variant.findData(defaults.energy_variant))
        for w, key in ((self.energy_steps, "energy_steps"), (self.energy_alpha, "energy_alpha"),
                       (self.energy_lambda, "energy_lambda"),
                       (self.energy_variant, "energy_variant")):
            w.setToolTip(HELP[key].capitalize() + " (energy predictor)")
        pf.addRow("Energy steps", self.energy_steps)
        pf.addRow("Alpha", self.energy_alpha)
        pf.addRow("Lambda", self.energy_lambda)
        pf.addRow("Energy map", self.energy_variant)
        self.ensemble_combo = QComboBox()
        for key, text in ENSEMBLE_CHOICES:
            self.ensemble_combo.addItem(text, key)
        self.ensemble_combo.setToolTip("Combine the chosen maps (and models) after normalizing "
                                       "each with the model's normal-reference statistics (or "
                                       "per volume); the mask follows the ensemble")
        ensemble = "none" if DEFAULTS.mask_from == "first" else DEFAULTS.normalize
        self.ensemble_combo.setCurrentIndex(self.ensemble_combo.findData(ensemble))
        pf.addRow("Ensemble", self.ensemble_combo)
        pl.addLayout(pf)
        return preds

    def _build_mask_box(self) -> QGroupBox:
        post = QGroupBox("Mask")
        mf = QFormLayout(post)
        self.threshold_mode = QComboBox()
        for key, text in THRESHOLD_MODES:
            self.threshold_mode.addItem(text, key)
        self.threshold_mode.setToolTip("Initial threshold: the score exceeded by this fraction of "
                                       "the model's normal reference voxels, or a fixed value")
        fixed = DEFAULTS.threshold is not None
        self.threshold_mode.setCurrentIndex(1 if fixed else 0)
        self.fraction = QDoubleSpinBox(minimum=0.001, maximum=50.0,
                                       value=100.0 * DEFAULTS.normal_fraction, decimals=3,
                                       suffix=" %")
        self.fixed_threshold = QDoubleSpinBox(minimum=-1e9, maximum=1e9, decimals=5,
                                              value=DEFAULTS.threshold if fixed else 0.0)
        size_row = QHBoxLayout()
        self.min_size = QDoubleSpinBox(minimum=0.0, maximum=1e6, value=DEFAULTS.min_size,
                                       decimals=3)
        self.min_size.setToolTip(HELP["min_size"].capitalize())
        self.min_size_unit = QComboBox()
        self.min_size_unit.addItems(["voxels", "mL"])
        size_row.addWidget(self.min_size)
        size_row.addWidget(self.min_size_unit)
        self.median = QCheckBox(f"Extra 3-D median ({EXTRA_MEDIAN}) of the shown maps")
        self.median.setChecked(DEFAULTS.mask_median > 1)
        self.median.setToolTip("Every map already gets a 3-D median of 5 in the pipeline, before "
                               "its threshold is calibrated on normal data; this filters the "
                               "shown maps once more, after the thresholds were set")
        mf.addRow("Threshold", self.threshold_mode)
        mf.addRow("Normal fraction", self.fraction)
        mf.addRow("Fixed value", self.fixed_threshold)
        mf.addRow("Min lesion size", size_row)
        mf.addRow(self.median)
        return post

    def _connect_form(self) -> None:
        self._attach_model_menu()
        self.remove_model_button.clicked.connect(self.remove_selected_models)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.threshold_mode.currentIndexChanged.connect(self._sync_enabled)
        self.min_size.valueChanged.connect(self.result_panel.refresh_mask)
        self.min_size_unit.currentIndexChanged.connect(self.result_panel.refresh_mask)

    def _sync_enabled(self) -> None:
        fixed = self.threshold_mode.currentData() == "fixed"
        self.fraction.setEnabled(not fixed)
        self.fixed_threshold.setEnabled(fixed)

    # ------------------------------------------------------------------ reading back
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
        """The predictor options the controls set (the others keep their defaults)."""
        return DEFAULTS.predictor_options().replace(energy_steps=self.energy_steps.value(),
                                energy_alpha=self.energy_alpha.value(),
                                energy_lambda=self.energy_lambda.value(),
                                                    energy_variant=self.energy_variant.currentData())

    def detection_settings(self) -> DetectionSettings:
        """The core detection settings the controls show (what the job runs with)."""
        ensemble = self.ensemble_combo.currentData()
        fixed = self.threshold_mode.currentData() == "fixed"
        min_voxels, min_mm3 = self._min_size()
        return DetectionSettings(
            predictors=tuple(self.chosen_predictors()),
            normalize="reference" if ensemble == "none" else ensemble,
            mask_from="first" if ensemble == "none" else "ensemble",
            threshold=self.fixed_threshold.value() if fixed else None,
            normal_fraction=self.fraction.value() / 100.0,
            mask_median=EXTRA_MEDIAN if self.median.isChecked() else 0,
            min_size=min_voxels, min_volume=min_mm3,
        ).with_options(self.predictor_options())

    def apply_settings(self, s: DetectionSettings) -> None:
        """Show ``s`` in the controls (the inverse of :meth:`detection_settings` for every
        option the form has; the others are not shown and keep their defaults)."""
        self.set_predictors(list(s.predictors))
        ensemble = "none" if s.mask_from == "first" else s.normalize
        for combo, value in ((self.ensemble_combo, ensemble),
                             (self.threshold_mode, "normal" if s.threshold is None else "fixed"),
                             (self.energy_variant, s.energy_variant)):
            i = combo.findData(value)
            if i >= 0:
                combo.setCurrentIndex(i)
        if s.threshold is not None:
            self.fixed_threshold.setValue(s.threshold)
        self.fraction.setValue(100.0 * s.normal_fraction)
        self.median.setChecked(s.mask_median > 0)
        if s.min_volume > 0:
            self.min_size_unit.setCurrentText("mL")
            self.min_size.setValue(s.min_volume / 1000.0)
        else:
            self.min_size_unit.setCurrentText("voxels")
            self.min_size.setValue(s.min_size)
        self.energy_steps.setValue(s.energy_steps)
        self.energy_alpha.setValue(s.energy_alpha)
        self.energy_lambda.setValue(s.energy_lambda)

    def _min_size(self) -> tuple[int, float]:
        """(voxels, mm3): the smallest lesion kept, in the unit the user chose."""
        v = self.min_size.value()
        return (0, v * 1000.0) if self.min_size_unit.currentText() == "mL" else (int(round(v)), 0.0)
