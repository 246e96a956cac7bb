"""The Detect widget's background job: :func:`napari_vae_anomaly.detection.detect_iter` on
one scan, plus what only the display needs (every model's own maps, their thresholds).

The job is a generator (napari ``create_worker``) that yields a :class:`DetectProgress` after
every batch of slices, so the activity bar moves and a cancel takes effect at the next batch.
The core pipeline is itself a generator, so the job runs it in the worker's own thread (no
helper thread, no queue); closing the generator (worker quit) ends the pipeline at its next
batch.

Nothing here touches napari layers: the widget does that with the returned
:class:`DetectOutcome`, on the main thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..detection import DetectionSettings
from ..io import Geometry, Volume
from ..predictors.pipeline import Progress as DetectProgress

ENSEMBLE_MAP = "ensemble"

__all__ = ["DetectOutcome", "DetectProgress", "DetectRequest", "detect_job"]


@dataclass
class DetectRequest:
    """Everything the job needs, captured on the main thread when Run is pressed."""

    data: np.ndarray
    geometry: Geometry
    models: list[Any]  # LoadedModel
    settings: DetectionSettings = field(default_factory=DetectionSettings)

    @property
    def names(self) -> list[str]:
        return self.settings.names

    @property
    def show_ensemble(self) -> bool:
        return self.settings.mask_from == "ensemble"


@dataclass
class DetectOutcome:
    """Maps to display, the one the mask follows, and its calibrated threshold.

    ``result`` is the core :class:`~napari_vae_anomaly.detection.DetectionResult` (the mask
    and lesion table at the settings' threshold, exactly what ``predict`` writes)."""

    maps: dict[str, np.ndarray]
    primary: str
    thresholds: dict[str, float]
    foreground: np.ndarray | None
    mask_maps: dict[str, np.ndarray] = field(default_factory=dict)  # median-filtered, if asked
    cancelled: bool = False
    seconds: float = 0.0
    models: list[str] = field(default_factory=list)  # names, for DICOM SEG descriptions
    result: Any = None  # DetectionResult

    def mask_map(self, name: str) -> np.ndarray:
        return self.mask_maps.get(name, self.maps[name])


def display_maps(result: Any, request: DetectRequest) -> tuple[dict[str, np.ndarray], str]:
    """The maps shown as heatmaps and the one the mask follows (ensemble if any, else first).

    With several models, each model's own maps are shown too, as ``"<predictor> <model>"``.
    """
    maps: dict[str, np.ndarray] = {}
    use_ensemble = request.show_ensemble and result.ensemble is not None
    if use_ensemble:
        maps[ENSEMBLE_MAP] = result.ensemble
    maps.update(result.maps)
    for label, member in (result.member_maps or {}).items():
        for name, arr in member.items():
            maps.setdefault(f"{name} {label}", arr)
    return maps, ENSEMBLE_MAP if use_ensemble else request.names[0]


def detect_job(
    request: DetectRequest, stop: threading.Event
) -> Generator[DetectProgress, None, DetectOutcome]:
    """The whole job: the core detection, then the display's extra maps and filtering."""
    from ..detection import detect_iter
    from ..predictors.pipeline import PredictionCancelled

    t0 = time.perf_counter()
    volume = Volume(np.asarray(request.data), request.geometry)
    try:
        result = yield from detect_iter(volume, request.models, request.settings,
                                        should_stop=stop.is_set)
    except PredictionCancelled:
        return DetectOutcome({}, "", {}, None, cancelled=True, seconds=time.perf_counter() - t0)
    maps, primary = display_maps(result.prediction, request)
    fixed = request.settings.threshold
    thresholds = ({name: float(fixed) for name in maps} if fixed is not None else
                  {name: result.thresholds.values[name] for name in maps
                   if name in result.thresholds.values})
    mask_maps = yield from filtered_maps(maps, primary, result, request.settings.mask_median)
    return DetectOutcome(maps, primary, thresholds, result.prediction.foreground, mask_maps,
                         cancelled=stop.is_set(), seconds=time.perf_counter() - t0,
                         models=[str(getattr(m, "name", m)) for m in request.models],
                         result=result)


def filtered_maps(maps: dict[str, np.ndarray], primary: str, result: Any, size: int
                  ) -> Generator[DetectProgress, None, dict[str, np.ndarray]]:
    """Every shown map median-filtered once (``size`` > 1), so the map combo can switch
    without recomputing; the mask's own map is the core's."""
    if size <= 1:
        return {}
    from ..postprocessing.filters import median_filter_map

    out: dict[str, np.ndarray] = {}
    for i, (name, arr) in enumerate(maps.items()):
        yield DetectProgress(i, len(maps), "median filter")
        out[name] = (result.mask_map if name == primary else
                     median_filter_map(arr, size, result.prediction.foreground))
    return out
