"""The Detect widget's background job: anomaly maps of one scan, and their thresholds.

The job is a generator (napari ``create_worker``) that yields a :class:`DetectProgress` after
every batch of slices, so the activity bar moves and a cancel takes effect at the next batch.
The volume pipeline reports progress through a callback, so it runs in a helper thread whose
callbacks feed a queue that the generator drains; closing the generator (worker quit) sets the
stop event and waits for the current batch to finish, so no thread outlives the job.

Nothing here touches napari layers: the widget does that with the returned
:class:`DetectOutcome`, on the main thread.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..io import Geometry, Volume
from ..postprocessing.threshold import DEFAULT_NORMAL_FRACTION

ENSEMBLES = ("none", "reference", "zscore", "rank")
ENSEMBLE_MAP = "ensemble"


@dataclass
class DetectRequest:
    """Everything the job needs, captured on the main thread when Run is pressed."""

    data: np.ndarray
    geometry: Geometry
    models: list[Any]  # LoadedModel
    names: list[str]
    options: Any  # PredictorOptions
    ensemble: str = "reference"  # "none" | "reference" | "zscore" | "rank" (member normalization)
    threshold_mode: str = "normal"  # "normal" | "fixed"
    fraction: float = DEFAULT_NORMAL_FRACTION
    fixed_threshold: float = 0.0
    median_size: int = 0  # 0/1 = off; the maps are filtered once here, not on every slider move

    @property
    def normalization(self) -> str:
        return "reference" if self.ensemble == "none" else self.ensemble


@dataclass
class DetectProgress:
    done: int
    total: int
    stage: str = "maps"


@dataclass
class DetectOutcome:
    """Maps to display, the one the mask follows, and its calibrated threshold."""

    maps: dict[str, np.ndarray]
    primary: str
    thresholds: dict[str, float]
    foreground: np.ndarray | None
    mask_maps: dict[str, np.ndarray] = field(default_factory=dict)  # median-filtered, if asked
    cancelled: bool = False
    seconds: float = 0.0
    models: list[str] = field(default_factory=list)  # names, for DICOM SEG descriptions

    def mask_map(self, name: str) -> np.ndarray:
        return self.mask_maps.get(name, self.maps[name])


def _run_pipeline(
    request: DetectRequest, stop: threading.Event
) -> Generator[DetectProgress, None, Any]:
    """Run ``predict_volume`` in a helper thread; yield its progress; return its result."""
    from ..predictors.pipeline import predict_volume

    events: queue.Queue = queue.Queue()
    box: dict[str, Any] = {}
    volume = Volume(np.asarray(request.data), request.geometry)

    def target() -> None:
        try:
            box["result"] = predict_volume(
                volume, request.models, request.names, request.options,
                ensemble=request.normalization,
                progress=lambda done, total: events.put((int(done), int(total))),
                should_stop=stop.is_set,
            )
        except BaseException as exc:  # noqa: BLE001 - re-raised in the worker thread below
            box["error"] = exc
        finally:
            events.put(None)

    thread = threading.Thread(target=target, name="detect-pipeline", daemon=True)
    thread.start()
    drained = False
    try:
        while (item := events.get()) is not None:
            yield DetectProgress(*item)
        drained = True
    finally:
        if not drained:  # the generator was closed (worker quit): end the pipeline too
            stop.set()
        thread.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


def display_maps(result: Any, request: DetectRequest) -> tuple[dict[str, np.ndarray], str]:
    """The maps shown as heatmaps and the one the mask follows (ensemble if any, else first).

    With several models, each model's own maps are shown too, as ``"<predictor> <model>"``.
    """
    maps: dict[str, np.ndarray] = {}
    use_ensemble = request.ensemble != "none" and result.ensemble is not None
    if use_ensemble:
        maps[ENSEMBLE_MAP] = result.ensemble
    maps.update(result.maps)
    for label, member in (result.member_maps or {}).items():
        for name, arr in member.items():
            maps.setdefault(f"{name} {label}", arr)
    return maps, ENSEMBLE_MAP if use_ensemble else request.names[0]


def calibrated_thresholds(
    request: DetectRequest, maps: dict[str, np.ndarray], stop: threading.Event
) -> dict[str, float]:
    """Threshold per displayed map: the fixed value, or the score exceeded by ``fraction`` of
    the checkpoint's normal reference voxels (maps without a reference get none)."""
    if request.threshold_mode == "fixed":
        return {name: float(request.fixed_threshold) for name in maps}
    from ..predictors.calibration import normal_thresholds

    found, _source = normal_thresholds(request.models, request.names, request.options,
                                       request.normalization, request.fraction, stop.is_set)
    return {name: found[name] for name in maps if name in found}


def detect_job(
    request: DetectRequest, stop: threading.Event
) -> Generator[DetectProgress, None, DetectOutcome]:
    """The whole job: maps, thresholds, optional median filtering of the maps."""
    from ..predictors.pipeline import PredictionCancelled

    t0 = time.perf_counter()
    try:
        result = yield from _run_pipeline(request, stop)
        maps, primary = display_maps(result, request)
        yield DetectProgress(0, 1, "thresholds")
        thresholds = calibrated_thresholds(request, maps, stop)
    except PredictionCancelled:
        return DetectOutcome({}, "", {}, None, cancelled=True, seconds=time.perf_counter() - t0)
    foreground = result.foreground
    mask_maps: dict[str, np.ndarray] = {}
    if request.median_size > 1:
        from ..postprocessing.filters import median_filter_map

        for i, (name, arr) in enumerate(maps.items()):
            yield DetectProgress(i, len(maps), "median filter")
            mask_maps[name] = median_filter_map(arr, request.median_size, foreground)
    return DetectOutcome(maps, primary, thresholds, foreground, mask_maps,
                         cancelled=stop.is_set(), seconds=time.perf_counter() - t0,
                         models=[str(getattr(m, "name", m)) for m in request.models])
