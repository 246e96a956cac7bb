"""Unsupervised thresholds from normal data: the score exceeded by a fraction f of normal
foreground voxels, for every map a prediction produces (predictors, model ensembles, the
ensemble).

Two sources of normal scores:

* ``reference_scores_from_checkpoint``: the held-out normal slices stored in the (first)
  checkpoint (``normal_images``/``normal_masks``). Every model is run on those same slices,
  so model and predictor ensembles can be formed voxel by voxel. Scores are in slice space
  (not resampled back to a volume grid): close to, not identical with, test-time maps.
* ``reference_scores_from_volumes``: whole normal volumes through :func:`predict_volume`,
  exactly as a test volume; the most faithful choice when normal scans are at hand.

Consistency with ensembles: test maps are normalized per volume (z-score or rank over the
foreground) before they are combined, so a threshold on an ensemble is only meaningful for
reference scores normalized the same way. Here the pooled checkpoint reference slices are
treated as *one* volume and normalized with their own statistics; reference volumes are each
normalized on their own, as test volumes are. Raw single-model predictor maps are not
normalized, so their thresholds are in raw score units.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..io.volume import Volume
from ..postprocessing.threshold import threshold_at_fraction
from .ensemble import ensemble_values
from .normal_reference import references_of
from .pipeline import ENSEMBLE_KEY, predict_volume, slice_maps
from .registry import PredictorOptions, check_names

if TYPE_CHECKING:
    from ..models.checkpoint import LoadedModel


def reference_scores_from_checkpoint(
    models: Sequence[LoadedModel],
    names: Sequence[str],
    options: PredictorOptions | None = None,
    normalization: str = "zscore",
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, np.ndarray]:
    """Normal foreground scores (1-D) keyed like ``PredictionResult.all_maps()``."""
    names = check_names(list(names))
    o = options or PredictorOptions()
    ref = models[0]
    images, masks = getattr(ref, "normal_images", None), getattr(ref, "normal_masks", None)
    if images is None or len(images) == 0:
        raise ValueError("the checkpoint holds no normal reference slices; "
                         "give a fixed threshold or normal volumes to calibrate on")
    images = np.asarray(images, np.float32)
    sel = np.ones(images.shape, bool) if masks is None else np.asarray(masks, bool)
    sel = sel[:, 0] if sel.ndim == 4 else sel
    per_model: list[dict[str, np.ndarray]] = []
    for m in models:
        size = getattr(getattr(m, "config", None), "size", images.shape[-1])
        if size != images.shape[-1]:
            raise ValueError(f"models of different slice sizes ({size} vs {images.shape[-1]}) "
                             "cannot share reference slices; calibrate on normal volumes")
        sm = slice_maps(m, images, masks, names, o, should_stop=should_stop)
        per_model.append({n: sm[n][sel] for n in names})
    return _combine(per_model, names, normalization)


def reference_scores_from_volumes(
    volumes: Sequence[Volume],
    models: Sequence[LoadedModel],
    names: Sequence[str],
    options: PredictorOptions | None = None,
    normalization: str = "zscore",
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, np.ndarray]:
    """Normal foreground scores pooled over whole normal volumes run like test volumes."""
    pooled: dict[str, list[np.ndarray]] = {}
    for v in volumes:
        res = predict_volume(v, models, names, options, ensemble=normalization,
                             should_stop=should_stop)
        for k, m in res.all_maps().items():
            pooled.setdefault(k, []).append(m[res.foreground])
    return {k: np.concatenate(v) for k, v in pooled.items()}


def _combine(per_model: list[dict[str, np.ndarray]], names: list[str], normalization: str):
    out: dict[str, np.ndarray] = {}
    if len(per_model) == 1:
        out.update(per_model[0])
    else:
        for n in names:
            out[n] = ensemble_values([pm[n] for pm in per_model], normalization)
    if len(names) * len(per_model) > 1:
        out[ENSEMBLE_KEY] = ensemble_values([pm[n] for pm in per_model for n in names],
                                            normalization)
    return out


def thresholds_at_fraction(scores: dict[str, np.ndarray], fraction: float = 0.01) -> dict[str, float]:
    """Threshold per map key: the score exceeded by ``fraction`` of its normal voxels."""
    return {k: threshold_at_fraction(v, fraction) for k, v in scores.items()}


def normal_thresholds(
    models: Sequence[LoadedModel],
    names: Sequence[str],
    options: PredictorOptions | None = None,
    normalization: str = "reference",
    fraction: float = 0.01,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[dict[str, float], str]:
    """Threshold per map key (``PredictionResult.all_maps()`` keys) exceeded by ``fraction`` of
    normal voxels, and a few words on the normal data used.

    Preferred: the checkpoint's normal-reference volumes (:mod:`.normal_reference`), scored
    exactly like test volumes (volume stage included). Otherwise (several models, an older
    checkpoint, options the reference was not measured with): the stored reference slices.
    """
    names = check_names(list(names))
    if normalization == "reference":
        scores = reference_scores(models, names, options)
        if scores is not None:
            return thresholds_at_fraction(scores, fraction), "normal reference volumes"
        normalization = "zscore"
    scores = reference_scores_from_checkpoint(models, names, options, normalization, should_stop)
    return thresholds_at_fraction(scores, fraction), "normal reference slices"


def reference_scores(models: Sequence[LoadedModel], names: Sequence[str],
                     options: PredictorOptions | None) -> dict[str, np.ndarray] | None:
    """Normal scores keyed like ``PredictionResult.all_maps()`` (raw maps, and the
    reference-normalized predictor ensemble), from one model's stored reference; None when
    there are several models (their samples cover different voxels, so a model ensemble's
    normal distribution cannot be formed from them) or no applicable reference."""
    refs = references_of(models, names, options)
    if refs is None or len(refs) != 1:
        return None
    names = list(names)
    out = {n: refs[0].values(n) for n in names}
    if len(names) > 1:
        out[ENSEMBLE_KEY] = np.mean([refs[0].normalized(n) for n in names], axis=0)
    return out
