"""Unsupervised anomaly localization in medical scans with (beta-)VAEs.

The core (``io``, ``data``, ``preprocessing``, ``models``, ``training``, ``predictors``,
``postprocessing``, ``metrics``) imports neither Qt nor napari; the napari contributions live
in ``_reader``, ``_writer``, ``_sample_data`` and ``widgets``.
"""

__version__ = "0.1.0"
