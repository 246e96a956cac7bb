"""All metrics of one anomaly map against its ground truth, per volume and over a data set.

:class:`DatasetEvaluator` takes volumes one at a time (so a data set never has to fit in
memory at once), returns each volume's row and, at the end, a ``pooled`` row (all foreground
voxels of all volumes together, one common threshold for the oracle Dice; Dice at the given
threshold from summed counts, exact) and a ``mean`` row (the average of the per-volume values,
skipping undefined ones). Undefined metrics are NaN with a note saying why.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .detection import REDUCTIONS, SliceDetection
from .dice import DiceCounts, dice_counts, oracle_best_dice
from .report import MetricsResult
from .voxel import VoxelPool, auprc_of, auroc_of, masked_voxels, undefined_reason

#: per-volume values averaged in the ``mean`` row
MEAN_KEYS: tuple[str, ...] = (
    "auroc",
    "auprc",
    "dice",
    "oracle_dice",
    "slice_auroc_mean",
    "slice_auroc_max",
)


def _label(case: str, predictor: str) -> str:
    return f"{predictor} / {case}" if predictor else case


class DatasetEvaluator:
    """Accumulates per-volume metrics and the pooled data-set metrics of one predictor.

    ``max_pooled_normal`` bounds the normal voxels kept for the pooled ranking metrics (see
    :class:`~.voxel.VoxelPool`; None keeps all, exact). ``axis`` is the array axis that slices
    are taken along for slice-level detection.
    """

    def __init__(
        self,
        predictor: str = "",
        threshold: float | None = None,
        axis: int = 0,
        min_lesion_voxels: int = 10,
        max_pooled_normal: int | None = 5_000_000,
        seed: int = 0,
    ) -> None:
        self.predictor = predictor
        self.threshold = threshold
        self.axis = axis
        self.min_lesion_voxels = min_lesion_voxels
        self.pool = VoxelPool(max_pooled_normal, seed)
        self.slices = SliceDetection(min_lesion_voxels=min_lesion_voxels)
        self.counts = DiceCounts(0, 0, 0)
        self.rows: list[dict[str, Any]] = []
        self.notes: list[str] = []

    def _base(self, case: str) -> dict[str, Any]:
        row: dict[str, Any] = {"predictor": self.predictor} if self.predictor else {}
        row["case"] = case
        return row

    def add(
        self,
        case: str,
        scores: np.ndarray,
        truth: np.ndarray,
        mask: np.ndarray | None = None,
    ) -> dict[str, Any]:
        """Evaluate one volume, add it to the pooled metrics, and return its row."""
        s, y = masked_voxels(scores, truth, mask)
        row = self._base(case)
        row["voxels"], row["lesion_voxels"] = int(s.size), int(y.sum())
        why = undefined_reason(y)
        if why is None:
            row["auroc"], row["auprc"] = auroc_of(s, y), auprc_of(s, y)
        else:
            row["auroc"] = row["auprc"] = math.nan
            self.notes.append(f"{_label(case, self.predictor)}: {why}; AUROC and AUPRC are n/a")
        if self.threshold is not None:
            c = dice_counts(s, y, self.threshold)
            self.counts = self.counts + c
            row["threshold"], row["dice"] = float(self.threshold), c.dice
        oracle = oracle_best_dice(s, y)
        row["oracle_dice"], row["oracle_threshold"] = oracle.dice, oracle.threshold
        det = SliceDetection.from_volume(scores, truth, mask, self.axis, self.min_lesion_voxels)
        self._slice_columns(row, det, case)
        self.slices.extend(det)
        self.pool.add(s, y)
        self.rows.append(row)
        return row

    def _slice_columns(self, row: dict[str, Any], det: SliceDetection, case: str) -> None:
        for r in REDUCTIONS:
            row[f"slice_auroc_{r}"] = det.auroc(r)
        row["abnormal_slices"], row["normal_slices"] = det.n_abnormal, det.n_normal
        why = det.undefined_reason()
        if why is not None:
            self.notes.append(f"{_label(case, self.predictor)}: {why}; slice AUROC is n/a")

    def pooled_row(self) -> dict[str, Any]:
        """Metrics over all voxels (and slices) of all volumes added so far."""
        row = self._base("pooled")
        row["voxels"], row["lesion_voxels"] = self.pool.n_voxels, self.pool.n_positive
        s, y, w = self.pool.arrays()
        why = undefined_reason(y)
        if why is None:
            row["auroc"], row["auprc"] = auroc_of(s, y, w), auprc_of(s, y, w)
        else:
            row["auroc"] = row["auprc"] = math.nan
        if self.threshold is not None:
            row["threshold"], row["dice"] = float(self.threshold), self.counts.dice
        oracle = oracle_best_dice(s, y, weights=w)
        row["oracle_dice"], row["oracle_threshold"] = oracle.dice, oracle.threshold
        self._slice_columns(row, self.slices, "pooled")
        if self.pool.subsampled:
            self.notes.append(
                f"{_label('pooled', self.predictor)}: AUROC, AUPRC and oracle Dice estimated "
                f"from all lesion voxels and a seeded {100 * self.pool.rate:.3g}% sample of "
                "the normal voxels (weighted)"
            )
        return row

    def mean_row(self) -> dict[str, Any]:
        """Average of the per-volume values (undefined ones skipped)."""
        row = self._base("mean")
        for k in MEAN_KEYS:
            vals = [r[k] for r in self.rows if k in r and not math.isnan(r[k])]
            if any(k in r for r in self.rows):
                row[k] = float(np.mean(vals)) if vals else math.nan
        return row

    def result(self) -> MetricsResult:
        """Per-volume rows, then ``pooled`` and ``mean``, with the notes."""
        rows = [*self.rows, self.pooled_row(), self.mean_row()]
        return MetricsResult(rows, list(dict.fromkeys(self.notes)))


def evaluate_volume(
    scores: np.ndarray,
    truth: np.ndarray,
    mask: np.ndarray | None = None,
    threshold: float | None = None,
    axis: int = 0,
    case: str = "volume",
) -> MetricsResult:
    """Every metric of one volume (a one-row :class:`MetricsResult` with its notes)."""
    ev = DatasetEvaluator(threshold=threshold, axis=axis, max_pooled_normal=None)
    ev.add(case, scores, truth, mask)
    return MetricsResult(list(ev.rows), list(ev.notes))
