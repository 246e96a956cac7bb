"""Evaluation metrics: voxel AUROC/AUPRC, Dice, oracle Dice, slice-level detection."""
