"""What the Detect widget remembers between sessions, and the plugin preferences it honours.

Two layers, on purpose:

* plugin preferences (napari's Preferences dialog, :mod:`napari_vae_anomaly.preferences`):
  default device, model folder, default predictors - the user's standing choices;
* widget state (``QSettings``): the last options used, the models that were listed. Saved
  on every run and on close, restored when the widget opens.

The last-used predictor choice wins over the preference, unless the preference changed since
(then the new preference applies: the user just asked for it). Tests and headless runs
(``NAPARI_VAE_ANOMALY_TESTING`` / ``NAPARI_VAE_ANOMALY_HEADLESS``) neither read nor write
widget state, so their results never depend on a previous session.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from qtpy.QtCore import QSettings

from ..preferences import Preferences, load_preferences

SETTINGS_ORG, SETTINGS_APP = "napari-vae-anomaly", "detect"
NO_STATE_ENV = ("NAPARI_VAE_ANOMALY_TESTING", "NAPARI_VAE_ANOMALY_HEADLESS")


def open_settings() -> QSettings | None:
    """The Detect widget's QSettings, or None where state must not persist (tests, headless)."""
    if any(os.environ.get(k, "") not in ("", "0") for k in NO_STATE_ENV):
        return None
    return QSettings(SETTINGS_ORG, SETTINGS_APP)


def _get(s: QSettings, key: str, typ: type, default: Any) -> Any:
    try:
        v = s.value(key, default)
        return default if v is None else typ(v)
    except (TypeError, ValueError):
        return default


def _as_list(v: Any) -> list[str]:
    if not v:
        return []
    return [v] if isinstance(v, str) else [str(x) for x in v]


def recent_models(s: QSettings | None) -> list[str]:
    """The recently added model files, newest first (none where state is not kept)."""
    return _as_list(s.value("recent_models", None)) if s is not None else []


def model_dialog_folder(s: QSettings | None, prefs: Preferences) -> str:
    """Where 'Add model...' opens: the preferred model folder if it exists, else the last one."""
    if prefs.model_folder and Path(prefs.model_folder).expanduser().is_dir():
        return str(Path(prefs.model_folder).expanduser())
    return str(s.value("model_dir", "") or "") if s is not None else ""


def save_detect_settings(w: Any, s: QSettings | None) -> None:
    """Store the widget's current options (``w`` is a DetectWidget)."""
    if s is None:
        return
    s.setValue("predictors", w.chosen_predictors())
    s.setValue("predictors_pref", ",".join(w.preferences.predictors))
    s.setValue("ensemble", w.ensemble_combo.currentData())
    s.setValue("threshold_mode", w.threshold_mode.currentData())
    s.setValue("fraction", w.fraction.value())
    s.setValue("fixed_threshold", w.fixed_threshold.value())
    s.setValue("min_size", w.min_size.value())
    s.setValue("min_size_unit", w.min_size_unit.currentText())
    s.setValue("median", w.median.isChecked())
    s.setValue("energy_steps", w.energy_steps.value())
    s.setValue("energy_alpha", w.energy_alpha.value())
    s.setValue("energy_lambda", w.energy_lambda.value())
    s.setValue("energy_variant", w.energy_variant.currentData())
    s.setValue("model_paths", [str(m.path) for m in w.models if m.path])
    s.sync()


def load_detect_settings(w: Any, s: QSettings | None, prefs: Preferences | None = None) -> None:
    """Apply the preferences, then the stored options, then re-add the stored models."""
    prefs = prefs or load_preferences()
    w.set_predictors(list(prefs.predictors))
    if s is None:
        return
    stored = _as_list(s.value("predictors", None))
    if stored and str(s.value("predictors_pref", "")) == ",".join(prefs.predictors):
        w.set_predictors(stored)
    for combo, key in ((w.ensemble_combo, "ensemble"), (w.threshold_mode, "threshold_mode"),
                       (w.energy_variant, "energy_variant")):
        i = combo.findData(s.value(key, combo.currentData()))
        if i >= 0:
            combo.setCurrentIndex(i)
    w.fraction.setValue(_get(s, "fraction", float, w.fraction.value()))
    w.fixed_threshold.setValue(_get(s, "fixed_threshold", float, w.fixed_threshold.value()))
    w.min_size.setValue(_get(s, "min_size", float, w.min_size.value()))
    w.min_size_unit.setCurrentText(str(s.value("min_size_unit", "voxels")))
    w.median.setChecked(str(s.value("median", False)).lower() in ("true", "1"))
    w.energy_steps.setValue(_get(s, "energy_steps", int, w.energy_steps.value()))
    w.energy_alpha.setValue(_get(s, "energy_alpha", float, w.energy_alpha.value()))
    w.energy_lambda.setValue(_get(s, "energy_lambda", float, w.energy_lambda.value()))
    for p in _as_list(s.value("model_paths", None)):
        if Path(p).is_file():
            w.add_model_path(p)
