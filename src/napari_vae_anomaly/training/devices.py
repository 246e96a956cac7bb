"""Moved to :mod:`napari_vae_anomaly.devices` (models and predictors need it too); kept so that
older imports keep working."""

from ..devices import DEVICE_CHOICES, available_devices, release_model, resolve_device

__all__ = ["DEVICE_CHOICES", "available_devices", "release_model", "resolve_device"]
