"""Moved to the core: :mod:`napari_vae_anomaly.postprocessing.calibrate` (this name still works)."""

from ..postprocessing.calibrate import Calibration, calibrate, edited_slices, weight_grid

__all__ = ["Calibration", "calibrate", "edited_slices", "weight_grid"]
