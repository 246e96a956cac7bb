"""2-D Gaussian smoothing and per-image min-max scaling of map batches (torch).

Gradient maps are noisy pixel to pixel; the reference code smooths them in-plane with a
7-tap Gaussian (sigma 3). A separable kernel (two 1-D convolutions) does the same work in
2k instead of k² multiplications per pixel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gaussian_kernel1d(sigma: float, kernel: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """Normalized 1-D Gaussian taps (length ``kernel``)."""
    r = (kernel - 1) / 2
    t = torch.arange(kernel, dtype=dtype, device=device) - r
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def smooth2d(maps: torch.Tensor, sigma: float = 3.0, kernel: int = 7) -> torch.Tensor:
    """Gaussian-smooth (N, 1, S, S) maps in-plane; ``sigma <= 0`` or ``kernel == 1`` is a no-op.

    Borders are reflected, so a map's edge is not darkened by zero padding.
    """
    if sigma <= 0 or kernel <= 1:
        return maps
    k = gaussian_kernel1d(sigma, kernel, dtype=maps.dtype, device=maps.device)
    pad = kernel // 2
    x = F.pad(maps, (pad, pad, pad, pad), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, kernel))
    return F.conv2d(x, k.view(1, 1, kernel, 1))


def minmax(maps: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Scale each image of an (N, ...) batch to [0, 1] (a constant image becomes 0)."""
    flat = maps.flatten(1)
    lo = flat.min(dim=1).values.view(-1, *([1] * (maps.dim() - 1)))
    hi = flat.max(dim=1).values.view(-1, *([1] * (maps.dim() - 1)))
    return (maps - lo) / (hi - lo).clamp_min(eps)
