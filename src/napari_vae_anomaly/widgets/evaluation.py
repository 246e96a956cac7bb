"""The Evaluation dock widget: metrics of anomaly maps against a ground truth, and calibration.

A thin view. Metrics come from :func:`workers.evaluation_worker.evaluate_maps` (run in a napari
worker), the plots from :func:`metrics.plots.draw_roc_pr`, the calibration from
:mod:`postprocessing.calibrate`.

**Evaluate**: the chosen maps (heatmap Image layers, or a Labels mask) against a ground-truth
Labels layer, inside an optional foreground layer (its nonzero voxels). Dice is taken at each
map's threshold: the fixed value in the box when ticked, else the threshold stored by the
Detect widget in ``metadata["vae_anomaly"]["threshold"]``, else (shown as such) the 99th
percentile of the map's foreground; a Labels map uses ``> 0``. The oracle Dice is the best over
all thresholds on these labels and is labelled as an oracle.

**Calibrate from my corrections**: the user corrects the detector's mask (a Labels layer) on a
few slices. The slices they touched are those where the layer differs from its *reference*:
``metadata["anomaly_original_mask"]`` when the Detect widget stored one, else a copy this widget
takes when the layer is first chosen as the corrected mask (or when "Snapshot" is pressed, i.e.
before correcting). Alternatively a slice range can be given. On those slices the threshold
(and, for several maps, the weights of a weighted mean of their z-scored maps) maximizing Dice
is fitted and applied to the whole volume in a NEW Labels layer; the corrected layer is never
changed. Slices are taken along the first axis napari is not displaying (axis 0 by default).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..postprocessing.calibrate import Calibration, calibrate, edited_slices
from ._common import (
    LayerCombo,
    LayerList,
    fit_columns,
    info,
    readable_headers,
    report_error,
    scroll_layout,
    user_errors,
    warn,
)
from .heatmap_layers import (  # keys the Detect widget writes
    ORIGINAL_KEY,
    TAG,
    role_of,
    unique_layer_name,
)
from .jobs import CANCELLED, JobOwner

if TYPE_CHECKING:
    import napari

COLUMNS = (
    ("auroc", "AUROC"),
    ("auprc", "AUPRC"),
    ("threshold", "threshold"),
    ("dice", "Dice @ threshold"),
    ("oracle_dice", "oracle Dice\n(best, on these labels)"),
    ("slice_auroc_max", "slice AUROC\n(max)"),
)
HEADER_TIPS = {
    "AUROC": "Area under the ROC curve over the voxels counted (inside the foreground)",
    "AUPRC": "Area under the precision-recall curve (average precision)",
    "threshold": "The map's threshold used for Dice",
    "Dice @ threshold": "Dice of the map thresholded at the threshold column",
    "oracle Dice\n(best, on these labels)":
        "Best Dice over all thresholds on these very labels: an upper bound, not the method's Dice",
    "slice AUROC\n(max)": "Slice-level AUROC from each slice's maximum score",
}


#: the Foreground entry (default) for "where the detection scored": the foreground of the scan
#: the maps were computed from, found the way the detection finds it
SCAN_FOREGROUND = "(the detection's foreground)"


def _is_detection_mask(layer: Any) -> bool:
    """A mask the Detect widget made (the one a user corrects), never a ground truth."""
    return role_of(layer) == "mask" or ORIGINAL_KEY in getattr(layer, "metadata", {})


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _is_labels(layer: Any) -> bool:
    from napari.layers import Labels

    return isinstance(layer, Labels)


def _is_image(layer: Any) -> bool:
    from napari.layers import Image

    return isinstance(layer, Image) and not getattr(layer, "rgb", False)


class EvaluationWidget(QWidget):
    """Metrics and ROC/PR plots of maps vs ground truth; threshold calibration from edits."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self._snapshots: dict[int, np.ndarray] = {}  # id(layer) -> mask copy (reference)
        self.evaluation: Any = None  # last MapsEvaluation
        self.calibration: Calibration | None = None
        self.calibrated_layer: Any = None
        self._pending_notes: list[str] = []
        self.evaluation_foreground: np.ndarray | None = None  # the voxels the last run counted

        layout = scroll_layout(self)
        form = QFormLayout()
        self.maps = LayerList(napari_viewer, accept=lambda ly: _is_image(ly) or _is_labels(ly))
        self.maps.setMaximumHeight(110)
        self.maps.setToolTip("Heatmap Image layers (or a Labels mask) to evaluate; several for an ensemble")
        form.addRow("Anomaly maps", self.maps)
        self.truth = LayerCombo(napari_viewer, accept=_is_labels)
        form.addRow("Ground truth", self.truth)
        self.foreground = LayerCombo(
            napari_viewer, accept=lambda ly: _is_labels(ly) or _is_image(ly), optional=True,
            first=(SCAN_FOREGROUND,),
        )
        self.foreground.setToolTip(
            "Only voxels where this layer is nonzero count (e.g. the brain). Default: the "
            "foreground of the scan the maps came from, where the detection scored"
        )
        form.addRow("Foreground", self.foreground)
        thr = QHBoxLayout()
        self.fixed = QCheckBox("fixed")
        self.threshold = QDoubleSpinBox()
        self.threshold.setDecimals(4)
        self.threshold.setRange(-1e9, 1e9)
        self.threshold.setEnabled(False)
        self.fixed.toggled.connect(self.threshold.setEnabled)
        thr.addWidget(self.fixed)
        thr.addWidget(self.threshold)
        form.addRow("Threshold", thr)
        layout.addLayout(form)
        self.evaluate_button = QPushButton("Evaluate")
        self.evaluate_button.clicked.connect(self.evaluate)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop after the current map; nothing is shown")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        buttons.addWidget(self.evaluate_button)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        self.jobs = JobOwner(self, self.status, "Evaluation")
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels([c[1] for c in COLUMNS])
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setMinimumHeight(90)
        readable_headers(self.table, HEADER_TIPS)
        layout.addWidget(self.table)
        self.notes = QLabel("")
        self.notes.setWordWrap(True)
        layout.addWidget(self.notes)
        self._make_canvas(layout)
        layout.addWidget(self._make_calibration_box())
        layout.addStretch(1)

        self.corrected.currentTextChanged.connect(self._remember_reference)

    # ------------------------------------------------------------------ building
    def _make_canvas(self, layout: QVBoxLayout) -> None:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(5, 2.4), layout="constrained")
        self.ax_roc, self.ax_pr = self.figure.subplots(1, 2)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(200)
        layout.addWidget(self.canvas)

    def _make_calibration_box(self) -> QGroupBox:
        box = QGroupBox("Calibrate from my corrections")
        form = QFormLayout(box)
        self.corrected = LayerCombo(self.viewer, accept=_is_labels, optional=True,
                                    prefer=_is_detection_mask)
        self.corrected.setToolTip(
            "The mask you corrected on a few slices (it is never changed; the result is a new layer)"
        )
        form.addRow("Corrected mask", self.corrected)
        self.snapshot_button = QPushButton("Snapshot (before correcting)")
        self.snapshot_button.setToolTip(
            "Remember the mask as it is now; slices that differ later count as corrected"
        )
        self.snapshot_button.clicked.connect(lambda: self._remember_reference(force=True))
        form.addRow(self.snapshot_button)
        rng = QHBoxLayout()
        self.use_range = QCheckBox("slices")
        self.first = QSpinBox()
        self.last = QSpinBox()
        for s in (self.first, self.last):
            s.setRange(0, 100_000)
            s.setEnabled(False)
            self.use_range.toggled.connect(s.setEnabled)
        rng.addWidget(self.use_range)
        rng.addWidget(self.first)
        rng.addWidget(QLabel("to"))
        rng.addWidget(self.last)
        form.addRow("Use range", rng)
        self.calibrate_button = QPushButton("Calibrate from my corrections")
        self.calibrate_button.clicked.connect(self.calibrate)
        form.addRow(self.calibrate_button)
        self.fit_label = QLabel("")
        self.fit_label.setWordWrap(True)
        form.addRow(self.fit_label)
        return box

    # ------------------------------------------------------------------ layers
    def select_maps(self, names: list[str]) -> None:
        self.maps.select(names)

    def selected_map_layers(self) -> list[Any]:
        return self.maps.selected_layers()

    def slicing_axis(self) -> int:
        """The first axis napari does not display (the one slices are taken along)."""
        dims = self.viewer.dims
        hidden = [a for a in dims.order if a not in dims.displayed]
        return int(hidden[0]) if hidden else 0

    def _foreground(self, shape: tuple[int, ...], maps: list[Any]) -> np.ndarray | None:
        """The voxels that count: the chosen layer's nonzero voxels, or (default) the
        foreground of the scan the maps were detected on; None = every voxel."""
        if self.foreground.currentText() == SCAN_FOREGROUND:
            return self._scan_foreground(shape, maps)
        layer = self.foreground.layer()
        if layer is None:
            return None
        fg = np.asarray(layer.data) != 0
        if fg.shape != shape:
            raise ValueError(f"foreground {layer.name!r} has shape {fg.shape}, the maps {shape}")
        return fg

    def _scan_foreground(self, shape: tuple[int, ...], maps: list[Any]) -> np.ndarray | None:
        from ..preprocessing import foreground_mask

        for ly in maps:
            tag = ly.metadata.get(TAG) or {}
            name = tag.get("source") if isinstance(tag, dict) else None
            if name and name in self.viewer.layers:
                data = np.asarray(self.viewer.layers[name].data)
                if data.shape == shape:
                    return foreground_mask(data)
        self._pending_notes.append("no detection scan found for these maps: every voxel counts")
        return None

    def _threshold_of(self, layer: Any) -> tuple[float, str]:
        if _is_labels(layer):
            return 0.0, "label > 0"
        if self.fixed.isChecked():
            return float(self.threshold.value()), "fixed"
        tag = layer.metadata.get(TAG) or {}
        if isinstance(tag, dict) and tag.get("threshold") is not None:
            return float(tag["threshold"]), "from the detection"
        return math.nan, "p99"

    # ------------------------------------------------------------------ evaluation
    def _collect(self) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray | None, dict[str, float], list[str]]:
        layers = self.selected_map_layers()
        truth_layer = self.truth.layer()
        if not layers:
            raise ValueError("choose at least one anomaly map")
        if truth_layer is None:
            raise ValueError("choose a ground-truth Labels layer")
        truth = np.asarray(truth_layer.data)
        maps = {ly.name: np.asarray(ly.data, dtype=np.float32) for ly in layers if ly is not truth_layer}
        self._pending_notes = notes = []
        fg = self._foreground(truth.shape, layers)
        thresholds = {}
        for ly in layers:
            if ly is truth_layer:
                continue
            t, how = self._threshold_of(ly)
            if how == "p99":
                vals = maps[ly.name][fg] if fg is not None else maps[ly.name]
                t = float(np.percentile(vals, 99)) if vals.size else 0.0
                notes.append(f"{ly.name}: threshold = 99th percentile of the map (no threshold set)")
            thresholds[ly.name] = t
        return maps, truth, fg, thresholds, notes

    def evaluate(self) -> Any:
        """Compute the metrics in a worker (the table and plots update when it returns);
        returns the job, or None (with a message) when the form is incomplete."""
        from ..workers.evaluation_worker import evaluation_job

        if self.jobs.running:
            warn("Evaluation is already running")
            return None
        try:
            maps, truth, fg, thresholds, _notes = self._collect()
        except ValueError as exc:
            report_error(exc, "Cannot evaluate")
            return None
        self.evaluation_foreground = fg
        self.evaluate_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status.setText(f"Evaluating {len(maps)} map(s)...")
        return self.jobs.start(
            evaluation_job, maps, truth, fg, thresholds, self.slicing_axis(),
            on_progress=self._on_progress, on_done=self._show, on_finish=self._on_finish,
            description="Evaluate maps",
        )

    @property
    def job(self) -> Any:
        return self.jobs.job

    def cancel(self) -> None:
        """Stop after the current map; nothing is shown and the status says so."""
        self.jobs.cancel("Cancelling after this map...")

    def _on_progress(self, p: tuple[int, int]) -> str:
        self.jobs.advance(p[0], p[1], "Evaluate maps")
        return f"maps: {p[0]}/{p[1]}"

    def _on_finish(self) -> None:
        self.evaluate_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _show(self, evaluation: Any) -> None:
        from ..metrics.plots import draw_roc_pr

        if evaluation is None:  # stopped before the end
            self.status.setText(CANCELLED)
            return
        self.evaluation = evaluation
        rows = evaluation.result.rows
        self.table.setRowCount(len(rows))
        self.table.setVerticalHeaderLabels([str(r.get("predictor", "")) for r in rows])
        for i, row in enumerate(rows):
            for j, (key, _) in enumerate(COLUMNS):
                self.table.setItem(i, j, QTableWidgetItem(_fmt(row.get(key))))
        fit_columns(self.table)
        self.notes.setText("\n".join([*getattr(self, "_pending_notes", []), *evaluation.result.notes]))
        self.ax_roc.clear()
        self.ax_pr.clear()
        draw_roc_pr(self.ax_roc, self.ax_pr, evaluation.curves, evaluation.prevalence)
        self.canvas.draw_idle()
        where = "every voxel" if self.evaluation_foreground is None else "inside the foreground"
        self.status.setText(f"Done: {len(rows)} map(s), {where}.")

    # ------------------------------------------------------------------ calibration
    def _remember_reference(self, *_: Any, force: bool = False) -> None:
        layer = self.corrected.layer()
        if layer is None:
            return
        if force or id(layer) not in self._snapshots:
            self._snapshots[id(layer)] = np.array(layer.data, copy=True)
            if force:
                info(f"Snapshot of {layer.name!r} taken: correct it, then press Calibrate")

    def reference_of(self, layer: Any) -> np.ndarray | None:
        """The mask before the user's corrections (see the module docstring)."""
        ref = layer.metadata.get(ORIGINAL_KEY)
        if ref is not None and np.shape(ref) == np.shape(layer.data):
            return np.asarray(ref)
        return self._snapshots.get(id(layer))

    def corrected_slices(self, layer: Any, axis: int) -> np.ndarray:
        if self.use_range.isChecked():
            lo, hi = sorted((self.first.value(), self.last.value()))
            return np.arange(lo, min(hi, layer.data.shape[axis] - 1) + 1)
        ref = self.reference_of(layer)
        if ref is None:
            raise ValueError("no reference copy of the mask: press Snapshot before correcting, or give a slice range")
        return edited_slices(np.asarray(layer.data), ref, axis)

    def calibrate(self) -> None:
        """Fit threshold (and weights) on the corrected slices; add the result as a new layer."""
        with user_errors("Calibrate"):
            layer = self.corrected.layer()
            if layer is None:
                raise ValueError("choose the corrected mask (a Labels layer)")
            maps_layers = [ly for ly in self.selected_map_layers() if _is_image(ly)]
            if not maps_layers:
                raise ValueError("choose one or more heatmap Image layers as anomaly maps")
            axis = self.slicing_axis()
            slices = self.corrected_slices(layer, axis)
            if slices.size == 0:
                raise ValueError(f"{layer.name!r} has no corrected slice yet (it equals its snapshot)")
            maps = [np.asarray(ly.data, dtype=np.float32) for ly in maps_layers]
            corrected = np.asarray(layer.data)
            self._pending_notes = []
            fg = self._foreground(corrected.shape, maps_layers)
            ref = self.reference_of(layer)
            default = None
            if ref is None and len(maps) == 1:
                default = self._threshold_of(maps_layers[0])[0]
            cal = calibrate(maps, corrected, slices, axis, fg, before=ref, default_threshold=default)
            self.calibration = cal
            mask = cal.apply(maps, fg)
            kwargs = {
                "scale": tuple(layer.scale),
                "translate": tuple(layer.translate),
                # not the detection's tag nor its original: this mask is the calibration's
                "metadata": {
                    k: v for k, v in layer.metadata.items() if k not in (ORIGINAL_KEY, TAG)
                }
                | {
                    "calibration": {
                        "threshold": cal.threshold,
                        "weights": list(cal.weights),
                        "maps": [ly.name for ly in maps_layers],
                        "slices": list(cal.slices),
                        "axis": axis,
                        "dice_before": cal.dice_before,
                        "dice_after": cal.dice_after,
                    }
                },
            }
            self.calibrated_layer = self.viewer.add_labels(
                mask, name=unique_layer_name(self.viewer, f"{layer.name} calibrated"), opacity=0.7, **kwargs
            )
            names = ", ".join(f"{ly.name} {w:.2f}" for ly, w in zip(maps_layers, cal.weights, strict=True))
            text = (
                f"Fit on {len(cal.slices)} corrected slices: Dice {_fmt(cal.dice_before)} before, "
                f"{_fmt(cal.dice_after)} after; threshold {cal.threshold:.4g}"
                + (f"; weights {names}" if len(maps) > 1 else "")
                + "".join(f"\n{n}" for n in cal.notes)
            )
            self.fit_label.setText(text)
            if cal.dice_after < cal.dice_before:
                warn("Calibration fits the corrected slices worse than the original mask")
