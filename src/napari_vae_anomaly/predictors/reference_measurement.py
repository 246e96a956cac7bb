"""Measuring a model's normal reference: its normal volumes through the volume pipeline.

Kept apart from :mod:`.normal_reference` (the stored statistics, which the pipeline reads to
normalize ensembles) because measuring runs the pipeline: in one module the two would import
each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .normal_reference import REFERENCE_PREDICTORS, SAMPLE_SIZE, NormalReference, option_subset
from .pipeline import predict_volume, score_region
from .registry import PredictorOptions

if TYPE_CHECKING:
    from ..io.volume import Volume
    from ..models.checkpoint import LoadedModel


def measure_normal_reference(
    loaded: LoadedModel,
    volumes: Sequence[Volume],
    options: PredictorOptions | None = None,
    names: Sequence[str] = REFERENCE_PREDICTORS,
    sample: int = SAMPLE_SIZE,
    seed: int = 0,
    in_sample: bool = False,
) -> NormalReference:
    """Run ``names`` on normal ``volumes`` (Volume objects) like test volumes; pool the scores
    inside each volume's scoring region and keep a voxel-aligned random sample."""
    o = options or PredictorOptions()
    names = list(names)
    pools: list[list[np.ndarray]] = [[] for _ in names]
    for v in volumes:
        res = predict_volume(v, [loaded], names, o, ensemble="zscore")
        region = score_region(res.foreground, o.erode, np.ndim(res.foreground) == 2)
        for i, n in enumerate(names):
            pools[i].append(res.maps[n][region].astype(np.float32))
    full = np.stack([np.concatenate(p) for p in pools]) if volumes else np.zeros((len(names), 0))
    if full.shape[1] == 0:
        raise ValueError("no normal voxels to measure a reference on")
    k = min(sample, full.shape[1])
    keep = np.sort(np.random.default_rng(seed).choice(full.shape[1], k, replace=False))
    mean = {n: float(full[i].mean(dtype=np.float64)) for i, n in enumerate(names)}
    std = {n: float(full[i].std(dtype=np.float64)) for i, n in enumerate(names)}
    return NormalReference(names, np.ascontiguousarray(full[:, keep], np.float32),
                           option_subset(o), mean, std, len(volumes), int(full.shape[1]), in_sample)
