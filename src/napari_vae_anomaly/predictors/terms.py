"""The shared terms of one batch, computed once for all the predictors asked for.

Predictors overlap: ``rec``, the five gradient maps and their combinations come from one
forward pass and at most two backward passes, so :func:`compute_terms` runs exactly the passes
that the union of the requested entries' ``needs`` calls for, and each predictor's function
(named in its registry entry) turns the :class:`SharedTerms` into its map. A map may build on
another predictor's map through :meth:`SharedTerms.map`, which computes each map once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from . import registry
from .energy import energy_projection
from .gradients import input_gradients
from .precision import with_precision
from .reconstruction import forward_terms
from .registry import KL_GRADIENT, PROJECTION, REC_GRADIENT, RECONSTRUCTION, PredictorOptions
from .smoothing import smooth2d

if TYPE_CHECKING:
    from ..models.vae import VAE
    from .energy import EnergyResult


@dataclass
class SharedTerms:
    """One batch ``x`` (N, C, S, S) and the terms computed for it (None when not needed).

    ``rec``: pixel reconstruction error (N, C, S, S); ``g_rec``/``g_kl``: signed input
    gradients of Σ L_rec and Σ KL (N, C, S, S); ``projection``: the energy projection.
    """

    model: VAE
    x: torch.Tensor
    options: PredictorOptions
    mask: torch.Tensor | None = None
    rec: torch.Tensor | None = None
    g_rec: torch.Tensor | None = None
    g_kl: torch.Tensor | None = None
    projection: EnergyResult | None = None
    _maps: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def beta(self) -> float:
        return self.model.beta

    def smooth(self, maps: torch.Tensor) -> torch.Tensor:
        """The options' in-plane Gaussian smoothing of (N, 1, S, S) maps."""
        return smooth2d(maps, self.options.sigma, self.options.kernel)

    def map(self, name: str) -> torch.Tensor:
        """Predictor ``name``'s map (N, S, S), computed on first request and kept."""
        if name not in self._maps:
            info = registry.PREDICTORS[name]
            missing = [t for t in info.needs if getattr(self, _FIELDS[t]) is None]
            if missing:
                raise ValueError(f"predictor {name!r} needs {', '.join(missing)}, not computed for this batch")
            self._maps[name] = info.map_function()(self)
        return self._maps[name]


#: which attribute holds each term
_FIELDS = {RECONSTRUCTION: "rec", REC_GRADIENT: "g_rec", KL_GRADIENT: "g_kl", PROJECTION: "projection"}


def compute_terms(
    model: VAE,
    x: torch.Tensor,
    needs: Iterable[str],
    options: PredictorOptions,
    mask: torch.Tensor | None = None,
) -> SharedTerms:
    """Run the passes ``needs`` calls for (call inside :func:`~.gradients.frozen`).

    Any gradient term means one forward and one or two backward passes, which yield the
    reconstruction error too; the reconstruction alone is one forward pass without autograd;
    the projection runs only when asked for. ``mask`` marks the pixels the projection may move.
    ``options.precision`` other than fp32 runs the model's passes under autocast (the terms
    stay float32); whether the predictors allow it is decided by the caller
    (:func:`~.batch.compute_maps` via :func:`~.registry.precision_for`).
    """
    need = set(needs)
    terms = SharedTerms(model, x, options, mask)
    run = with_precision(model, options.precision)
    need_rec, need_kl = REC_GRADIENT in need, KL_GRADIENT in need
    if need_rec or need_kl:
        g = input_gradients(run, x, options, need_rec=need_rec, need_kl=need_kl)
        terms.rec, terms.g_rec, terms.g_kl = g.rec, g.g_rec, g.g_kl
    elif RECONSTRUCTION in need:
        with torch.no_grad():
            terms.rec = forward_terms(run, x, options.n_latent_samples)[0]
    if PROJECTION in need:
        terms.projection = energy_projection(run, x, options, mask=mask)
    return terms
