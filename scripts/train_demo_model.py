"""Reproduce the demo model shipped in the package (``resources/demo_model.safetensors``).

A small VAE trained on lesion-free phantom subjects whose seeds (100..115) are disjoint from
the sample scan's (seed 0) and from the other samples (seed 1), so the demo never scores a
subject the model has seen. Everything is fixed by ``--seed``: phantoms, split, weights,
augmentation, and the run length is a number of epochs (not a time budget), so the same
command on the same torch version gives the same file.

Size: features (16, 32, 64, 64), latent 64 at 64x64 is 0.41 M parameters, 1.6 MB in float32;
with the 64 normal reference slices the checkpoint stays under 3 MB, so no float16 cast is
needed.

    .venv/bin/python scripts/train_demo_model.py --overwrite
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

DEFAULT_OUT = (Path(__file__).resolve().parents[1]
               / "src" / "napari_vae_anomaly" / "resources" / "demo_model.safetensors")
SEEDS = tuple(range(100, 116))
SPACING = (1.0, 1.0, 1.4)  # as the sample scan (napari_vae_anomaly._sample_data)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--beta", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (1 is fastest on a shared 2-core machine)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--check-only", action="store_true",
                   help="do not train: only score the sample scan with the model at --out")
    return p.parse_args(argv)


def score_sample(path: Path) -> dict[str, float]:
    """Voxel AUROC (foreground) of every predictor and the z-score ensemble on the sample scan
    (seed 0, with lesions): the numbers the demo shows."""
    from napari_vae_anomaly._sample_data import LESION_SEED, SAMPLE_SPACING
    from napari_vae_anomaly.data.phantom import make_phantom
    from napari_vae_anomaly.metrics.voxel import voxel_auroc
    from napari_vae_anomaly.models.checkpoint import load_checkpoint
    from napari_vae_anomaly.predictors.pipeline import predict_volume
    from napari_vae_anomaly.predictors.registry import PREDICTORS

    sample = make_phantom(seed=LESION_SEED, lesions=True, spacing=SAMPLE_SPACING)
    loaded = load_checkpoint(path)
    t0 = time.perf_counter()
    result = predict_volume(sample.volume, [loaded], list(PREDICTORS), ensemble="zscore")
    truth = sample.lesion_mask > 0
    aurocs = {n: voxel_auroc(m, truth, result.foreground) for n, m in result.maps.items()}
    demo = predict_volume(sample.volume, [loaded], ["rec", "kl_grad", "combi"], ensemble="zscore")
    aurocs["ensemble(rec,kl_grad,combi)"] = voxel_auroc(demo.ensemble, truth, demo.foreground)
    print(f"sample scan (seed {LESION_SEED}) voxel AUROC inside the foreground "
          f"({time.perf_counter() - t0:.0f} s):")
    for name, value in aurocs.items():
        print(f"  {name:28s} {value:.3f}")
    return aurocs


def main(argv: list[str] | None = None) -> int:
    import torch

    from napari_vae_anomaly.data.phantom import make_phantom
    from napari_vae_anomaly.models.vae import VAEConfig
    from napari_vae_anomaly.training import trainer
    from napari_vae_anomaly.training.config import TrainConfig

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.check_only:
        score_sample(args.out)
        return 0
    t0 = time.perf_counter()
    volumes = [make_phantom(seed=s, lesions=False, spacing=SPACING).volume for s in SEEDS]
    print(f"phantoms: seeds {SEEDS[0]}..{SEEDS[-1]}, shape {volumes[0].data.shape}, "
          f"made in {time.perf_counter() - t0:.1f} s", flush=True)
    config = TrainConfig(
        vae=VAEConfig(size=64, features=(16, 32, 64, 64), latent=64, beta=args.beta),
        epochs=args.epochs, batch_size=64, lr=1e-3, schedule="cosine", seed=args.seed,
        device="cpu", early_stopping_patience=None,
    )
    last = -1
    result = None
    for p in trainer.train_iter(config, volumes, out=args.out, overwrite=args.overwrite):
        if p.epoch_end and p.epoch != last:
            last = p.epoch
            print(f"epoch {p.epoch}/{p.epochs}: train {p.loss:.1f} val {p.val_loss:.1f} "
                  f"({p.slices_per_s:.0f} slices/s, {p.elapsed_s:.0f} s)", flush=True)
        result = p.result or result
    assert result is not None and result.path is not None
    result.path.chmod(0o644)  # package data: readable by everyone (the atomic write gives 0600)
    size_mb = result.path.stat().st_size / 1e6
    print(f"wrote {result.path} ({size_mb:.2f} MB): VAE size 64, features (16, 32, 64, 64), "
          f"latent 64, beta {args.beta:g}, {result.epochs_run} epochs, {result.steps} steps, "
          f"best val {result.best_val:.1f} at epoch {result.best_epoch}, seed {args.seed}, "
          f"{result.elapsed_s:.0f} s on {result.device}, torch {torch.__version__}")
    score_sample(result.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
