"""Small real files the fault tests share: a tiny checkpoint and a scan it can process."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` (hidden ones included) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def checkpoint_and_scan(folder: Path, name: str = "scan") -> tuple[Path, Path]:
    """An untrained tiny checkpoint (size 16) and a 6 x 20 x 20 scan in ``folder``."""
    from _models import tiny_vae
    from napari_vae_anomaly.io import Geometry, write_volume
    from napari_vae_anomaly.models.checkpoint import save_checkpoint
    from napari_vae_anomaly.preprocessing import PreprocessConfig

    model = tiny_vae(size=16)
    ckpt = folder / "tiny.safetensors"
    if not ckpt.exists():
        save_checkpoint(ckpt, model, {"name": "tiny"}, PreprocessConfig(size=16))
    rng = np.random.default_rng(3)
    data = rng.normal(100, 10, (6, 20, 20)).astype(np.float32)
    data[:, :3] = 0
    geo = Geometry((1.0, 1.0, 2.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    scan = folder / f"{name}.nii.gz"
    if not scan.exists():
        write_volume(scan, data, geo)
    return ckpt, scan
