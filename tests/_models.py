"""Tiny models and data shared by the predictor tests (kept cheap: 2 shared CPU cores)."""

from __future__ import annotations

import functools

import numpy as np
import torch

from napari_vae_anomaly.models.vae import VAE, VAEConfig


def tiny_vae(size: int = 16, beta: float = 0.5, seed: int = 0, likelihood: str = "gaussian",
             dtype=torch.float32) -> VAE:
    """An untrained, deterministic, very small VAE."""
    torch.manual_seed(seed)
    model = VAE(VAEConfig(size=size, features=(4, 8), latent=4, beta=beta, likelihood=likelihood))
    return model.to(dtype).eval()


def random_batch(n: int = 3, size: int = 16, seed: int = 1, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n, 1, size, size), generator=g, dtype=dtype)


def train_tiny(images: np.ndarray, size: int, steps: int = 300, beta: float = 0.01,
               seed: int = 0, lr: float = 3e-3) -> VAE:
    """A few hundred Adam steps on (N, 1, S, S) normal slices: enough to learn 'normal'."""
    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: one thread avoids contention on shared cores
    model = VAE(VAEConfig(size=size, features=(8, 16, 32), latent=16, beta=beta))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    data = torch.as_tensor(images, dtype=torch.float32)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, data.shape[0], (min(32, data.shape[0]),), generator=g)
        loss = model.loss_terms(data[idx])["loss"].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.set_num_threads(threads)
    return model.eval()


@functools.lru_cache(maxsize=1)
def phantom_setup(size: int = 32, steps: int = 200):
    """A briefly trained model on phantom normal slices (seeds 1, 2), as a ``LoadedModel``
    whose normal reference (slices and the volume statistics) is a held-out normal phantom (seed 3), and a lesioned test
    phantom (seed 7). Cached per process so every test file shares one training run."""
    from napari_vae_anomaly.data.phantom import make_phantom
    from napari_vae_anomaly.models.checkpoint import LoadedModel
    from napari_vae_anomaly.preprocessing import PreprocessConfig, preprocess_volume

    cfg = PreprocessConfig(size=size)
    shape = (24, 48, 48)
    normals = [make_phantom(seed=s, shape=shape, lesions=False) for s in (1, 2)]
    batches = [preprocess_volume(p.image, cfg, mask=p.brain_mask, training=True) for p in normals]
    model = train_tiny(np.concatenate([b.images for b in batches]), size, steps=steps)
    held_out = make_phantom(seed=3, shape=shape, lesions=False)
    ref = preprocess_volume(held_out.image, cfg, training=True)
    loaded = LoadedModel(model, model.config, cfg, {"name": "phantom-tiny"},
                         normal_images=ref.images, normal_masks=ref.masks)
    from napari_vae_anomaly.predictors.reference_measurement import measure_normal_reference

    loaded.normal_reference = measure_normal_reference(loaded, [held_out.volume])
    test = make_phantom(seed=7, shape=shape, lesions=True)
    return loaded, test


def untrained_loaded(size: int = 16, beta: float = 0.5, seed: int = 0, name: str = "tiny"):
    """An untrained tiny model wrapped like a loaded checkpoint (fast geometry tests)."""
    from napari_vae_anomaly.models.checkpoint import LoadedModel
    from napari_vae_anomaly.preprocessing import PreprocessConfig

    model = tiny_vae(size=size, beta=beta, seed=seed)
    return LoadedModel(model, model.config, PreprocessConfig(size=size), {"name": name})


def save_phantom_checkpoint(path, card: dict | None = None):
    """:func:`phantom_setup`'s model saved at ``path`` with its normal reference (what the CLI
    and the Detect widget load); returns ``(checkpoint path, loaded, lesioned test phantom)``."""
    from types import SimpleNamespace

    from napari_vae_anomaly.models.checkpoint import save_checkpoint

    loaded, test = phantom_setup()
    ref = SimpleNamespace(images=loaded.normal_images, masks=loaded.normal_masks)
    ckpt = save_checkpoint(path, loaded.model, card or {"name": "tiny"}, loaded.preprocess,
                           normal_reference=ref)
    return ckpt, loaded, test
