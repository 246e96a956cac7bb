"""The study's table: its columns, the reserved row names and the curves of a row.

Shared by the runner (which fills the table) and the report (which writes it), so that neither
imports the other for its vocabulary.
"""

from __future__ import annotations

import numpy as np

from ..metrics import DatasetEvaluator, roc_pr_curves

ALL = "all"  # model label of the ensembles across betas
ENSEMBLE = "ensemble"  # predictor name of a predictor ensemble
BASELINE = "baseline"  # model label of the baseline rows
BASELINES = ("intensity_bright", "intensity_dark", "mean_deviation")
OUTPUTS = ("results.md", "results.csv", "results.json", "per_case.csv")
TABLE_COLUMNS = (
    "model",
    "beta",
    "predictor",
    "auroc",
    "auprc",
    "threshold",
    "dice",
    "oracle_dice",
    "slice_auroc_mean",
    "slice_auroc_max",
    "seconds_per_volume",
)
Key = tuple[str, str]  # (model label, predictor / ensemble / baseline name)


def curves_of(evaluator: DatasetEvaluator) -> dict[str, np.ndarray] | None:
    """ROC/PR curves of an evaluator's pooled (possibly subsampled, weighted) voxels."""
    s, y, w = evaluator.pool.arrays()
    return roc_pr_curves(s, y, None, w)
