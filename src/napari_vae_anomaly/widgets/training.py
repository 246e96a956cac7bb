"""The Training dock widget: choose normal volumes, set hyper-parameters, train, load models.

A view only: the training itself is ``training.train_iter`` run by
``workers.training_worker`` in a napari thread worker that yields every batch. The widget
copies the chosen layers' data in the main thread, shows progress in napari's activity bar, a
live loss plot and a status line, and keeps the loaded model (with its model card) until it
is replaced or unloaded, which frees its (GPU) memory.

Stop asks the core loop to stop at the next batch; it keeps the best model so far and the
worker returns normally. Closing the widget or the viewer aborts the job (stop event + quit).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QObject
from qtpy.QtWidgets import (
    QApplication,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..io.volume import Volume
from ._common import LayerList, error, info, layer_geometry, report_error, warn, when_alive
from .loss_plot import LossPlot
from .model_card import find_value, format_model_card

if TYPE_CHECKING:
    import napari

    from ..workers._base import Job

SIZES = (64, 128, 256)
STOP_EPOCHS, STOP_TIME = "epochs", "time budget"


def _get(obj: Any, *names: str, default: Any = None) -> Any:
    """First attribute (or key) of ``obj`` among ``names`` that is present and not None."""
    for name in names:
        value = obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)
        if value is not None:
            return value
    return default


class _JobGuard(QObject):
    """Holds the running job apart from the widget, so that the widget's ``destroyed``
    signal and the application's ``aboutToQuit`` can still abort it."""

    def __init__(self) -> None:
        super().__init__()
        self.job: Job | None = None

    def abort(self) -> None:
        job, self.job = self.job, None
        if job is not None and job.running:
            job.abort(wait_s=10.0)


class TrainingWidget(QWidget):
    """Train a (beta-)VAE on normal volumes, watch its losses, load and unload models."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self._guard = _JobGuard()
        self.loaded_model: Any = None
        self.last_progress: Any = None
        self._in_progress = False
        self._t_start = 0.0
        self._build_inputs()
        self._build_hyperparameters()
        self._build_run()
        self._build_model()
        layout = QVBoxLayout(self)
        for box in (self.inputs_box, self.params_box, self.run_box, self.model_box):
            layout.addWidget(box)
        layout.addStretch(1)
        self._update_buttons()
        guard = self._guard
        self.destroyed.connect(lambda *_: guard.abort())
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(guard.abort)

    # ================================================================= construction
    def _build_inputs(self) -> None:
        self.layer_list = LayerList(self.viewer)
        self.layer_list.setToolTip("Open Image layers with normal anatomy (Ctrl/Shift: several)")
        self.layer_list.setMaximumHeight(100)
        self.file_list = QListWidget()
        self.file_list.setMaximumHeight(80)
        self.file_list.setSelectionMode(QListWidget.SelectionMode.ExtendedSelection)
        add = QPushButton("Add files...")
        add_dir = QPushButton("Add DICOM folder...")
        remove = QPushButton("Remove")
        add.clicked.connect(self._add_files_dialog)
        add_dir.clicked.connect(self._add_folder_dialog)
        remove.clicked.connect(self._remove_selected_files)
        row = QHBoxLayout()
        for b in (add, add_dir, remove):
            row.addWidget(b)
        lay = QVBoxLayout()
        lay.addWidget(QLabel("Normal image layers"))
        lay.addWidget(self.layer_list)
        lay.addWidget(QLabel("Normal volume files"))
        lay.addWidget(self.file_list)
        lay.addLayout(row)
        self.inputs_box = QGroupBox("Training data (normal scans only)")
        self.inputs_box.setLayout(lay)

    def _build_hyperparameters(self) -> None:
        d = train_defaults()
        self.size_combo = QComboBox()
        self.size_combo.addItems([str(s) for s in SIZES])
        self.size_combo.setCurrentText(str(d["size"]))
        self.size_combo.setToolTip("Slices are resized to size x size pixels")
        self.features_edit = QLineEdit(",".join(str(f) for f in d["features"]))
        self.features_edit.setToolTip("Feature maps per encoder stage, comma-separated")
        self.latent_spin = QSpinBox()
        self.latent_spin.setRange(1, 4096)
        self.latent_spin.setValue(d["latent"])
        self.beta_spin = QDoubleSpinBox()
        self.beta_spin.setDecimals(5)
        self.beta_spin.setRange(0.0, 1000.0)
        self.beta_spin.setSingleStep(0.1)
        self.beta_spin.setValue(d["beta"])
        self.beta_spin.setToolTip("Weight of the KL term: loss = reconstruction + beta * KL")
        self.likelihood_combo = QComboBox()
        self.likelihood_combo.addItems(["gaussian", "laplace"])
        self.likelihood_combo.setCurrentText(d["likelihood"])
        self.likelihood_combo.setToolTip("gaussian: squared error; laplace: absolute error")
        self.stop_mode_combo = QComboBox()
        self.stop_mode_combo.addItems([STOP_EPOCHS, STOP_TIME])
        self.epochs_spin = QSpinBox()
        self.epochs_spin.setRange(1, 100000)
        self.epochs_spin.setValue(d["epochs"])
        self.time_spin = QDoubleSpinBox()
        self.time_spin.setRange(1.0, 7 * 24 * 3600.0)
        self.time_spin.setDecimals(0)
        self.time_spin.setSuffix(" s")
        self.time_spin.setValue(600.0)
        self.stop_mode_combo.currentTextChanged.connect(self._update_buttons)
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(1, 4096)
        self.batch_spin.setValue(d["batch_size"])
        self.lr_spin = QDoubleSpinBox()
        self.lr_spin.setDecimals(6)
        self.lr_spin.setRange(1e-6, 1.0)
        self.lr_spin.setSingleStep(1e-4)
        self.lr_spin.setValue(d["lr"])
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        self.seed_spin.setValue(d["seed"])
        self.device_combo = QComboBox()
        self.device_combo.addItems(device_choices())
        self.device_combo.setToolTip("auto: CUDA, then Apple MPS, then CPU")
        self.output_edit = QLineEdit()
        self.output_edit.setPlaceholderText("model file (.safetensors)")
        browse = QPushButton("...")
        browse.setMaximumWidth(32)
        browse.clicked.connect(self._output_dialog)
        out_row = QHBoxLayout()
        out_row.addWidget(self.output_edit)
        out_row.addWidget(browse)
        form = QFormLayout()
        form.addRow("Slice size", self.size_combo)
        form.addRow("Feature maps", self.features_edit)
        form.addRow("Latent size", self.latent_spin)
        form.addRow("Beta (KL weight)", self.beta_spin)
        form.addRow("Likelihood", self.likelihood_combo)
        form.addRow("Stop after", self.stop_mode_combo)
        form.addRow("Epochs", self.epochs_spin)
        form.addRow("Time budget", self.time_spin)
        form.addRow("Batch size", self.batch_spin)
        form.addRow("Learning rate", self.lr_spin)
        form.addRow("Seed", self.seed_spin)
        form.addRow("Device", self.device_combo)
        form.addRow("Output model", out_row)
        self.params_box = QGroupBox("Hyper-parameters")
        self.params_box.setLayout(form)

    def _build_run(self) -> None:
        self.start_button = QPushButton("Start")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop at the next batch and keep the best model so far")
        self.start_button.clicked.connect(lambda: self.start())
        self.stop_button.clicked.connect(lambda: self.stop())
        row = QHBoxLayout()
        row.addWidget(self.start_button)
        row.addWidget(self.stop_button)
        self.status_label = QLabel("Idle.")
        self.status_label.setWordWrap(True)
        self.loss_plot = LossPlot(min_interval=0.2)
        lay = QVBoxLayout()
        lay.addLayout(row)
        lay.addWidget(self.status_label)
        lay.addWidget(self.loss_plot)
        self.run_box = QGroupBox("Training")
        self.run_box.setLayout(lay)

    def _build_model(self) -> None:
        self.load_button = QPushButton("Load model...")
        self.unload_button = QPushButton("Unload")
        self.unload_button.setToolTip("Forget the model and free its (GPU) memory")
        self.load_button.clicked.connect(self._load_dialog)
        self.unload_button.clicked.connect(lambda: self.unload_model())
        row = QHBoxLayout()
        row.addWidget(self.load_button)
        row.addWidget(self.unload_button)
        self.card_text = QPlainTextEdit()
        self.card_text.setReadOnly(True)
        self.card_text.setMinimumHeight(140)
        self.card_text.setPlaceholderText("No model loaded.")
        lay = QVBoxLayout()
        lay.addLayout(row)
        lay.addWidget(self.card_text)
        self.model_box = QGroupBox("Model")
        self.model_box.setLayout(lay)

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

    # ================================================================= options
    def _output_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Save model as", self.output_edit.text() or "model.safetensors",
            "Model (*.safetensors);;All files (*)",
        )
        if path:
            self.set_output_path(path)

    def set_output_path(self, path: str | Path) -> None:
        self.output_edit.setText(str(path))

    def set_hyperparameters(self, **values: Any) -> None:
        """Set form fields by name (size, features, latent, beta, likelihood, epochs,
        time_budget, batch_size, lr, seed, device); for scripts and tests."""
        for key, value in values.items():
            if key == "size":
                if self.size_combo.findText(str(value)) < 0:
                    self.size_combo.addItem(str(value))
                self.size_combo.setCurrentText(str(value))
            elif key == "features":
                self.features_edit.setText(",".join(str(int(f)) for f in value))
            elif key == "latent":
                self.latent_spin.setValue(int(value))
            elif key == "beta":
                self.beta_spin.setValue(float(value))
            elif key == "likelihood":
                self.likelihood_combo.setCurrentText(str(value))
            elif key == "epochs":
                self.epochs_spin.setValue(int(value))
                self.stop_mode_combo.setCurrentText(STOP_EPOCHS)
            elif key == "time_budget":
                self.time_spin.setValue(float(value))
                self.stop_mode_combo.setCurrentText(STOP_TIME)
            elif key == "batch_size":
                self.batch_spin.setValue(int(value))
            elif key in ("lr", "learning_rate"):
                self.lr_spin.setValue(float(value))
            elif key == "seed":
                self.seed_spin.setValue(int(value))
            elif key == "device":
                if self.device_combo.findText(str(value)) < 0:
                    raise ValueError(f"device {value!r} is not among {_combo_items(self.device_combo)}")
                self.device_combo.setCurrentText(str(value))
            else:
                raise ValueError(f"unknown hyper-parameter {key!r}")

    def hyperparameters(self) -> dict[str, Any]:
        """The form's values (validated: raises ValueError with a one-line message)."""
        try:
            features = tuple(int(f) for f in self.features_edit.text().replace(" ", "").split(",") if f)
        except ValueError:
            raise ValueError(
                f"Feature maps must be comma-separated integers, got '{self.features_edit.text()}'"
            ) from None
        if not features or min(features) < 1:
            raise ValueError("Feature maps must be positive integers, e.g. 16,32,64,256")
        by_time = self.stop_mode_combo.currentText() == STOP_TIME
        return {
            "size": int(self.size_combo.currentText()),
            "features": features,
            "latent": self.latent_spin.value(),
            "beta": self.beta_spin.value(),
            "likelihood": self.likelihood_combo.currentText(),
            "epochs": None if by_time else self.epochs_spin.value(),
            "time_budget": self.time_spin.value() if by_time else None,
            "batch_size": self.batch_spin.value(),
            "lr": self.lr_spin.value(),
            "seed": self.seed_spin.value(),
            "device": self.device_combo.currentText(),
            "out": self.output_edit.text().strip(),
        }

    def build_config(self) -> Any:
        """A ``TrainConfig`` from the form."""
        return make_train_config(self.hyperparameters())

    # ================================================================= training
    @property
    def job(self) -> Job | None:
        return self._guard.job

    def is_running(self) -> bool:
        return self.job is not None and self.job.running

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
        from ..workers.training_worker import start_training

        self.loss_plot.clear()
        self.last_progress = None
        self._t_start = time.monotonic()
        self.status_label.setText(f"Starting: {len(inputs)} volume(s)...")
        self._guard.job = start_training(
            config,
            inputs,
            on_progress=when_alive(self._on_progress),
            on_done=when_alive(self._on_done),
            on_error=when_alive(self._on_error),
            on_finish=when_alive(self._on_finish),
        )
        self._update_buttons()
        return self._guard.job

    def stop(self) -> None:
        """Stop at the next batch; the core keeps the best model so far."""
        if not self.is_running():
            return
        self.job.request_stop()
        self.status_label.setText("Stopping after this batch...")
        self.stop_button.setEnabled(False)

    def _on_progress(self, p: Any) -> None:
        self.last_progress = p
        step = int(_get(p, "step", default=0))
        total = _get(p, "total_steps")
        pbar = self.job.pbar if self.job is not None else None
        # napari's progress bar may process events while it refreshes: never re-enter it
        if pbar is not None and not self._in_progress:
            self._in_progress = True
            try:
                self._advance_bar(pbar, p, step, total)
            finally:
                self._in_progress = False
        self._plot_progress(p, step)
        self.status_label.setText(format_status(p))

    @staticmethod
    def _advance_bar(pbar: Any, p: Any, step: int, total: Any) -> None:
        if total and pbar.total != int(total):
            pbar.total = int(total)
        description = f"Training VAE, epoch {_get(p, 'epoch', default=0)}"
        if pbar.desc != description:
            pbar.set_description(description)
        if step > pbar.n:
            pbar.update(step - pbar.n)

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

    def _on_error(self, exc: BaseException) -> None:
        report_error(exc, "Training failed")
        self.status_label.setText(f"Failed: {exc}".splitlines()[0])

    def _on_finish(self) -> None:
        self.loss_plot.redraw()
        self._update_buttons()

    def _update_buttons(self, *_: Any) -> None:
        running = self.is_running()
        self.start_button.setEnabled(not running)
        self.stop_button.setEnabled(running)
        self.load_button.setEnabled(not running)
        by_time = self.stop_mode_combo.currentText() == STOP_TIME
        self.epochs_spin.setEnabled(not by_time)
        self.time_spin.setEnabled(by_time)

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
            from ..training.devices import available_devices

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
            from ..training.devices import release_model

            release_model(getattr(loaded, "model", loaded))
        except Exception as exc:  # noqa: BLE001
            error(f"Freeing the model's memory failed: {exc}")
        if not quiet:
            info("Model unloaded.")

    # ================================================================= teardown
    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        self._guard.abort()
        super().closeEvent(event)


def _combo_items(combo: QComboBox) -> list[str]:
    return [combo.itemText(i) for i in range(combo.count())]


def format_status(p: Any) -> str:
    """The status line: epoch, step, losses, throughput."""
    parts = [f"epoch {_get(p, 'epoch', default='?')}"]
    step, total = _get(p, "step"), _get(p, "total_steps")
    if step is not None:
        parts.append(f"batch {step}" + (f"/{total}" if total else ""))
    for label, names in (
        ("loss", ("train_loss", "loss")),
        ("rec", ("train_rec", "rec")),
        ("KL", ("train_kl", "kl")),
        ("val", ("val_loss",)),
        ("best val", ("best_val", "best_val_loss")),
    ):
        v = _get(p, *names)
        if isinstance(v, int | float) and np.isfinite(v):
            parts.append(f"{label} {v:.4g}")
    sps = _get(p, "slices_per_s", "slices_per_sec", "throughput")
    if isinstance(sps, int | float):
        parts.append(f"{sps:.0f} slices/s")
    return ", ".join(parts)


def train_defaults() -> dict[str, Any]:
    """Form defaults taken from the core's ``TrainConfig`` / ``VAEConfig`` defaults."""
    from ..models.vae import VAEConfig
    from ..training.config import TrainConfig

    vae = VAEConfig()
    fields = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    epochs = fields.get("epochs")
    return {
        "size": vae.size if vae.size in SIZES else SIZES[0],
        "features": vae.features,
        "latent": vae.latent,
        "beta": vae.beta,
        "likelihood": vae.likelihood,
        "epochs": epochs if isinstance(epochs, int) else 30,
        "batch_size": fields.get("batch_size", 64),
        "lr": fields.get("lr", 1e-3),
        "seed": fields.get("seed", 0),
    }


def device_choices() -> list[str]:
    """'auto' followed by the devices usable now (cuda:N, mps, cpu)."""
    from ..training.devices import available_devices

    return ["auto", *available_devices()]


def make_train_config(params: dict[str, Any]) -> Any:
    """``TrainConfig`` from the widget's form values (see ``TrainingWidget.hyperparameters``)."""
    from ..models.vae import VAEConfig
    from ..training.config import TrainConfig

    vae = VAEConfig(
        size=params["size"],
        features=params["features"],
        latent=params["latent"],
        likelihood=params["likelihood"],
        beta=params["beta"],
    )
    return TrainConfig(
        vae=vae,
        epochs=params["epochs"],
        time_budget_s=params["time_budget"],
        batch_size=params["batch_size"],
        lr=params["lr"],
        seed=params["seed"],
        device=params["device"],
        out=params["out"] or None,
    )
