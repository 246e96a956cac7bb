"""Plugin preferences shown in napari's Preferences dialog (npe2 ``configurations``).

napari >= 0.9 builds a settings model from the manifest's ``contributions.configurations``
and persists it next to its own settings; :func:`load_preferences` reads it with
``napari.settings.get_plugin_settings``. :data:`CONFIGURATIONS` is the manifest entry, kept
here so the code and the manifest cannot drift (a test compares them). When napari is older,
not installed, or the manifest lacks the entry, the defaults below apply.

No Qt, no torch: the CLI and the widgets both use it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .predictors.registry import DEFAULT_PREDICTORS, PREDICTORS  # torch-free, like this module

PLUGIN = "napari-vae-anomaly"
CONFIGURATION_KEY = "defaults"
DEVICES = ("auto", "cpu", "cuda", "mps")

#: ``contributions.configurations`` of napari.yaml (npe2 0.10 schema)
CONFIGURATIONS: dict[str, Any] = {
    CONFIGURATION_KEY: {
        "title": "VAE Anomaly",
        "properties": {
            "device": {
                "type": "string",
                "enum": list(DEVICES),
                "default": "auto",
                "title": "Compute device",
                "description": "Device models are loaded on (auto: CUDA, then MPS, then CPU)",
            },
            "model_folder": {
                "type": "string",
                "default": "",
                "title": "Model folder",
                "description": "Folder the 'Add model...' dialog opens in (empty: the last one used)",
            },
            "predictors": {
                "type": "string",
                "default": ",".join(DEFAULT_PREDICTORS),
                "title": "Default predictors",
                # no list of names here: napari.yaml copies this text, and a new predictor
                # must not need a manifest edit (the names are in `predict --help`)
                "description": "Comma-separated predictor names checked in the Detect widget "
                               "(unknown names are ignored; all names: napari-vae-anomaly predict --help)",
            },
        },
    }
}


@dataclass(frozen=True)
class Preferences:
    """The values in effect, and where they came from ("napari" or "defaults")."""

    device: str = "auto"
    model_folder: str = ""
    predictors: tuple[str, ...] = DEFAULT_PREDICTORS
    source: str = "defaults"


def parse_predictors(text: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Known predictor names from "a, b c" (unknown ones dropped; none left -> defaults)."""
    items = re.split(r"[,\s]+", text) if isinstance(text, str) else list(text)
    names = tuple(dict.fromkeys(n.strip() for n in items if n.strip() in PREDICTORS))
    return names or DEFAULT_PREDICTORS


def _napari_values() -> Any | None:
    """The plugin's settings category from napari, or None when napari does not provide it."""
    try:
        from napari.settings import get_plugin_settings
    except ImportError:  # napari < 0.9 or not installed
        return None
    try:
        return getattr(get_plugin_settings(PLUGIN), CONFIGURATION_KEY)
    except (KeyError, AttributeError):  # manifest without configurations
        return None
    except Exception:  # noqa: BLE001 - a broken settings file must not stop the plugin
        return None


def load_preferences() -> Preferences:
    """Preferences from napari's plugin settings, falling back to the defaults."""
    values = _napari_values()
    if values is None:
        return Preferences()
    device = str(getattr(values, "device", "auto") or "auto")
    return Preferences(
        device=device if device in DEVICES else "auto",
        model_folder=str(getattr(values, "model_folder", "") or ""),
        predictors=parse_predictors(getattr(values, "predictors", "") or ""),
        source="napari",
    )
