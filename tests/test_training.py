"""Training loop on tiny phantoms: loss falls, reproducible, stop keeps the best, resume."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from napari_vae_anomaly.data.phantom import make_phantom
from napari_vae_anomaly.errors import CheckpointError, VolumeReadError
from napari_vae_anomaly.models.checkpoint import load_checkpoint
from napari_vae_anomaly.models.vae import VAEConfig
from napari_vae_anomaly.preprocessing import PreprocessConfig
from napari_vae_anomaly.training.augment import augment_batch
from napari_vae_anomaly.training.config import AugmentConfig, TrainConfig
from napari_vae_anomaly.training.slices import collect_slices, split_train_val
from napari_vae_anomaly.training.trainer import TrainProgress, train, train_iter


@pytest.fixture(autouse=True)
def _one_thread(_torch_threads):
    """One torch thread: on 2 shared cores, 2 threads per process thrash (10x slower)."""
    torch.set_num_threads(1)


SHAPE = (24, 48, 48)


@pytest.fixture(scope="module")
def volumes():
    return [make_phantom(seed=i, shape=SHAPE, lesions=False).volume for i in range(2)]


def tiny_config(**kw) -> TrainConfig:
    base = dict(
        vae=VAEConfig(size=32, features=(8, 16, 32), latent=16, beta=1.0),
        epochs=5, batch_size=8, lr=3e-3, device="cpu", val_fraction=0.2,
        early_stopping_patience=None, warmup_steps=2,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_loss_falls_and_checkpoint_is_best(volumes, tmp_path):
    out = tmp_path / "m.safetensors"
    items = list(train_iter(tiny_config(), volumes, out=out))
    assert all(isinstance(p, TrainProgress) for p in items)
    final = items[-1]
    assert final.done and final.result is not None and final.message == "training finished"
    batches = items[:-1]
    assert [p.step for p in batches] == list(range(1, len(batches) + 1))
    assert final.result.steps == len(batches) == batches[0].total_steps
    ends = [p for p in batches if p.epoch_end]
    assert [p.epoch for p in ends] == [1, 2, 3, 4, 5]
    assert all(p.val_loss is None for p in batches if not p.epoch_end)
    assert all(p.slices_per_s > 0 and np.isfinite(p.loss) for p in batches)
    res = final.result
    vals = [h["val_loss"] for h in res.history]
    assert vals[-1] < 0.8 * vals[0], vals  # clearly learning
    assert res.best_val == min(vals) and res.history[res.best_epoch - 1]["val_loss"] == res.best_val
    loaded = load_checkpoint(out)
    assert loaded.card["training"]["best_epoch"] == res.best_epoch
    assert loaded.card["training"]["data"]["volumes"] == 2
    assert loaded.card["training"]["data"]["shapes"] == [list(SHAPE)] * 2
    assert loaded.card["normal_stats"]["rec_pixel_quantiles"]["0.99"] > 0
    n_val = loaded.card["training"]["data"]["val_slices"]
    assert loaded.normal_images.shape == (n_val, 1, 32, 32)
    for k, v in res.loaded.model.state_dict().items():
        assert torch.equal(v, loaded.model.state_dict()[k])


def test_same_seed_same_losses(volumes):
    cfg = tiny_config(epochs=2)
    a, b = train(cfg, volumes), train(cfg, volumes)
    c = train(tiny_config(epochs=2, seed=1), volumes)
    assert a.path is None and a.loaded is not None  # no out: best model kept in memory
    assert a.history == [dict(h, time_s=h2["time_s"], elapsed_s=h2["elapsed_s"])
                         for h, h2 in zip(b.history, a.history, strict=True)]
    assert a.history[-1]["val_loss"] != c.history[-1]["val_loss"]


def test_stop_keeps_best_checkpoint_and_resume_continues(volumes, tmp_path):
    out = tmp_path / "stopped.safetensors"
    stop = threading.Event()
    seen = []
    for p in train_iter(tiny_config(epochs=50), volumes, stop=stop, out=out):
        seen.append(p)
        if p.step == 9:  # in epoch 3 (4 steps per epoch)
            stop.set()
    res = seen[-1].result
    assert res.stopped_reason == "stopped" and seen[-1].message.startswith("stopped")
    assert res.steps == 9 and len(res.history) == 3  # 2 full epochs + the partial third
    loaded = load_checkpoint(out)
    assert loaded.card["training"]["best_val"] == res.best_val == min(h["val_loss"] for h in res.history)
    assert loaded.card["training"]["history"] == res.history  # full curves, not up to the best
    assert loaded.card["training"]["stopped_reason"] == "stopped"
    # resume: history continues, epochs are numbered on, and it starts from the trained weights
    out2 = tmp_path / "resumed.safetensors"
    res2 = train(tiny_config(epochs=2, lr=1e-3), volumes, out=out2, resume=out)
    assert [h["epoch"] for h in res2.history] == [1, 2, 3, 4, 5]
    assert res2.history[:3] == res.history
    assert res2.history[3]["val_loss"] < res.history[0]["val_loss"]
    assert load_checkpoint(out2).card["training"]["resumed_from"] == str(out)


def test_time_budget_and_refuse_overwrite(volumes, tmp_path):
    out = tmp_path / "t.safetensors"
    res = train(tiny_config(epochs=None, time_budget_s=1.5), volumes, out=out)
    assert res.stopped_reason == "time_budget" and res.path == out and out.exists()
    assert res.elapsed_s < 30
    with pytest.raises(CheckpointError, match="already exists"):
        train(tiny_config(epochs=1), volumes, out=out)
    with pytest.raises(CheckpointError, match="already exists"):
        next(iter(train_iter(tiny_config(epochs=1), volumes, out=out)))


def test_lesion_masks_keep_only_lesion_free_slices(tmp_path):
    ph = make_phantom(seed=3, shape=SHAPE, lesions=True, n_lesions=2)
    pre = PreprocessConfig(size=32)
    plain = collect_slices([ph.volume], pre)
    masked = collect_slices([ph.volume], pre, masks=[ph.lesion_mask])
    lesion_slices = set(np.flatnonzero(ph.lesion_mask.reshape(SHAPE[0], -1).any(1)))
    assert lesion_slices and masked.summary["lesion_slices_dropped"] > 0
    assert len(masked) == len(plain) - masked.summary["lesion_slices_dropped"]
    with pytest.raises(VolumeReadError, match="1 lesion mask.*2 volume"):
        collect_slices([ph.volume, ph.volume], pre, masks=[ph.lesion_mask])
    with pytest.raises(VolumeReadError, match="shape"):
        collect_slices([ph.volume], pre, masks=[ph.lesion_mask[:-1]])


def test_split_by_volume_when_enough_volumes(volumes):
    pre = PreprocessConfig(size=32)
    s = collect_slices(volumes * 5, pre)  # 10 volumes
    tr, va, how = split_train_val(s, 0.2, seed=0)
    assert how == "volume"
    assert not set(s.volume_ids[tr]) & set(s.volume_ids[va]) and len(set(s.volume_ids[va])) == 2
    tr, va, how = split_train_val(collect_slices(volumes, pre), 0.2, seed=0)
    assert how == "slice" and len(set(tr) & set(va)) == 0 and len(va) >= 1


def test_augmentation_on_device():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 1, 16, 16, generator=g)
    m = torch.zeros(6, 1, 16, 16, dtype=torch.bool)
    m[:, :, 4:12, 4:12] = True
    x = torch.where(m, x, torch.full_like(x, -3.0))
    assert augment_batch(x, m, AugmentConfig(enabled=False)) is x
    flip_only = AugmentConfig(rotate_deg=0, scale=(1, 1), brightness=0, contrast=0, noise_std=0)
    y = augment_batch(x, m, flip_only, background=-3.0, generator=torch.Generator().manual_seed(1))
    for i in range(6):  # each slice is itself or its mirror image
        assert torch.allclose(y[i], x[i], atol=1e-5) or torch.allclose(y[i], x[i].flip(-1), atol=1e-5)
    intensity = AugmentConfig(flip=False, rotate_deg=0, scale=(1, 1), brightness=0.5, noise_std=0.2)
    z = augment_batch(x, m, intensity, background=-3.0, generator=torch.Generator().manual_seed(2))
    assert torch.equal(z[~m], x[~m])  # background untouched
    assert not torch.allclose(z[m], x[m])
    full = augment_batch(x, m, AugmentConfig(), background=-3.0, generator=torch.Generator().manual_seed(3))
    assert full.shape == x.shape and torch.isfinite(full).all()
    assert torch.allclose(full[:, :, 0, 0], torch.full((6, 1), -3.0), atol=1e-5)  # corners stay background


def test_config_validation():
    with pytest.raises(ValueError, match="epochs, steps or a time budget"):
        tiny_config(epochs=None)
    with pytest.raises(ValueError, match="differs from the model size"):
        tiny_config(preprocess=PreprocessConfig(size=64))
    d = tiny_config().to_dict()
    assert d["vae"]["latent"] == 16 and d["preprocess"]["size"] == 32 and d["augment"]["flip"]


def test_max_steps_ends_the_run_and_sets_the_schedule(volumes):
    res = train(tiny_config(epochs=None, max_steps=7, schedule="cosine", min_lr_factor=0.1), volumes)
    assert res.steps == 7 and res.stopped_reason == "completed"
    # cosine decays over the 7 steps: the last step's learning rate is the floor
    assert res.history[-1]["lr"] == pytest.approx(3e-3 * 0.1, rel=1e-6)
    with pytest.raises(ValueError, match="max_steps must be >= 1"):
        tiny_config(max_steps=0)
    with pytest.raises(ValueError, match="denoise_std must be >= 0"):
        tiny_config(denoise_std=-1.0)


def test_coarse_noise_is_low_frequency_and_stays_in_the_foreground():
    from napari_vae_anomaly.training.augment import coarse_noise

    x = torch.zeros(64, 1, 32, 32)
    m = torch.zeros_like(x, dtype=torch.bool)
    m[:, :, 4:28, 4:28] = True
    y = coarse_noise(x, m, std=0.5, resolution=4, generator=torch.Generator().manual_seed(0))
    d = y - x
    assert torch.equal(d[~m], torch.zeros_like(d[~m]))  # background untouched
    inside = d[:, :, 4:28, 4:28]
    assert 0.2 < float(inside.std()) < 0.6  # about the asked std (bilinear smooths a little)
    # low frequency: neighbouring pixels differ far less than the noise itself
    step = (inside[..., 1:] - inside[..., :-1]).abs().mean()
    assert float(step) < 0.3 * float(inside.abs().mean())  # white noise: about 1.1
    y2 = coarse_noise(x, m, std=0.5, resolution=4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(y, y2)  # seeded


def test_denoising_training_records_its_settings(volumes, tmp_path):
    out = tmp_path / "dae.safetensors"
    res = train(tiny_config(epochs=2, denoise_std=0.3, denoise_res=4), volumes, out=out)
    loaded = load_checkpoint(res.path)
    cfg = loaded.card["training"]["config"]
    assert cfg["denoise_std"] == 0.3 and cfg["denoise_res"] == 4
    assert np.isfinite(res.best_val)
