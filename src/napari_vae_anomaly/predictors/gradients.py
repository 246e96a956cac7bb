"""Gradient predictors (rec_grad, kl_grad, elbo_grad, combi, combi_add) and their shared passes.

All five come from one forward pass and two backward passes per batch:
``g_rec = ∂(Σ L_rec)/∂x`` and ``g_kl = ∂(Σ KL)/∂x`` (``torch.autograd.grad`` w.r.t. the input
only, so no parameter gradient is computed or accumulated). Because the VAE has no batch
normalization, image i's terms depend only on image i, so the gradient of the batch *sum* is
every image's own gradient. ``∂L/∂x = g_rec + β g_kl`` gives elbo_grad without a third pass.
Each ``*_map`` function is one registry entry's map, computed from the batch's shared terms.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .precision import input_grad
from .reconstruction import forward_terms
from .registry import PredictorOptions
from .smoothing import minmax

if TYPE_CHECKING:
    from ..models.vae import VAE
    from .terms import SharedTerms


@contextmanager
def frozen(model: VAE) -> Iterator[VAE]:
    """Eval mode and ``requires_grad=False`` on all parameters; both restored afterwards."""
    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, f in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(f)
        model.train(was_training)


@dataclass
class GradientTerms:
    """Signed input gradients (N, C, S, S) and the clean pixel reconstruction error."""

    rec: torch.Tensor
    g_rec: torch.Tensor | None
    g_kl: torch.Tensor | None


def _noisy_copies(x: torch.Tensor, n: int, noise: float, generator: torch.Generator | None):
    """n noisy copies of x stacked on the batch axis; noise std = noise * per-image range."""
    flat = x.flatten(1)
    span = (flat.max(dim=1).values - flat.min(dim=1).values).view(1, -1, *([1] * (x.dim() - 1)))
    eps = torch.randn((n, *x.shape), dtype=x.dtype, device=x.device, generator=generator)
    return (x.unsqueeze(0) + eps * noise * span).flatten(0, 1)


def input_gradients(
    model: VAE,
    x: torch.Tensor,
    options: PredictorOptions | None = None,
    need_rec: bool = True,
    need_kl: bool = True,
) -> GradientTerms:
    """One forward and at most two backward passes; call inside :func:`frozen` (or not).

    ``model`` may be a :class:`~.precision.AutocastModel` (reduced-precision passes)."""
    o = options or PredictorOptions()
    gen = None
    if o.smoothgrad_n > 0 or o.n_latent_samples > 1:
        gen = torch.Generator(device=x.device).manual_seed(o.seed)
    n = max(1, o.smoothgrad_n)
    xs = _noisy_copies(x, n, o.smoothgrad_noise, gen) if o.smoothgrad_n > 0 else x
    xs = xs.detach().requires_grad_(True)
    with torch.enable_grad():
        rec_px, kl = forward_terms(model, xs, o.n_latent_samples, gen)
        g_rec = g_kl = None
        if need_rec:
            g_rec = input_grad(model, rec_px.sum(), xs, retain_graph=need_kl)
        if need_kl:
            g_kl = input_grad(model, kl.sum(), xs)
    if o.smoothgrad_n > 0:
        g_rec = None if g_rec is None else g_rec.unflatten(0, (n, x.shape[0])).mean(dim=0)
        g_kl = None if g_kl is None else g_kl.unflatten(0, (n, x.shape[0])).mean(dim=0)
        with torch.no_grad():
            rec_px, _ = forward_terms(model, x, o.n_latent_samples, gen)
    return GradientTerms(rec_px.detach(), g_rec, g_kl)


def _abs_map(g: torch.Tensor) -> torch.Tensor:
    """|g| summed over channels, kept as (N, 1, S, S)."""
    return g.abs().sum(dim=1, keepdim=True)


def rec_grad_map(t: SharedTerms) -> torch.Tensor:
    """``rec_grad``: smooth(|∂L_rec/∂x|), (N, S, S)."""
    assert t.g_rec is not None
    return t.smooth(_abs_map(t.g_rec))[:, 0]


def kl_grad_map(t: SharedTerms) -> torch.Tensor:
    """``kl_grad``: smooth(|∂KL/∂x|), (N, S, S)."""
    assert t.g_kl is not None
    return t.smooth(_abs_map(t.g_kl))[:, 0]


def elbo_grad_map(t: SharedTerms) -> torch.Tensor:
    """``elbo_grad``: smooth(|∂L_rec/∂x + β ∂KL/∂x|), (N, S, S); no third backward pass."""
    assert t.g_rec is not None and t.g_kl is not None
    return t.smooth(_abs_map(t.g_rec + t.beta * t.g_kl))[:, 0]


def combi_map(t: SharedTerms) -> torch.Tensor:
    """``combi``: rec · smooth(minmax(|∂KL/∂x|)), (N, S, S)."""
    assert t.rec is not None and t.g_kl is not None
    rec = t.rec.sum(dim=1, keepdim=True)
    return (rec * t.smooth(minmax(_abs_map(t.g_kl))))[:, 0]


def combi_add_map(t: SharedTerms) -> torch.Tensor:
    """``combi_add``: minmax(kl_grad) + minmax(rec), per image, (N, S, S)."""
    return minmax(t.map("kl_grad")) + minmax(t.map("rec"))
