"""The Training dock widget: choose normal volumes, set hyper-parameters, train, load models.

A view only: the training itself is ``training.train_iter`` run by
``workers.training_worker`` in a napari thread worker that yields every batch. The widget
copies the chosen layers' data in the main thread, shows progress in napari's activity bar, a
live loss plot and a status line, and keeps the loaded model (with its model card) until it
is replaced or unloaded, which frees its (GPU) memory. The hyper-parameter form (and the
module functions ``format_status``, ``train_defaults``, ``device_choices``,
``make_train_config``, re-exported here) lives in :mod:`.training_form`.

Stop asks the core loop to stop at the next batch; it keeps the best model so far and the
worker returns normally. Closing the widget or the viewer aborts the job (stop event + quit).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import (
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..io.volume import Volume
from ._common import (
    LayerList,
    error,
    info,
    layer_geometry,
    report_error,
    scroll_layout,
    warn,
)
from .heatmap_layers import is_scan_layer
from .jobs import JobOwner
from .loss_plot import LossPlot
from .model_card import find_value, format_model_card
from .training_form import (  # noqa: F401 - the form's helpers, re-exported for scripts
    SIZES,
    STOP_EPOCHS,
    STOP_TIME,
    TrainingFormMixin,
    _get,
    device_choices,
    format_status,
    make_train_config,
    train_defaults,
)

if TYPE_CHECKING:
    import napari

    from ..workers._base import Job

def _button(text: str, slot: Any, tip: str = "") -> QPushButton:
    button = QPushButton(text)
    button.setToolTip(tip)
    button.clicked.connect(slot)
    return button


def _row(*widgets: QWidget) -> QHBoxLayout:
    row = QHBoxLayout()
    for w in widgets:
        row.addWidget(w)
    return row


def _box(title: str, *items: QWidget | QHBoxLayout) -> QGroupBox:
    """A group box stacking ``items`` (widgets or layouts) vertically."""
    box = QGroupBox(title)
    lay = QVBoxLayout(box)
    for item in items:
        if isinstance(item, QWidget):
            lay.addWidget(item)
        else:
            lay.addLayout(item)
    return box


class TrainingWidget(TrainingFormMixin, QWidget):
    """Train a (beta-)VAE on normal volumes, watch its losses, load and unload models.

    The hyper-parameter form comes from :class:`.training_form.TrainingFormMixin`.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.loaded_model: Any = None
        self.last_progress: Any = None
        self._t_start = 0.0
        self._build_inputs()
        self._build_hyperparameters()
        self._build_run()
        self._build_model()
        layout = scroll_layout(self)
        for box in (self.inputs_box, self.params_box, self.run_box, self.model_box):
            layout.addWidget(box)
        layout.addStretch(1)
        self.jobs = JobOwner(self, self.status_label, "Training")
        self._update_buttons()

    # ================================================================= construction
    def _build_inputs(self) -> None:
        # scans only: our own heatmaps are not normal training data
        self.layer_list = LayerList(self.viewer, accept=is_scan_layer)
        self.layer_list.setToolTip("Open Image layers with normal anatomy (Ctrl/Shift: several)")
        self.layer_list.setMaximumHeight(100)
        self.file_list = QListWidget()
        self.file_list.setMaximumHeight(80)
        self.file_list.setSelectionMode(QListWidget.SelectionMode.ExtendedSelection)
        self.inputs_box = _box(
            "Training data (normal scans only)",
            QLabel("Normal image layers"), self.layer_list,
            QLabel("Normal volume files"), self.file_list,
            _row(_button("Add files...", self._add_files_dialog),
                 _button("Add DICOM folder...", self._add_folder_dialog),
                 _button("Remove", self._remove_selected_files)),
        )

    def _build_run(self) -> None:
        self.start_button = _button("Start", lambda: self.start())
        self.stop_button = _button("Stop", lambda: self.stop(),
                                   "Stop at the next batch and keep the best model so far")
        self.status_label = QLabel("Idle.")
        self.status_label.setWordWrap(True)
        self.loss_plot = LossPlot(min_interval=0.2)
        self.run_box = _box("Training", _row(self.start_button, self.stop_button),
                            self.status_label, self.loss_plot)

    def _build_model(self) -> None:
        self.load_button = _button("Load model...", self._load_dialog)
        self.unload_button = _button("Unload", lambda: self.unload_model(),
                                     "Forget the model and free its (GPU) memory")
        self.card_text = QPlainTextEdit()
        self.card_text.setReadOnly(True)
        self.card_text.setMinimumHeight(140)
        self.card_text.setPlaceholderText("No model loaded.")
        self.model_box = _box("Model", _row(self.load_button, self.unload_button), self.card_text)

    # ================================================================= inputs
    def _add_files_dialog(self) -> None:
        from .load_volume import _file_filter

        paths, _ = QFileDialog.getOpenFileNames(self, "Normal volumes", "", _file_filter())
        self.add_files(paths)

    def _add_folder_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "DICOM folder of a normal scan")
        if path:
            self.add_files([path])

    def add_files(self, paths: list[str | Path]) -> None:
        """Append files or DICOM folders (read when training starts)."""
        known = set(self.files())
        for p in paths:
            p = str(p)
            if p and p not in known:
                self.file_list.addItem(p)
                known.add(p)

    def _remove_selected_files(self) -> None:
        for item in self.file_list.selectedItems():
            self.file_list.takeItem(self.file_list.row(item))

    def files(self) -> list[str]:
        return [self.file_list.item(i).text() for i in range(self.file_list.count())]

    def select_layers(self, names: list[str]) -> None:
        self.layer_list.select(names)

    # ================================================================= training
    @property
    def job(self) -> Job | None:
        return self.jobs.job

    def is_running(self) -> bool:
        return self.jobs.running

    def _collect_inputs(self) -> list[Any]:
        """Copies of the selected layers' data (main thread) plus the file paths."""
        inputs: list[Any] = []
        for layer in self.layer_list.selected_layers():
            data = np.asarray(layer.data)
            if layer.rgb or data.ndim != 3:
                raise ValueError(f"Layer '{layer.name}' is not a 3-D grey-value volume")
            geo = layer_geometry(layer)
            inputs.append(Volume(np.array(data, copy=True), geo))
        inputs.extend(self.files())
        return inputs

    def start(self) -> Job | None:
        """Validate the form and start training in a worker; None (with a message) if not."""
        if self.is_running():
            warn("Training is already running.")
            return None
        try:
            params = self.hyperparameters()
            if not params["out"]:
                raise ValueError("Choose an output model file first")
            out = Path(params["out"])
            if out.exists():
                raise ValueError(f"Output model {out} exists; choose another file name")
            if not out.parent.is_dir():
                raise ValueError(f"Folder {out.parent} of the output model does not exist")
            inputs = self._collect_inputs()
            if not inputs:
                raise ValueError("Select normal image layers or add normal volume files")
            config = self.build_config()
        except Exception as exc:  # noqa: BLE001 - every form problem is a user error here
            report_error(exc, "Cannot start training")
            return None
        from ..workers.training_worker import training_job

        self.loss_plot.clear()
        self.last_progress = None
        self._t_start = time.monotonic()
        self.status_label.setText(f"Starting: {len(inputs)} volume(s)...")
        job = self.jobs.start(
            training_job, config, inputs, None,
            on_progress=self._on_progress, on_done=self._on_done,
            on_finish=self._on_finish, description="Training VAE",
        )
        self._update_buttons()
        return job

    def stop(self) -> None:
        """Stop at the next batch; the core keeps the best model so far."""
        if self.jobs.stop():
            self.stop_button.setEnabled(False)

    def _on_progress(self, p: Any) -> str:
        self.last_progress = p
        step = int(_get(p, "step", default=0))
        self._plot_progress(p, step)
        self.jobs.advance(step, _get(p, "total_steps"),
                          f"Training VAE, epoch {_get(p, 'epoch', default=0)}")
        return format_status(p)

    def _plot_progress(self, p: Any, step: int) -> None:
        plot = self.loss_plot
        xs, _ = plot.series("train_loss")
        if not xs or xs[-1] != step:  # the final 'done' item repeats the last batch
            plot.add_point("train_loss", step, _get(p, "train_loss", "loss"))
            plot.add_point("train_rec", step, _get(p, "train_rec", "rec"))
            plot.add_point("train_kl", step, _get(p, "train_kl", "kl"))
        val = _get(p, "val_loss")
        if val is not None and _get(p, "epoch_end", "end_of_epoch", default=True):
            xs, _ = plot.series("val_loss")
            if not xs or xs[-1] != step:
                plot.add_point("val_loss", step, val)
                plot.add_point("val_rec", step, _get(p, "val_rec"))
                plot.add_point("val_kl", step, _get(p, "val_kl"))

    def _on_done(self, result: Any) -> None:
        """The worker returned a ``TrainResult``: announce the kept model and load it."""
        path = _get(result, "path") if result is not None else None
        if path is None or not Path(path).exists():
            warn("Training ended before a model was saved.")
            self.status_label.setText("Ended without a saved model.")
            return
        from ..models.catalog import remember_trained

        remember_trained(path)  # offered at once in the Detect widget's model menu
        reason = _get(result, "stopped_reason", default="completed")
        best = _get(result, "best_val")
        extra = f", best validation loss {best:.4g}" if isinstance(best, int | float) else ""
        epoch = _get(result, "best_epoch")
        extra += f" (epoch {epoch})" if epoch is not None else ""
        how = "stopped" if reason == "stopped" else f"finished ({reason.replace('_', ' ')})"
        info(f"Training {how}; best model saved to {path}{extra}")
        last = f"\nLast batch: {format_status(self.last_progress)}" if self.last_progress else ""
        self.status_label.setText(f"Training {how}. Model: {path}{extra}{last}")
        loaded = _get(result, "loaded")
        if loaded is not None:
            self._set_model(loaded, path)
        else:
            self.load_model(path)

    def _on_finish(self) -> None:
        self.loss_plot.redraw()
        self._update_buttons()

    def _update_buttons(self, *_: Any) -> None:
        running = self.is_running()
        self.start_button.setEnabled(not running)
        self.stop_button.setEnabled(running)
        self.load_button.setEnabled(not running)

    # ================================================================= models
    def _load_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Load model", "", "Model (*.safetensors);;All files (*)"
        )
        if path:
            self.load_model(path)

    def load_model(self, path: str | Path) -> Any:
        """Load a checkpoint (replacing and freeing the current one) and show its card."""
        try:
            from ..models.checkpoint import load_checkpoint

            loaded = load_checkpoint(path, device=self._model_device())
        except Exception as exc:  # noqa: BLE001 - shown as a notification
            report_error(exc, f"Cannot load model {Path(path).name}")
            return None
        self._set_model(loaded, path)
        card = loaded.card or {}
        beta, lik = find_value(card, "beta"), find_value(card, "likelihood")
        info(f"Loaded model {Path(path).name} (beta {beta}, {lik} likelihood)")
        return loaded

    def _set_model(self, loaded: Any, path: str | Path) -> None:
        """Make ``loaded`` the current model (freeing the previous one), show its card."""
        if loaded is not self.loaded_model:
            self.unload_model(quiet=True)
        self.loaded_model = loaded
        self.card_text.setPlainText(format_model_card(loaded.card or {}, path=str(path)))
        self._update_buttons()

    def _model_device(self) -> str:
        device = self.device_combo.currentText() or "cpu"
        if device == "auto":
            from ..devices import available_devices

            return available_devices()[0]
        return device

    def unload_model(self, quiet: bool = False) -> None:
        """Forget the current model and free its memory (GPU caches included)."""
        loaded, self.loaded_model = self.loaded_model, None
        self.card_text.clear()
        if loaded is None:
            if not quiet:
                info("No model loaded.")
            return
        try:
            from ..devices import release_model

            release_model(getattr(loaded, "model", loaded))
        except Exception as exc:  # noqa: BLE001
            error(f"Freeing the model's memory failed: {exc}")
        if not quiet:
            info("Model unloaded.")

    # ================================================================= teardown
    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        self.jobs.close()
        super().closeEvent(event)

