"""Voxel-level ranking metrics (AUROC, AUPRC) inside a foreground mask, per volume and pooled.

Only voxels inside the foreground (e.g. the brain) count: the background is a sea of easy
negatives that would inflate every score. Any truth label > 0 is anomalous. A volume without
lesion voxels (or without normal ones) has no defined AUROC/AUPRC: the functions return NaN
and :func:`undefined_reason` says why, so reports can carry a note instead of crashing.

Pooling over a data set concatenates the foreground voxels of all volumes
(:class:`VoxelPool`). To bound memory, the pool may keep every lesion voxel but only a seeded
random subset of the normal ones, each kept normal voxel weighted by the inverse of the kept
fraction. Both AUROC and average precision are linear in the (weighted) counts, so this is an
unbiased estimate; with a few million kept voxels the error is well below 1e-3.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def masked_voxels(
    scores: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Flattened scores (float64) and boolean labels (truth > 0) of the voxels inside ``mask``.

    Raises ValueError when the shapes differ or a score inside the mask is not finite.
    """
    scores = np.asarray(scores)
    truth = np.asarray(truth)
    if scores.shape != truth.shape:
        raise ValueError(f"scores have shape {scores.shape} but truth has shape {truth.shape}")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != scores.shape:
            raise ValueError(f"mask has shape {mask.shape} but scores have shape {scores.shape}")
        s, t = scores[mask], truth[mask]
    else:
        s, t = scores.ravel(), truth.ravel()
    s = s.astype(np.float64, copy=False)
    if s.size and not np.all(np.isfinite(s)):
        raise ValueError("scores hold NaN or infinite values inside the mask")
    return s, t > 0


def undefined_reason(labels: np.ndarray) -> str | None:
    """Why ranking metrics are undefined for these labels (None when they are defined)."""
    labels = np.asarray(labels, dtype=bool)
    if labels.size == 0:
        return "no voxels inside the foreground"
    if not labels.any():
        return "no lesion voxels inside the foreground"
    if labels.all():
        return "no normal voxels inside the foreground"
    return None


def auroc_of(s: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> float:
    """AUROC of 1-D scores ``s`` for boolean labels ``y`` (optional weights); NaN if undefined."""
    if undefined_reason(y) is not None:
        return math.nan
    return float(roc_auc_score(y, s, sample_weight=w))


def auprc_of(s: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> float:
    """Average precision of 1-D scores ``s`` for boolean labels ``y``; NaN if undefined."""
    if undefined_reason(y) is not None:
        return math.nan
    return float(average_precision_score(y, s, sample_weight=w))


def voxel_auroc(scores: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Area under the ROC curve of ``scores`` for ``truth > 0`` inside ``mask`` (NaN if undefined)."""
    return auroc_of(*masked_voxels(scores, truth, mask))


def voxel_auprc(scores: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Average precision (area under the PR curve) inside ``mask`` (NaN if undefined)."""
    return auprc_of(*masked_voxels(scores, truth, mask))


class VoxelPool:
    """Foreground voxels of many volumes, concatenated for data-set level (pooled) metrics.

    ``max_normal`` caps how many normal voxels are kept. When the pool outgrows it, the normal
    voxels already kept are thinned (seeded) and later volumes sampled at the same, lower rate,
    so every volume's normal voxels end up sampled alike at one rate ``r`` and weighted
    ``1/r``. Lesion voxels are always kept. ``None`` keeps everything (exact).
    """

    def __init__(self, max_normal: int | None = None, seed: int = 0) -> None:
        self.max_normal = max_normal
        self.rate = 1.0  # fraction of normal voxels kept
        self._rng = np.random.default_rng(seed)
        self._scores: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self.n_voxels = 0  # voxels seen, before subsampling
        self.n_positive = 0

    @property
    def subsampled(self) -> bool:
        return self.rate < 1.0

    def _thin(self, s: np.ndarray, y: np.ndarray, p: float) -> tuple[np.ndarray, np.ndarray]:
        keep = y | (self._rng.random(s.size) < p)
        return s[keep], y[keep]

    def add(self, scores: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> None:
        """Add one volume's foreground voxels."""
        s, y = masked_voxels(scores, truth, mask)
        self.n_voxels += s.size
        self.n_positive += int(y.sum())
        if self.rate < 1.0:
            s, y = self._thin(s, y, self.rate)
        self._scores.append(s.astype(np.float32))
        self._labels.append(y)
        if self.max_normal is None:
            return
        kept = sum(int(y.size - y.sum()) for y in self._labels)
        if kept > self.max_normal:
            p = self.max_normal / kept
            self.rate *= p
            for i, (si, yi) in enumerate(zip(self._scores, self._labels, strict=True)):
                self._scores[i], self._labels[i] = self._thin(si, yi, p)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(scores float64, labels bool, weights or None when nothing was subsampled)."""
        if not self._scores:
            return np.zeros(0), np.zeros(0, dtype=bool), None
        s = np.concatenate(self._scores).astype(np.float64)
        y = np.concatenate(self._labels)
        w = None
        if self.subsampled:
            w = np.where(y, 1.0, 1.0 / self.rate)
        return s, y, w

    def auroc(self) -> float:
        return auroc_of(*self.arrays())

    def auprc(self) -> float:
        return auprc_of(*self.arrays())

    def undefined_reason(self) -> str | None:
        return undefined_reason(self.arrays()[1])


def roc_pr_curves(
    scores: np.ndarray,
    truth: np.ndarray,
    mask: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> dict[str, np.ndarray] | None:
    """ROC (fpr, tpr) and PR (recall, precision) curves for plots; None if undefined.

    ``mask=None`` with 1-D inputs lets a :class:`VoxelPool`'s arrays be passed directly.
    """
    from sklearn.metrics import precision_recall_curve, roc_curve

    s, y = masked_voxels(scores, truth, mask)
    if undefined_reason(y) is not None:
        return None
    fpr, tpr, _ = roc_curve(y, s, sample_weight=weights)
    precision, recall, _ = precision_recall_curve(y, s, sample_weight=weights)
    return {"fpr": fpr, "tpr": tpr, "precision": precision, "recall": recall}
