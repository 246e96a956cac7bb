"""Energy-based projection (Dehaene et al., ICLR 2020) of a whole chunk of slices at once.

Each slice is pulled towards the normal manifold while being kept close to itself::

    E(x_t) = L(x_t) + λ ‖x_t - x_0‖₁            (L = Σ_pixels L_rec + β KL, z = μ)
    d_t     = α_n · ∇ₓE(x_t) ⊙ (x_t - f(x_t))²
    x_{t+1} = x_t - clip(d_t, ±|x_t - f(x_t)|)   if E(x_{t+1}) ≤ E(x_t), else x_t and α_n ← α_n / 2

The squared reconstruction error keeps well-explained (normal) pixels still. ``∇ₓE`` is taken
through the encoder *and* the decoder at every step (f(x_t) is not detached inside the loss;
only the weight is a constant).

Why the two safeguards: for the dominant (direct) part of the gradient, 2 (x - f(x)), the raw
step moves a pixel by 2α r³ (r its residual), i.e. it overshoots its own reconstruction once
2α r² > 1. With z-scored slices (residuals up to ~5) a large α made lesion pixels swing past
f(x) and back on alternate steps: the map was good after an odd number of steps and at chance
after an even one. So (1) no pixel moves further than its current residual in one step
(scale-free: the bound is in the image's own units, so slices stay comparable), and (2) a step
that raises an image's energy is undone and that image's step size α_n halved (backtracking):
the energy trace is non-increasing by construction, for any α, β, image size or step count.
Each step still costs one forward + backward pass (a rejected step is re-tried at the next one).

The anomaly map is how far each pixel moved, |x_0 - x_T|, or |x_0 - f(x_T)|. Steps are also
clamped to each slice's input intensity range. Pixels outside ``mask`` (background) stay fixed.

Early stop (``options.energy_tol`` > 0, off by default so default maps are unchanged):
a slice stops once an accepted step lowered its energy by less than ``tol`` times the energy
(its energy no longer falls); later passes run on the slices still moving only, and the run
ends when none is. ``EnergyResult.steps`` says how many steps each slice took.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..models.vae import VAE
from .precision import input_grad
from .registry import PredictorOptions

if TYPE_CHECKING:
    from .terms import SharedTerms


@dataclass
class EnergyResult:
    """``map`` (N, S, S); ``x_T`` and ``f_x_T`` (N, C, S, S); ``trace`` (T + 1, N) energies
    (non-increasing; shorter after an early stop of every slice); ``alpha`` (N,) the step size
    each image ended with."""

    map: torch.Tensor
    x_T: torch.Tensor
    f_x_T: torch.Tensor
    trace: torch.Tensor
    alpha: torch.Tensor | None = None
    steps: torch.Tensor | None = None  # (N,) steps each slice took (early stop)


def energy_tolerance(options: PredictorOptions) -> float:
    """The early-stop tolerance (relative energy decrease; 0 = run every step)."""
    tol = float(options.energy_tol)
    if tol < 0:
        raise ValueError(f"energy_tol must be >= 0, got {tol}")
    return tol


def _energy(model: VAE, xt: torch.Tensor, x0: torch.Tensor, lam: float):
    """Per-image energy (N,) and the reconstruction f(x_t), differentiable w.r.t. x_t."""
    mu, logvar = model.encode(xt)
    x_hat = model.decode(mu)
    rec = model.pixel_rec(xt, x_hat).flatten(1).sum(dim=1)
    e = rec + model.beta * model.kl(mu, logvar) + lam * (xt - x0).abs().flatten(1).sum(dim=1)
    return e, x_hat


def _energy_and_grad(model: VAE, xt: torch.Tensor, x0: torch.Tensor, lam: float):
    """Energy (N,), f(x_t) and ∇ₓE, all detached."""
    xt = xt.detach().requires_grad_(True)
    with torch.enable_grad():
        e, x_hat = _energy(model, xt, x0, lam)
        g = input_grad(model, e.sum(), xt)
    return e.detach(), x_hat.detach(), g


def _step(model: VAE, state: dict[str, torch.Tensor], lam: float, shape: tuple[int, ...],
          backtrack: bool, bound: bool) -> torch.Tensor:
    """One projection step of every image in ``state`` (updated in place); returns the
    energy decrease of each image (0 for a rejected step)."""
    xt, x_hat, g, e, alpha = (state[k] for k in ("xt", "x_hat", "g", "e", "alpha"))
    with torch.no_grad():
        r = xt - x_hat
        step = alpha.view(shape) * g * r.pow(2)
        if bound:
            step = torch.maximum(torch.minimum(step, r.abs()), -r.abs())
        if state.get("keep") is not None:
            step = step * state["keep"]
        cand = torch.minimum(torch.maximum(xt - step, state["lo"]), state["hi"])
    e_c, x_hat_c, g_c = _energy_and_grad(model, cand, state["x0"], lam)
    if not backtrack:
        state.update(xt=cand, x_hat=x_hat_c, g=g_c, e=e_c)
        return e - e_c
    ok = e_c <= e
    okv = ok.view(shape)
    state.update(xt=torch.where(okv, cand, xt), x_hat=torch.where(okv, x_hat_c, x_hat),
                 g=torch.where(okv, g_c, g), e=torch.where(ok, e_c, e),
                 alpha=torch.where(ok, alpha, alpha / 2))
    return torch.where(ok, e - e_c, torch.zeros_like(e))


def energy_projection(
    model: VAE,
    x: torch.Tensor,
    options: PredictorOptions | None = None,
    mask: torch.Tensor | None = None,
    *,
    backtrack: bool = True,
    bound: bool = True,
) -> EnergyResult:
    """Project a batch (N, C, S, S) for ``options.energy_steps`` steps; see the module doc.

    ``backtrack`` / ``bound`` switch the two safeguards off, only to compare with the plain
    update of the paper (which oscillates for a large α); keep them on otherwise. ``model``
    may be a :class:`~.precision.AutocastModel`: its passes then run in reduced precision and
    the energies, steps and map stay float32.
    """
    o = options or PredictorOptions()
    tol = energy_tolerance(o)
    x0 = x.detach()
    shape = (-1, *([1] * (x0.dim() - 1)))
    st: dict[str, torch.Tensor] = {
        "x0": x0, "xt": x0.clone(),
        "lo": x0.flatten(1).min(dim=1).values.view(shape),
        "hi": x0.flatten(1).max(dim=1).values.view(shape),
        "alpha": torch.full((x0.shape[0],), float(o.energy_alpha), dtype=x0.dtype,
                            device=x0.device),
    }
    if mask is not None:
        st["keep"] = mask.to(dtype=x0.dtype, device=x0.device)
    st["e"], st["x_hat"], st["g"] = _energy_and_grad(model, st["xt"], x0, o.energy_lambda)
    trace = [st["e"]]
    steps = torch.zeros(x0.shape[0], dtype=torch.long, device=x0.device)
    active = torch.ones(x0.shape[0], dtype=torch.bool, device=x0.device)
    for _ in range(o.energy_steps):
        if tol <= 0:  # every image, every step (the default: maps as before)
            _step(model, st, o.energy_lambda, shape, backtrack, bound)
            steps += 1
        else:
            idx = active.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            sub = {k: v[idx] for k, v in st.items()}
            fell = _step(model, sub, o.energy_lambda, shape, backtrack, bound)
            for k in ("xt", "x_hat", "g", "e", "alpha"):
                st[k] = st[k].index_copy(0, idx, sub[k])
            steps[idx] += 1
            accepted = fell > 0
            settled = accepted & (fell < tol * sub["e"].abs())
            active[idx[settled]] = False
        trace.append(st["e"])
    f_xT = st["x_hat"]
    ref = st["xt"] if o.energy_variant == "x0_xT" else f_xT
    amap = (x0 - ref).abs().sum(dim=1)
    return EnergyResult(amap, st["xt"], f_xT, torch.stack(trace), st["alpha"], steps)


def energy_from_terms(terms: SharedTerms) -> torch.Tensor:
    """The ``energy`` registry entry: the batch's projection map (N, S, S)."""
    assert terms.projection is not None
    return terms.projection.map
