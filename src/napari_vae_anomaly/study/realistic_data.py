"""The realistic benchmark's data and scoring: MNI152 subjects and pooled voxel metrics.

Normal training subjects (seeds 1000+) and lesion test subjects (seeds 0+, kinds cycling
tumour / WMH / stroke / all three) come from :mod:`..data.realistic`. Scoring follows the
field's conventions (Baur et al. 2021): voxels pooled over all test volumes inside the brain
mask; AUROC, AUPRC (average precision) and the oracle best Dice over thresholds, reported
under that name only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.realistic import Subject, lesion_subjects, normal_subjects
from ..metrics.dice import oracle_best_dice
from ..metrics.voxel import auprc_of, auroc_of


@dataclass
class RealisticCohort:
    """Normal training subjects and labelled test subjects of one contrast and spacing."""

    normal: list[Subject]
    test: list[Subject]
    contrast: str
    spacing: int


def realistic_cohort(n_normal: int = 24, n_test: int = 12, contrast: str = "flair",
                     spacing: int = 2) -> RealisticCohort:
    """Generate the cohort (about 0.5 s per subject at 2 mm)."""
    return RealisticCohort(list(normal_subjects(n_normal, contrast, spacing)),
                           list(lesion_subjects(n_test, contrast, spacing)), contrast, spacing)


def pooled_scores(maps: list[np.ndarray], truths: list[np.ndarray], masks: list[np.ndarray],
                  max_voxels: int = 1_000_000, seed: int = 0) -> dict[str, float]:
    """AUROC, AUPRC and oracle best Dice of maps pooled over volumes (inside ``masks``).

    Pools larger than ``max_voxels`` are subsampled uniformly (fixed seed) for AUROC/AUPRC;
    the oracle Dice always uses every voxel.
    """
    s = np.concatenate([np.asarray(m, np.float32)[k] for m, k in zip(maps, masks, strict=True)])
    y = np.concatenate([np.asarray(t)[k] > 0 for t, k in zip(truths, masks, strict=True)])
    dice = oracle_best_dice(s, y).dice
    if s.size > max_voxels:
        keep = np.random.default_rng(seed).choice(s.size, max_voxels, replace=False)
        s_sub, y_sub = s[keep], y[keep]
    else:
        s_sub, y_sub = s, y
    return {"auroc": auroc_of(s_sub, y_sub), "auprc": auprc_of(s_sub, y_sub), "oracle_dice": float(dice)}


def baseline_scores(images: list[np.ndarray], truths: list[np.ndarray], brains: list[np.ndarray],
                    normal_images: list[np.ndarray], median: tuple[int, ...] = (0, 5)
                    ) -> dict[str, dict[str, float]]:
    """The trivial baselines on the test subjects: bright and dark intensity (the model's
    z-score) and the absolute deviation from the voxel-wise mean of the normal subjects (they
    share the template's space), each raw and after a 3-D median (sizes in ``median``)."""
    from scipy import ndimage as ndi

    from ..preprocessing import PreprocessConfig, normalize_intensity

    pre = PreprocessConfig()
    norm = [normalize_intensity(x, b, pre) for x, b in zip(images, brains, strict=True)]
    mean = np.mean([normalize_intensity(x, x > 0, pre) for x in normal_images], axis=0)
    out = {}
    for name, maps in (("bright", norm), ("dark", [-x for x in norm]),
                       ("mean deviation", [np.abs(x - mean) for x in norm])):
        for size in median:
            filtered = [ndi.median_filter(m, size) if size else m for m in maps]
            out[f"baseline {name}{f' + median {size}' if size else ''}"] = pooled_scores(
                filtered, truths, brains)
    return out
