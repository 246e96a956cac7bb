"""Evaluation metrics: voxel AUROC/AUPRC, Dice, oracle Dice, slice-level detection, reports.

numpy + scikit-learn only (no torch, Qt or napari). Every metric is taken inside a foreground
mask; the best Dice over thresholds picked on the test labels is always called "oracle".
"""

from .detection import SliceDetection, slice_auroc, slice_labels, slice_scores
from .dice import (
    DiceCounts,
    OracleDice,
    dice,
    dice_at_threshold,
    dice_counts,
    oracle_best_dice,
)
from .evaluation import DatasetEvaluator, evaluate_volume
from .report import MetricsResult
from .voxel import (
    VoxelPool,
    auprc_of,
    auroc_of,
    masked_voxels,
    roc_pr_curves,
    undefined_reason,
    voxel_auprc,
    voxel_auroc,
)

__all__ = [
    "DatasetEvaluator",
    "DiceCounts",
    "MetricsResult",
    "OracleDice",
    "SliceDetection",
    "VoxelPool",
    "auprc_of",
    "auroc_of",
    "dice",
    "dice_at_threshold",
    "dice_counts",
    "evaluate_volume",
    "masked_voxels",
    "oracle_best_dice",
    "roc_pr_curves",
    "slice_auroc",
    "slice_labels",
    "slice_scores",
    "undefined_reason",
    "voxel_auprc",
    "voxel_auroc",
]
