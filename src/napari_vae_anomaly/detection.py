"""One detection pipeline for the CLI, the Detect widget and the demo.

Why: the CLI and the GUI each worked out the maps, the ensemble rule, the threshold and the
mask on their own, and their defaults drifted apart. Here :class:`DetectionSettings` holds
every detection option once, with its default, help text and CLI flag (``predict``'s options
are generated from it, the widget reads its defaults from it), and :func:`detect_iter` /
:func:`detect` compute maps -> ensemble -> threshold -> mask -> lesion table for one volume.

Qt-free and torch-free at import (the widget imports this module at napari start-up).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from .postprocessing.threshold import DEFAULT_NORMAL_FRACTION
from .predictors.ensemble import NORMALIZATIONS
from .predictors.registry import (
    DEFAULT_PREDICTORS,
    ENERGY_VARIANTS,
    PREDICTORS,
    PredictorOptions,
    check_names,
)

if TYPE_CHECKING:
    from .io.volume import Volume
    from .postprocessing.lesions import Lesion
    from .predictors.pipeline import PredictionResult, PreparedVolume, Progress

ENSEMBLE_KEY = "ensemble"  # the same key as predictors.pipeline.ENSEMBLE_KEY
MASK_FROM = ("ensemble", "first")
_P = PredictorOptions()  # the predictor defaults live in PredictorOptions, read from there


def option(flag: str, help: str, default: Any = MISSING, **cli: Any) -> Any:
    """A settings field with its CLI flag and help text (``cli``: extra argparse keywords)."""
    return field(default=default, metadata={"flag": flag, "help": help, **cli})


@dataclass(frozen=True)
class DetectionSettings:
    """Every detection option and its default (the CLI and the widget are built from it)."""

    predictors: tuple[str, ...] = option(
        "--predictor", "map to compute; repeat for several (their ensemble makes the mask); "
        f"one of {', '.join(PREDICTORS)}", DEFAULT_PREDICTORS,
        action="append", choices=list(PREDICTORS), metavar="NAME")
    energy_steps: int = option("--energy-steps", "steps T of the energy projection",
                               _P.energy_steps, metavar="T")
    energy_alpha: float = option("--energy-alpha", "step size of the energy projection",
                                 _P.energy_alpha, metavar="A")
    energy_lambda: float = option("--energy-lambda", "weight of the L1 distance to the input "
                                  "in the energy", _P.energy_lambda, metavar="L")
    energy_variant: str = option("--energy-variant", "energy map: |x0 - xT| (x0_xT) or "
                                 "|x0 - f(xT)| (x0_fxT)", _P.energy_variant,
                                 choices=list(ENERGY_VARIANTS))
    energy_tol: float = option(
        "--energy-tol", "early stop of the energy projection: a slice stops once a step lowers "
        "its energy by less than this fraction of it (0 = off: every slice takes all T steps)",
        0.0, metavar="TOL")
    sigma: float = option("--sigma", "Gaussian smoothing of gradient maps (0 = off)", _P.sigma)
    median: int = option("--median", "3-D median filter of K voxels a side on every map "
                         "(0 = off)", _P.median, metavar="K")
    erode: int = option("--erode", "keep maps inside the brain mask eroded by N voxels "
                        "(0 = off)", _P.erode, metavar="N")
    chunk: int = option("--chunk", "slices per batch (bounds memory)", _P.chunk, metavar="N")
    normalize: str = option(
        "--normalize", "normalization of ensemble members: reference (normal statistics stored "
        "in the checkpoint; per-volume zscore for checkpoints without them), zscore or rank of "
        "each volume", "reference", choices=list(NORMALIZATIONS))
    mask_from: str = option("--mask-from", "the map the mask follows: the ensemble of every "
                            "map when there are several, or the first predictor's map",
                            "ensemble", choices=list(MASK_FROM))
    threshold: float | None = option("--threshold", "fixed threshold on the mask's map "
                                     "(default: from normal data, see --threshold-fpr)", None,
                                     metavar="VALUE", group="threshold")
    normal_fraction: float = option(
        "--threshold-fpr", "threshold exceeded by a fraction F of normal voxels: the "
        "checkpoint's held-out normal volumes (its reference slices for older checkpoints)",
        DEFAULT_NORMAL_FRACTION, metavar="F", group="threshold")
    mask_median: int = option("--mask-median", "3-D median of K voxels a side on the mask's "
                              "map after the threshold was calibrated (0 = off)", 0,
                              metavar="K")
    min_size: int = option("--min-size", "remove mask components smaller than N voxels "
                           "(reference: components of 7 voxels or fewer)", 8, metavar="N")
    min_volume: float = option("--min-volume", "remove mask components smaller than MM3 "
                               "cubic millimetres", 0.0, metavar="MM3")
    fill_holes: bool = option("--fill-holes", "fill holes in the mask", False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "predictors", tuple(check_names(list(self.predictors))))
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {', '.join(NORMALIZATIONS)}")
        if self.mask_from not in MASK_FROM:
            raise ValueError(f"mask_from must be one of {', '.join(MASK_FROM)}")
        if not 0 < self.normal_fraction < 1:
            raise ValueError(f"--threshold-fpr must be between 0 and 1, got "
                             f"{self.normal_fraction:g}")
        if min(self.min_size, self.min_volume, self.mask_median, self.energy_tol) < 0:
            raise ValueError("--min-size, --min-volume, --mask-median and --energy-tol must "
                             "be >= 0")
        self.predictor_options()  # validates the predictor options now

    def predictor_options(self) -> PredictorOptions:
        """The predictor options these settings hold (other PredictorOptions fields default)."""
        shared = {f.name for f in fields(PredictorOptions)}
        return PredictorOptions(**{f.name: getattr(self, f.name) for f in fields(self)
                                   if f.name in shared})

    def with_options(self, options: PredictorOptions) -> DetectionSettings:
        """These settings with the predictor options taken from ``options``."""
        shared = {f.name for f in fields(self)}
        changes = {k: v for k, v in options.to_dict().items() if k in shared}
        return replace(self, **changes)

    def replace(self, **changes: Any) -> DetectionSettings:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields (what a widget remembers between sessions)."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
                for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DetectionSettings:
        """Settings from :meth:`to_dict` output; unknown keys (another version's) are ignored,
        missing ones take their defaults, bad values raise ValueError."""
        known = {f.name for f in fields(cls)}
        kept = {k: v for k, v in d.items() if k in known}
        if "predictors" in kept:
            kept["predictors"] = tuple(kept["predictors"])
        try:
            return cls(**kept)
        except TypeError as exc:
            raise ValueError(f"invalid detection settings: {exc}") from None

    @property
    def names(self) -> list[str]:
        return list(self.predictors)

    def keys(self, n_models: int) -> list[str]:
        """Map keys a detection produces: the predictors, and the ensemble of several maps."""
        many = len(self.predictors) * n_models > 1
        return [*self.predictors, *([ENSEMBLE_KEY] if many else [])]

    def mask_key(self, n_models: int) -> str:
        """The map the mask follows."""
        keys = self.keys(n_models)
        return ENSEMBLE_KEY if self.mask_from == "ensemble" and ENSEMBLE_KEY in keys else keys[0]


@dataclass
class Thresholds:
    """Threshold per map key and a few words on where they came from."""

    values: dict[str, float]
    source: str


@dataclass
class DetectionResult:
    """Everything one detection produced: maps, the mask, its threshold and lesions."""

    prediction: PredictionResult
    maps: dict[str, np.ndarray]  # predictors (+ "ensemble"); the mask's only when handed on
    mask_key: str
    thresholds: Thresholds
    mask: np.ndarray  # uint8, the input's shape
    lesions: list[Lesion]
    mask_map: np.ndarray  # the map the mask was cut from (median-filtered if asked)

    @property
    def threshold(self) -> float:
        return self.thresholds.values[self.mask_key]


def calibrate(models: Sequence[Any], settings: DetectionSettings,
              should_stop: Callable[[], bool] | None = None) -> Thresholds:
    """Thresholds of every map key: the fixed value, or the score exceeded by
    ``normal_fraction`` of the checkpoint's normal voxels (computed once per cohort)."""
    if settings.threshold is not None:
        t = float(settings.threshold)
        return Thresholds({k: t for k in settings.keys(len(models))}, "fixed")
    from .predictors.calibration import normal_thresholds

    found, source = normal_thresholds(models, settings.names, settings.predictor_options(),
                                      settings.normalize, settings.normal_fraction,
                                      should_stop)
    return Thresholds(found, f"{settings.normal_fraction:g} of normal voxels above it, "
                             f"from the {source}")


def detect_iter(
    volume: Volume,
    models: Sequence[Any],
    settings: DetectionSettings,
    thresholds: Thresholds | None = None,
    should_stop: Callable[[], bool] | None = None,
    prepared: PreparedVolume | None = None,
    put: Callable[[str, np.ndarray], None] | None = None,
) -> Generator[Progress, None, DetectionResult]:
    """Detection on one volume; yields :class:`~.predictors.pipeline.Progress` events.

    ``thresholds`` from :func:`calibrate` (computed here when None: pass them for a cohort);
    ``prepared``: the volume's ``prepare_volume``, when it was done ahead. ``put(key, map)``:
    each final map is handed there as soon as it is made (``predict``'s staged writer) and
    not kept, but for the mask's: the result's ``maps`` then holds that one only.
    Raises ``PredictionCancelled`` when ``should_stop()`` becomes true between chunks.
    """
    from .postprocessing.mask import MaskOptions
    from .postprocessing.mask_lesions import mask_and_lesions
    from .predictors.pipeline import MapHandoff, Progress, predict_volume_iter

    key = settings.mask_key(len(models))
    handoff = None if put is None else MapHandoff(put, key)
    prediction = yield from predict_volume_iter(volume, models, settings.names,
                                                settings.predictor_options(),
                                                settings.normalize, should_stop, prepared,
                                                handoff)
    if thresholds is None:
        yield Progress(0, 1, "thresholds")
        thresholds = calibrate(models, settings, should_stop)
    maps = prediction.all_maps()
    score = maps[key]
    if settings.mask_median > 1:
        from .postprocessing.filters import median_filter_map

        yield Progress(0, 1, "median filter")
        score = median_filter_map(score, settings.mask_median, prediction.foreground)
    opts = MaskOptions(min_voxels=settings.min_size, min_mm3=settings.min_volume,
                       fill_holes=settings.fill_holes)
    mask, lesions = mask_and_lesions(score, thresholds.values[key], opts,
                                     prediction.foreground, volume.geometry)
    return DetectionResult(prediction, maps, key, thresholds, mask, lesions, score)


def detect(
    volume: Volume,
    models: Sequence[Any],
    settings: DetectionSettings | None = None,
    thresholds: Thresholds | None = None,
    progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    prepared: PreparedVolume | None = None,
    put: Callable[[str, np.ndarray], None] | None = None,
) -> DetectionResult:
    """Callback form of :func:`detect_iter` (``progress`` sees every event)."""
    from .predictors.pipeline import drain

    gen = detect_iter(volume, models, settings or DetectionSettings(), thresholds, should_stop,
                      prepared, put)
    return drain(gen, progress)
