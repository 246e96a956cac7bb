"""The Detect widget's controls: scan, models, predictors, mask options, run row, result box.

Kept apart from :mod:`.detect` (which runs jobs and owns the layers) so the form - what the
user can choose and how it reads back as :class:`PredictorOptions` - is in one place.
:class:`DetectFormMixin` builds the controls as attributes of the widget (``w.fraction``,
``w.threshold_slider``...), which the settings (:mod:`.settings`), the demo and the tests use.
"""

from __future__ import annotations

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
    QSlider,
    QSpinBox,
    QVBoxLayout,
)

from ..postprocessing.threshold import DEFAULT_NORMAL_FRACTION
from ..predictors.registry import DEFAULT_PREDICTORS, PredictorOptions
from ._common import LayerCombo, scroll_layout
from .heatmap_layers import is_scan_layer
from .lesion_table import LesionTable

ENSEMBLE_CHOICES = (("none", "none"), ("reference", "mean, normalized on normal data"),
                    ("zscore", "mean of z-scored maps"),
                    ("rank", "mean of rank-normalized maps"))
THRESHOLD_MODES = (("normal", "from normal data (fraction)"), ("fixed", "fixed value"))
SHORTCUTS = {
    "Shift-Up": "raise the threshold",
    "Shift-Down": "lower the threshold",
    "Shift-H": "show or hide the heatmaps",
    "Shift-D": "run detection",
}
SLIDER_STEPS = 1000


def shortcut_help(*keys: str) -> str:
    return "; ".join(f"{k}: {SHORTCUTS[k]}" for k in keys)


class DetectFormMixin:
    """Builds the Detect widget's controls and reads the user's choices back.

    Mixed into :class:`.detect.DetectWidget` (a QWidget); the handlers it connects
    (``run``, ``_on_slider``...) live there and in :class:`.detect_result.DetectResultMixin`.
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

        self._result_box = self._build_result_box()
        lay.addWidget(self._result_box)
        self._connect_form()
        self._sync_enabled()

    def _build_models_box(self) -> QGroupBox:
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
                                       "each with the model's normal-reference statistics (or "
                                       "per volume); the mask follows the ensemble")
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
        self.fraction = QDoubleSpinBox(minimum=0.001, maximum=50.0,
                                       value=100.0 * DEFAULT_NORMAL_FRACTION, decimals=3,
                                       suffix=" %")
        self.fixed_threshold = QDoubleSpinBox(minimum=-1e9, maximum=1e9, value=0.0, decimals=5)
        size_row = QHBoxLayout()
        self.min_size = QDoubleSpinBox(minimum=0.0, maximum=1e6, value=8.0, decimals=3)
        self.min_size_unit = QComboBox()
        self.min_size_unit.addItems(["voxels", "mL"])
        size_row.addWidget(self.min_size)
        size_row.addWidget(self.min_size_unit)
        self.median = QCheckBox("Extra 3-D median (5) of the shown maps")
        self.median.setToolTip("Every map already gets a 3-D median of 5 in the pipeline, before "
                               "its threshold is calibrated on normal data; this filters the "
                               "shown maps once more, after the thresholds were set")
        mf.addRow("Threshold", self.threshold_mode)
        mf.addRow("Normal fraction", self.fraction)
        mf.addRow("Fixed value", self.fixed_threshold)
        mf.addRow("Min lesion size", size_row)
        mf.addRow(self.median)
        return post

    def _build_result_box(self) -> QGroupBox:
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
        res.setEnabled(False)
        return res

    def _connect_form(self) -> None:
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
        return PredictorOptions(energy_steps=self.energy_steps.value(),
                                energy_alpha=self.energy_alpha.value(),
                                energy_lambda=self.energy_lambda.value(),
                                energy_variant=self.energy_variant.currentData())

    def _min_size(self) -> tuple[int, float]:
        """(voxels, mm3): the smallest lesion kept, in the unit the user chose."""
        v = self.min_size.value()
        return (0, v * 1000.0) if self.min_size_unit.currentText() == "mL" else (int(round(v)), 0.0)
