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

import json
import os
from pathlib import Path
from typing import Any

from qtpy.QtCore import QSettings

from ..detection import DetectionSettings
from ..preferences import Preferences, load_preferences

SETTINGS_ORG, SETTINGS_APP = "napari-vae-anomaly", "detect"
NO_STATE_ENV = ("NAPARI_VAE_ANOMALY_TESTING", "NAPARI_VAE_ANOMALY_HEADLESS")


def open_settings() -> QSettings | None:
    """The Detect widget's QSettings, or None where state must not persist (tests, headless)."""
    if any(os.environ.get(k, "") not in ("", "0") for k in NO_STATE_ENV):
        return None
    return QSettings(SETTINGS_ORG, SETTINGS_APP)


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
    """Store the widget's current options (``w`` is a DetectWidget) as its typed settings: one
    JSON :class:`~..detection.DetectionSettings`, plus the listed models and the min-size unit."""
    if s is None:
        return
    try:
        settings = w.detection_settings()
    except ValueError:  # e.g. no predictor ticked: nothing valid to remember
        return
    s.setValue("detection", json.dumps(settings.to_dict()))
    s.setValue("predictors_pref", ",".join(w.preferences.predictors))
    s.setValue("min_size_unit", w.min_size_unit.currentText())
    s.setValue("model_paths", [str(m.path) for m in w.models if m.path])
    s.sync()


def stored_detection(s: QSettings) -> DetectionSettings | None:
    """The remembered settings, or None when there are none or they are not valid (another
    version's, edited by hand): the widget then starts from the defaults."""
    text = s.value("detection", None)
    if not text:
        return None
    try:
        d = json.loads(str(text))
        return DetectionSettings.from_dict(d) if isinstance(d, dict) else None
    except ValueError:
        return None


def load_detect_settings(w: Any, s: QSettings | None, prefs: Preferences | None = None) -> None:
    """Apply the preferences, then the stored options, then re-add the stored models."""
    prefs = prefs or load_preferences()
    w.set_predictors(list(prefs.predictors))
    if s is None:
        return
    stored = stored_detection(s)
    if stored is not None:
        if str(s.value("predictors_pref", "")) != ",".join(prefs.predictors):
            stored = stored.replace(predictors=tuple(prefs.predictors))  # just asked for
        w.apply_settings(stored)
        if stored.min_volume <= 0 and str(s.value("min_size_unit", "")) == "mL":
            w.min_size_unit.setCurrentText("mL")  # a 0 mL minimum stays in millilitres
    for p in _as_list(s.value("model_paths", None)):
        if Path(p).is_file():
            w.add_model_path(p)
