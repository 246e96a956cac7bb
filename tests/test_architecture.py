"""Layering rules that keep the core usable on headless machines and napari's start-up light."""

from __future__ import annotations

import subprocess
import sys

CORE = [
    "napari_vae_anomaly.io",
    "napari_vae_anomaly.io.dicom_seg",
    "napari_vae_anomaly.data.phantom",
    "napari_vae_anomaly.data.datasets",
    "napari_vae_anomaly.preprocessing",
    "napari_vae_anomaly.models.vae",
    "napari_vae_anomaly.models.checkpoint",
    "napari_vae_anomaly.training.trainer",
    "napari_vae_anomaly.training.distributed",
    "napari_vae_anomaly.predictors.pipeline",
    "napari_vae_anomaly.predictors.calibration",
    "napari_vae_anomaly.detection",
    "napari_vae_anomaly.cli.cohort",
    "napari_vae_anomaly.postprocessing.mask",
    "napari_vae_anomaly.postprocessing.lesions",
    "napari_vae_anomaly.metrics",
    "napari_vae_anomaly.study.runner",
    "napari_vae_anomaly.cli.main",
]

# what napari imports when it discovers the plugin or opens a file / sample / widget
STARTUP = [
    "napari_vae_anomaly._reader",
    "napari_vae_anomaly._writer",
    "napari_vae_anomaly._sample_data",
    "napari_vae_anomaly.widgets.load_volume",
    "napari_vae_anomaly.widgets.training",
    "napari_vae_anomaly.widgets.detect",
    "napari_vae_anomaly.widgets.evaluation",
]


def _loaded_after_import(modules: list[str], watched: list[str]) -> list[str]:
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(','.join(w for w in {watched!r} if w in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         encoding="utf-8", check=True, timeout=120)
    return [m for m in out.stdout.strip().split(",") if m]


def test_core_imports_neither_qt_nor_napari():
    loaded = _loaded_after_import(CORE, ["napari", "qtpy", "PyQt6", "PyQt5", "PySide6", "magicgui"])
    assert loaded == [], f"the core pulled in {loaded}"


def test_napari_facing_modules_do_not_import_torch():
    assert _loaded_after_import(STARTUP, ["torch"]) == []
