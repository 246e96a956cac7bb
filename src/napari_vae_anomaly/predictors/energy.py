"""Energy-based projection (Dehaene et al., ICLR 2020) of a whole chunk of slices at once.

Each slice is pulled towards the normal manifold while being kept close to itself::

    E(x_t) = L(x_t) + λ ‖x_t - x_0‖₁            (L = L_rec + β KL, z = μ)
    x_{t+1} = x_t - α · ∇ₓE(x_t) ⊙ (x_t - f(x_t))²

The squared reconstruction error keeps well-explained (normal) pixels still. ``∇ₓE`` is taken
through the encoder *and* the decoder at every step (f(x_t) is not detached inside the loss;
only the weight is a constant). The anomaly map is how far each pixel moved, |x_0 - x_T|, or
|x_0 - f(x_T)|. Steps are clamped to each slice's input intensity range so an over-large α
cannot diverge. Pixels outside ``mask`` (background) are kept fixed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models.vae import VAE
from .registry import PredictorOptions


@dataclass
class EnergyResult:
    """``map`` (N, S, S); ``x_T`` and ``f_x_T`` (N, C, S, S); ``trace`` (T + 1, N) energies."""

    map: torch.Tensor
    x_T: torch.Tensor
    f_x_T: torch.Tensor
    trace: torch.Tensor


def _energy(model: VAE, xt: torch.Tensor, x0: torch.Tensor, lam: float):
    """Per-image energy (N,) and the reconstruction f(x_t), differentiable w.r.t. x_t."""
    mu, logvar = model.encode(xt)
    x_hat = model.decode(mu)
    rec = model.pixel_rec(xt, x_hat).flatten(1).sum(dim=1)
    e = rec + model.beta * model.kl(mu, logvar) + lam * (xt - x0).abs().flatten(1).sum(dim=1)
    return e, x_hat


def energy_projection(
    model: VAE,
    x: torch.Tensor,
    options: PredictorOptions | None = None,
    mask: torch.Tensor | None = None,
) -> EnergyResult:
    """Project a batch (N, C, S, S) for ``options.energy_steps`` steps; see the module doc."""
    o = options or PredictorOptions()
    x0 = x.detach()
    lo = x0.flatten(1).min(dim=1).values.view(-1, *([1] * (x0.dim() - 1)))
    hi = x0.flatten(1).max(dim=1).values.view(-1, *([1] * (x0.dim() - 1)))
    keep = None if mask is None else mask.to(dtype=x0.dtype, device=x0.device)
    xt = x0.clone()
    trace = []
    for _ in range(o.energy_steps):
        xt = xt.detach().requires_grad_(True)
        with torch.enable_grad():
            e, x_hat = _energy(model, xt, x0, o.energy_lambda)
            (g,) = torch.autograd.grad(e.sum(), xt)
        trace.append(e.detach())
        with torch.no_grad():
            step = o.energy_alpha * g * (xt - x_hat).pow(2)
            if keep is not None:
                step = step * keep
            xt = torch.minimum(torch.maximum(xt - step, lo), hi)
    with torch.no_grad():
        e, f_xT = _energy(model, xt.detach(), x0, o.energy_lambda)
    trace.append(e)
    xt = xt.detach()
    ref = xt if o.energy_variant == "x0_xT" else f_xT
    amap = (x0 - ref).abs().sum(dim=1)
    return EnergyResult(amap, xt, f_xT.detach(), torch.stack(trace))
