"""Batched augmentation on the training device (no per-slice Python, no CPU round trip).

One random affine per slice (mirror, rotation, zoom) is applied with ``affine_grid`` +
``grid_sample`` to the image and its foreground mask together; the area that comes in from
outside the slice gets the background value. Brightness, contrast and noise then change the
foreground only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .config import AugmentConfig


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator | None, device) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=device) * (hi - lo) + lo


def augment_batch(
    images: torch.Tensor,
    masks: torch.Tensor,
    config: AugmentConfig,
    background: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Augmented copy of ``images`` (N,1,S,S) given their foreground ``masks`` (N,1,S,S) bool.

    ``generator`` must live on the images' device (pass None to use the global RNG).
    """
    if not config.enabled or images.shape[0] == 0:
        return images
    n, dev = images.shape[0], images.device
    x = images - background  # so that zero padding means "background"
    m = masks.to(x.dtype)
    geometric = config.flip or config.rotate_deg > 0 or tuple(config.scale) != (1.0, 1.0)
    if geometric:
        angle = _uniform(n, -config.rotate_deg, config.rotate_deg, generator, dev) * (math.pi / 180)
        zoom = _uniform(n, config.scale[0], config.scale[1], generator, dev)
        flip = torch.ones(n, device=dev)
        if config.flip:
            flip = torch.where(torch.rand(n, generator=generator, device=dev) < 0.5, -flip, flip)
        # theta maps output to input coordinates: zoom > 1 magnifies, so divide by it
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.zeros(n, 2, 3, device=dev, dtype=x.dtype)
        theta[:, 0, 0] = cos * flip
        theta[:, 0, 1] = -sin
        theta[:, 1, 0] = sin * flip
        theta[:, 1, 1] = cos
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        both = F.grid_sample(torch.cat([x, m], 1), grid, mode="bilinear",
                             padding_mode="zeros", align_corners=False)
        x, m = both[:, :1], both[:, 1:]
    fg = (m > 0.5).to(x.dtype)
    if config.contrast > 0 or config.brightness > 0:
        c = _uniform(n, 1 - config.contrast, 1 + config.contrast, generator, dev).view(n, 1, 1, 1)
        b = _uniform(n, -config.brightness, config.brightness, generator, dev).view(n, 1, 1, 1)
        x = fg * ((x + background) * c + b - background) + (1 - fg) * x
    if config.noise_std > 0:
        std = _uniform(n, 0.0, config.noise_std, generator, dev).view(n, 1, 1, 1)
        noise = torch.randn(x.shape, generator=generator, device=dev, dtype=x.dtype)
        x = x + fg * std * noise
    return x + background


def coarse_noise(
    images: torch.Tensor,
    masks: torch.Tensor,
    std: float,
    resolution: int = 16,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``images`` plus low-frequency Gaussian noise inside the foreground ``masks``.

    The noise is drawn on a ``resolution`` x ``resolution`` grid (a little larger, so a random
    shift never shows its edge), upsampled bilinearly to the image and shifted by a random
    offset, as in the coarse-noise denoising autoencoder of Kascenas et al. (2022): a model
    trained to remove blob-sized perturbations learns to replace anything unfamiliar of that
    size by normal tissue, which is what lesions need.
    """
    n, c, h, w = images.shape
    dev, dt = images.device, images.dtype
    cells = resolution + 2
    z = torch.randn((n, c, cells, cells), generator=generator, device=dev, dtype=dt) * std
    big = F.interpolate(z, size=(h * cells // resolution, w * cells // resolution),
                        mode="bilinear", align_corners=False)
    dy = torch.randint(0, big.shape[-2] - h + 1, (1,), generator=generator, device=dev).item()
    dx = torch.randint(0, big.shape[-1] - w + 1, (1,), generator=generator, device=dev).item()
    noise = big[..., dy : dy + h, dx : dx + w]
    return images + noise * masks.to(dt)
