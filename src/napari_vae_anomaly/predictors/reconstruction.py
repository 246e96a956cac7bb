"""The ``rec`` predictor and the differentiable forward pass shared by the gradient predictors.

``forward_terms`` returns the pixel-wise reconstruction error and the per-image KL of a batch
in one forward pass. With ``n_latent_samples == 1`` the decoder sees z = μ (as in the reference
work); with more, the reconstruction term is averaged over reparameterized samples, so its
input gradient still flows through μ and log σ².
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ..models.vae import VAE
    from .terms import SharedTerms


def forward_terms(
    model: VAE, x: torch.Tensor, n_latent_samples: int = 1, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel reconstruction error (N, C, S, S) and KL (N,) of ``x`` (differentiable)."""
    mu, logvar = model.encode(x)
    kl = model.kl(mu, logvar)
    if n_latent_samples <= 1:
        return model.pixel_rec(x, model.decode(mu)), kl
    k = n_latent_samples
    std = torch.exp(0.5 * logvar)
    eps = torch.randn((k, *mu.shape), dtype=mu.dtype, device=mu.device, generator=generator)
    z = (mu.unsqueeze(0) + eps * std.unsqueeze(0)).flatten(0, 1)
    x_hat = model.decode(z).unflatten(0, (k, x.shape[0]))
    rec = model.pixel_rec(x.unsqueeze(0).expand_as(x_hat), x_hat).mean(dim=0)
    return rec, kl


def rec_from_terms(terms: SharedTerms) -> torch.Tensor:
    """The ``rec`` registry entry: pixel reconstruction error summed over channels (N, S, S)."""
    assert terms.rec is not None
    return terms.rec.sum(dim=1)
