"""What the energy projection's early stop costs in quality: voxel AUROC and AUPRC of the
energy map (T = 50) on the MNI sample subject with lesions, with the bundled demo model, for
a few tolerances (0 = off, the default), and the time of ``predict_volume`` for each.

Run: ``.venv/bin/python benchmarks/energy_early_stop_quality.py [--tol 0 1e-4 1e-3]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from napari_vae_anomaly._sample_data import MNI_LESION_KINDS, MNI_LESION_SEED
from napari_vae_anomaly.data.realistic import make_subject
from napari_vae_anomaly.models import bundled_model_path
from napari_vae_anomaly.models.checkpoint import load_checkpoint
from napari_vae_anomaly.predictors.pipeline import predict_volume
from napari_vae_anomaly.predictors.registry import PredictorOptions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tol", type=float, nargs="+", default=[0.0, 1e-4, 1e-3])
    ap.add_argument("--steps", type=int, default=50)
    a = ap.parse_args()
    torch.set_num_threads(1)
    subject = make_subject(MNI_LESION_SEED, MNI_LESION_KINDS)
    model = load_checkpoint(bundled_model_path())
    truth = np.asarray(subject.lesion_mask) > 0
    print("| tolerance | predict_volume (s) | voxel AUROC | voxel AUPRC |")
    print("|---:|---:|---:|---:|")
    for tol in a.tol:
        o = PredictorOptions(energy_steps=a.steps, energy_tol=tol)
        t0 = time.perf_counter()
        res = predict_volume(subject.volume, [model], ["energy"], o)
        dt = time.perf_counter() - t0
        fg = res.foreground
        y, score = truth[fg], res.maps["energy"][fg]
        print(f"| {tol:g} | {dt:.1f} | {roc_auc_score(y, score):.4f} | "
              f"{average_precision_score(y, score):.4f} |")


if __name__ == "__main__":
    main()
