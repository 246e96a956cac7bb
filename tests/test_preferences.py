"""Plugin preferences: the manifest entry is valid for npe2, and the values are read back."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from napari_vae_anomaly import preferences
from napari_vae_anomaly.preferences import (
    CONFIGURATION_KEY,
    CONFIGURATIONS,
    DEFAULT_PREDICTORS,
    Preferences,
    load_preferences,
    parse_predictors,
)


def test_configurations_validate_against_npe2():
    from npe2.manifest.contributions import ConfigurationContribution

    conf = ConfigurationContribution.model_validate(CONFIGURATIONS[CONFIGURATION_KEY])
    assert set(conf.properties) == {"device", "model_folder", "predictors"}
    assert conf.properties["device"].default == "auto"


def test_manifest_carries_the_same_configurations():
    manifest = Path(__file__).resolve().parents[1] / "napari.yaml"
    contributions = yaml.safe_load(manifest.read_text())["contributions"]
    if "configurations" not in contributions:
        pytest.skip("napari.yaml has no configurations yet (the lead adds them)")
    assert contributions["configurations"] == CONFIGURATIONS


def test_parse_predictors_keeps_known_names_in_order():
    assert parse_predictors("combi, rec  energy,bogus,rec") == ("combi", "rec", "energy")
    assert parse_predictors("nothing known") == DEFAULT_PREDICTORS


def test_load_preferences_reads_napari_settings(monkeypatch):
    values = SimpleNamespace(device="cpu", model_folder="/models", predictors="energy,combi")
    monkeypatch.setattr(preferences, "_napari_values", lambda: values)
    assert load_preferences() == Preferences("cpu", "/models", ("energy", "combi"), "napari")
    values.device = "quantum"
    assert load_preferences().device == "auto"


def test_load_preferences_falls_back_to_defaults(monkeypatch):
    monkeypatch.setattr(preferences, "_napari_values", lambda: None)
    assert load_preferences() == Preferences()
