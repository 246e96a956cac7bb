"""Slice-level detection: does a slice hold a lesion? Scored by the mean or max of its map.

Labels follow the reference protocol: a slice with more than ``min_lesion_voxels`` (10)
lesion voxels is abnormal, one with none is normal, and slices in between are excluded as
ambiguous. With a foreground mask, a slice's mean and max are taken over its foreground
voxels, and slices with no foreground at all (outside the body) are excluded too: they would
be trivially normal and inflate the AUROC.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import roc_auc_score

#: slice labels
NORMAL, ABNORMAL, EXCLUDED = 0, 1, -1
REDUCTIONS = ("mean", "max")


def slice_labels(
    truth: np.ndarray,
    axis: int = 0,
    min_lesion_voxels: int = 10,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Per-slice label along ``axis``: 1 abnormal (> min voxels), 0 normal (none), -1 excluded."""
    t = np.asarray(truth) > 0
    if mask is not None:
        t = t & np.asarray(mask, dtype=bool)
    other = tuple(a for a in range(t.ndim) if a != axis % t.ndim)
    counts = t.sum(axis=other)
    labels = np.full(counts.shape, EXCLUDED, dtype=np.int8)
    labels[counts == 0] = NORMAL
    labels[counts > min_lesion_voxels] = ABNORMAL
    if mask is not None:
        labels[~np.asarray(mask, dtype=bool).any(axis=other)] = EXCLUDED
    return labels


def slice_scores(
    scores: np.ndarray, mask: np.ndarray | None = None, axis: int = 0, reduce: str = "mean"
) -> np.ndarray:
    """Per-slice mean or max of ``scores`` over the slice's foreground (NaN where none)."""
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    s = np.moveaxis(np.asarray(scores, dtype=np.float64), axis, 0)
    flat = s.reshape(s.shape[0], -1)
    if mask is None:
        return flat.mean(axis=1) if reduce == "mean" else flat.max(axis=1)
    m = np.moveaxis(np.asarray(mask, dtype=bool), axis, 0).reshape(s.shape[0], -1)
    n = m.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        if reduce == "mean":
            out = np.where(m, flat, 0.0).sum(axis=1) / n
        else:
            out = np.where(m, flat, -np.inf).max(axis=1)
    out[n == 0] = np.nan
    return out


@dataclass
class SliceDetection:
    """Slice scores and labels of one or more volumes; ``extend`` pools volumes."""

    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int8))
    scores: dict[str, np.ndarray] = field(
        default_factory=lambda: {r: np.zeros(0) for r in REDUCTIONS}
    )
    min_lesion_voxels: int = 10

    @classmethod
    def from_volume(
        cls,
        scores: np.ndarray,
        truth: np.ndarray,
        mask: np.ndarray | None = None,
        axis: int = 0,
        min_lesion_voxels: int = 10,
    ) -> SliceDetection:
        if np.shape(scores) != np.shape(truth):
            raise ValueError(
                f"scores have shape {np.shape(scores)} but truth has shape {np.shape(truth)}"
            )
        labels = slice_labels(truth, axis, min_lesion_voxels, mask)
        scores_ = {r: slice_scores(scores, mask, axis, r) for r in REDUCTIONS}
        return cls(labels, scores_, min_lesion_voxels)

    def extend(self, other: SliceDetection) -> None:
        self.labels = np.concatenate([self.labels, other.labels])
        for r in REDUCTIONS:
            self.scores[r] = np.concatenate([self.scores[r], other.scores[r]])

    @property
    def n_abnormal(self) -> int:
        return int((self.labels == ABNORMAL).sum())

    @property
    def n_normal(self) -> int:
        return int((self.labels == NORMAL).sum())

    def undefined_reason(self) -> str | None:
        if self.n_abnormal == 0:
            if self.n_normal == 0:
                return "no usable slice"
            return f"no abnormal slice (> {self.min_lesion_voxels} lesion voxels)"
        if self.n_normal == 0:
            return "no normal (lesion-free) slice"
        return None

    def auroc(self, reduce: str = "mean") -> float:
        """Detection AUROC of the slice ``reduce`` score (NaN without both classes)."""
        if self.undefined_reason() is not None:
            return math.nan
        use = self.labels != EXCLUDED
        return float(roc_auc_score(self.labels[use] == ABNORMAL, self.scores[reduce][use]))


def slice_auroc(
    scores: np.ndarray,
    truth: np.ndarray,
    mask: np.ndarray | None = None,
    axis: int = 0,
    reduce: str = "mean",
    min_lesion_voxels: int = 10,
) -> float:
    """Slice-level detection AUROC of one volume from each slice's map mean or max."""
    det = SliceDetection.from_volume(scores, truth, mask, axis, min_lesion_voxels)
    return det.auroc(reduce)
