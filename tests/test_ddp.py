"""DistributedDataParallel: 2 Gloo processes on the CPU via torchrun write one loadable model."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from napari_vae_anomaly.models.checkpoint import load_checkpoint

TORCHRUN = Path(sys.executable).with_name("torchrun")


@pytest.mark.skipif(not TORCHRUN.exists() and not shutil.which("torchrun"), reason="no torchrun")
def test_two_gloo_processes_write_a_loadable_checkpoint(tmp_path):
    out = tmp_path / "ddp.safetensors"
    cmd = [str(TORCHRUN if TORCHRUN.exists() else shutil.which("torchrun")), "--standalone",
           "--nproc_per_node", "2", "-m", "napari_vae_anomaly", "train", "--phantom", "2",
           "--phantom-shape", "24,48,48", "--size", "32", "--features", "8,16,32",
           "--latent", "16", "--epochs", "3", "--batch-size", "8", "--lr", "3e-3",
           "--device", "cpu", "--quiet", "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("saved best model") == 1  # rank 0 only
    loaded = load_checkpoint(out)
    card = loaded.card["training"]
    assert card["world_size"] == 2 and card["device"] == "cpu"
    assert [h["epoch"] for h in card["history"]] == [1, 2, 3]
    n_train = card["data"]["train_slices"]
    # each rank ran ceil((n_train // 2) / 8) steps per epoch
    assert card["history"][-1]["steps"] == 3 * -(-(n_train // 2) // 8)
    assert loaded.normal_images is not None and loaded.normal_images.shape[1:] == (1, 32, 32)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
