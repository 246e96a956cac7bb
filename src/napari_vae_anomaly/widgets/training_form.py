"""The Training widget's hyper-parameter form and how it reads back as a ``TrainConfig``.

Kept apart from :mod:`.training` (which runs the job and holds the model) so what the user
can choose - and its defaults, taken from the core's ``TrainConfig`` / ``VAEConfig`` - is in
one place. :class:`TrainingFormMixin` builds the controls as attributes of the widget
(``w.size_combo``, ``w.epochs_spin``...), which scripts and tests use.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
)

SIZES = (64, 128, 256)
STOP_EPOCHS, STOP_TIME = "epochs", "time budget"


def _get(obj: Any, *names: str, default: Any = None) -> Any:
    """First attribute (or key) of ``obj`` among ``names`` that is present and not None."""
    for name in names:
        value = obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)
        if value is not None:
            return value
    return default


def _combo(items: list[str], current: str | None = None, tip: str = "") -> QComboBox:
    combo = QComboBox()
    combo.addItems(items)
    if current is not None:
        combo.setCurrentText(current)
    combo.setToolTip(tip)
    return combo


def _combo_items(combo: QComboBox) -> list[str]:
    return [combo.itemText(i) for i in range(combo.count())]


class TrainingFormMixin:
    """Builds the hyper-parameter controls and reads the user's choices back.

    Mixed into :class:`.training.TrainingWidget` (a QWidget), which calls
    :meth:`_build_hyperparameters` while building itself.
    """

    def _build_hyperparameters(self) -> None:
        d = train_defaults()
        self.size_combo = _combo([str(s) for s in SIZES], str(d["size"]),
                                 "Slices are resized to size x size pixels")
        self.features_edit = QLineEdit(",".join(str(f) for f in d["features"]))
        self.features_edit.setToolTip("Feature maps per encoder stage, comma-separated")
        self.latent_spin = QSpinBox(minimum=1, maximum=4096, value=d["latent"])
        self.beta_spin = QDoubleSpinBox(minimum=0.0, maximum=1000.0, decimals=5, singleStep=0.1)
        self.beta_spin.setValue(d["beta"])
        self.beta_spin.setToolTip("Weight of the KL term: loss = reconstruction + beta * KL")
        self.likelihood_combo = _combo(["gaussian", "laplace"], d["likelihood"],
                                       "gaussian: squared error; laplace: absolute error")
        self.stop_mode_combo = _combo([STOP_EPOCHS, STOP_TIME])
        self.epochs_spin = QSpinBox(minimum=1, maximum=100000, value=d["epochs"])
        self.time_spin = QDoubleSpinBox(minimum=1.0, maximum=7 * 24 * 3600.0, decimals=0, suffix=" s")
        self.time_spin.setValue(600.0)
        self.stop_mode_combo.currentTextChanged.connect(self._update_stop_mode)
        self.batch_spin = QSpinBox(minimum=1, maximum=4096, value=d["batch_size"])
        # decimals before the value: a QDoubleSpinBox rounds its value to its decimals
        self.lr_spin = QDoubleSpinBox(minimum=1e-6, maximum=1.0, decimals=6, singleStep=1e-4)
        self.lr_spin.setValue(d["lr"])
        self.seed_spin = QSpinBox(minimum=0, maximum=2**31 - 1, value=d["seed"])
        self.device_combo = _combo(device_choices(), tip="auto: CUDA, then Apple MPS, then CPU")
        self.output_edit = QLineEdit()
        self.output_edit.setPlaceholderText("model file (.safetensors)")
        browse = QPushButton("...")
        browse.setMaximumWidth(32)
        browse.clicked.connect(self._output_dialog)
        out_row = QHBoxLayout()
        out_row.addWidget(self.output_edit)
        out_row.addWidget(browse)
        self.params_box = QGroupBox("Hyper-parameters")
        form = QFormLayout(self.params_box)
        for label, control in (
            ("Slice size", self.size_combo), ("Feature maps", self.features_edit),
            ("Latent size", self.latent_spin), ("Beta (KL weight)", self.beta_spin),
            ("Likelihood", self.likelihood_combo), ("Stop after", self.stop_mode_combo),
            ("Epochs", self.epochs_spin), ("Time budget", self.time_spin),
            ("Batch size", self.batch_spin), ("Learning rate", self.lr_spin),
            ("Seed", self.seed_spin), ("Device", self.device_combo), ("Output model", out_row),
        ):
            form.addRow(label, control)
        self._update_stop_mode()

    def _update_stop_mode(self, *_: Any) -> None:
        """Only the chosen stopping rule (epochs or time budget) is editable."""
        by_time = self.stop_mode_combo.currentText() == STOP_TIME
        self.epochs_spin.setEnabled(not by_time)
        self.time_spin.setEnabled(by_time)

    def _output_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Save model as", self.output_edit.text() or "model.safetensors",
            "Model (*.safetensors);;All files (*)",
        )
        if path:
            self.set_output_path(path)

    def set_output_path(self, path: Any) -> None:
        self.output_edit.setText(str(path))

    def set_hyperparameters(self, **values: Any) -> None:
        """Set form fields by name (size, features, latent, beta, likelihood, epochs,
        time_budget, batch_size, lr, seed, device); for scripts and tests."""
        plain = {"latent": (self.latent_spin, int), "beta": (self.beta_spin, float),
                 "batch_size": (self.batch_spin, int), "lr": (self.lr_spin, float),
                 "learning_rate": (self.lr_spin, float), "seed": (self.seed_spin, int)}
        for key, value in values.items():
            if key in plain:
                spin, kind = plain[key]
                spin.setValue(kind(value))
            elif key == "size":
                if self.size_combo.findText(str(value)) < 0:
                    self.size_combo.addItem(str(value))
                self.size_combo.setCurrentText(str(value))
            elif key == "features":
                self.features_edit.setText(",".join(str(int(f)) for f in value))
            elif key == "likelihood":
                self.likelihood_combo.setCurrentText(str(value))
            elif key == "epochs":
                self.epochs_spin.setValue(int(value))
                self.stop_mode_combo.setCurrentText(STOP_EPOCHS)
            elif key == "time_budget":
                self.time_spin.setValue(float(value))
                self.stop_mode_combo.setCurrentText(STOP_TIME)
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
    from ..devices import available_devices

    return ["auto", *available_devices()]


def make_train_config(params: dict[str, Any]) -> Any:
    """``TrainConfig`` from the form values (see ``TrainingFormMixin.hyperparameters``)."""
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
