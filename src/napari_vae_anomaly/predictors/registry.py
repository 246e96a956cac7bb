"""The named predictors (anomaly maps), their options, and the table that dispatches them.

Every predictor is one :class:`PredictorInfo` entry in :data:`PREDICTORS`: a one-line formula
(shown as a GUI tooltip and in ``predict --help``), the shared terms it needs, and the function
that turns those terms into its map. :func:`predictors.batch.compute_maps` computes the union of
the requested predictors' terms once per batch (one forward pass, at most two backward passes,
the projection only when asked for) and then calls each entry's function; nothing else in the
package lists predictor names. Adding a predictor is its own module plus one entry here
(docs/adding_a_predictor.md).

==============  ==============================  =====================================
name            module                          needs
==============  ==============================  =====================================
``rec``         ``predictors/reconstruction``   one forward pass
``rec_grad``    ``predictors/gradients``        backward pass of the reconstruction
``kl_grad``     ``predictors/gradients``        backward pass of the KL term
``elbo_grad``   ``predictors/gradients``        both (no third pass: linear combination)
``combi``       ``predictors/gradients``        rec and the KL backward pass
``combi_add``   ``predictors/gradients``        rec and the KL backward pass
``energy``      ``predictors/energy``           T forward+backward passes
==============  ==============================  =====================================

This module imports no torch (the preferences and help texts read it); an entry names its map
function as ``"module:function"`` under ``predictors/`` and it is imported on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

#: the shared terms a predictor can ask for (see ``predictors/terms.py``)
RECONSTRUCTION = "reconstruction"  # pixel reconstruction error (N, C, S, S), z = μ
REC_GRADIENT = "rec_gradient"  # ∂(Σ L_rec)/∂x, signed (N, C, S, S)
KL_GRADIENT = "kl_gradient"  # ∂(Σ KL)/∂x, signed (N, C, S, S)
PROJECTION = "projection"  # the energy projection of the batch (an ``EnergyResult``)
TERMS: tuple[str, ...] = (RECONSTRUCTION, REC_GRADIENT, KL_GRADIENT, PROJECTION)


@dataclass(frozen=True)
class PredictorInfo:
    """One predictor, for users (GUI tooltips, CLI help) and for dispatch.

    ``needs``: the shared terms its map is computed from. ``compute``: ``"module:function"``
    (a module of ``predictors/``) or the function itself; it takes the batch's
    :class:`~.terms.SharedTerms` and returns the map (N, S, S). ``reference``: measured in the
    normal reference at the end of training (off for costly iterative maps).
    ``reduced_precision``: its map stays within 1e-3 of its float32 map's range when the
    model's passes run in bf16/fp16 (measured: ``benchmarks/bench_precision.py``); off for a
    new entry until it is measured, and then the batch runs in float32 whatever was asked.
    """

    name: str
    formula: str
    needs: tuple[str, ...]
    description: str
    compute: str | Callable[..., Any]
    reference: bool = True
    reduced_precision: bool = False

    def __post_init__(self) -> None:
        unknown = [t for t in self.needs if t not in TERMS]
        if unknown:
            raise ValueError(f"predictor {self.name!r} needs unknown term {unknown[0]!r}; terms: {TERMS}")

    @property
    def module(self) -> str:
        """Where its code lives (a module of ``predictors/``)."""
        if callable(self.compute):
            return str(self.compute.__module__).rsplit(".", 1)[-1]
        return self.compute.split(":", 1)[0]

    @property
    def needs_grad(self) -> bool:
        """True when a backward pass through the model is needed."""
        return any(t != RECONSTRUCTION for t in self.needs)

    def map_function(self) -> Callable[..., Any]:
        """The function that computes this predictor's map from the shared terms."""
        if callable(self.compute):
            return self.compute
        module, _, func = self.compute.partition(":")
        return getattr(importlib.import_module(f"{__package__}.{module}"), func)


PREDICTORS: dict[str, PredictorInfo] = {
    p.name: p
    for p in (
        PredictorInfo(
            "rec", "(x - x̂)²  (|x - x̂| for Laplace), z = μ", (RECONSTRUCTION,),
            "Pixel-wise reconstruction error of the posterior mean.", "reconstruction:rec_from_terms",
        ),
        PredictorInfo(
            "rec_grad", "smooth(|∂L_rec/∂x|)", (REC_GRADIENT,),
            "Input gradient of the reconstruction term, smoothed.", "gradients:rec_grad_map",
        ),
        PredictorInfo(
            "kl_grad", "smooth(|∂KL/∂x|)", (KL_GRADIENT,),
            "Input gradient of the KL term (Zimmerer et al. 2019), smoothed.", "gradients:kl_grad_map",
        ),
        PredictorInfo(
            "elbo_grad", "smooth(|∂L_rec/∂x + β ∂KL/∂x|)", (REC_GRADIENT, KL_GRADIENT),
            "Input gradient of the whole negative ELBO, smoothed.", "gradients:elbo_grad_map",
        ),
        PredictorInfo(
            "combi", "(x - x̂)² · smooth(minmax(|∂KL/∂x|))", (RECONSTRUCTION, KL_GRADIENT),
            "Reconstruction error weighted by the normalized KL gradient.", "gradients:combi_map",
        ),
        PredictorInfo(
            "combi_add", "minmax(kl_grad) + minmax(rec)", (RECONSTRUCTION, KL_GRADIENT),
            "Sum of the per-image normalized KL gradient and reconstruction maps.",
            "gradients:combi_add_map",
        ),
        PredictorInfo(
            "energy",
            "|x₀ - x_T|,  x_{t+1} = x_t - clip(α ∇E(x_t)·(x_t - f(x_t))², ±|x_t - f(x_t)|); "
            "α halved for a slice whose E would rise", (PROJECTION,),
            "Energy-based projection (Dehaene et al. 2020): how far each pixel moves when the "
            "slice is pulled towards the normal manifold, E = L(x) + λ‖x - x₀‖₁. A step never "
            "moves a pixel past its own reconstruction and never raises a slice's energy.",
            "energy:energy_from_terms", reference=False,
        ),
    )
}

#: what Detect and ``predict`` compute without options (with several names, their
#: reference-normalized ensemble would make the mask). Chosen on the realistic benchmark
#: (docs/results.md): elbo_grad had the best AUPRC of every map and ensemble there, and on
#: the issue's external data; the CLI, the widget, the preferences and the demo read it here.
DEFAULT_PREDICTORS: tuple[str, ...] = ("elbo_grad",)

#: predictors that come out of the shared forward + two backward passes (derived from the table)
GRADIENT_PREDICTORS: tuple[str, ...] = tuple(
    n for n, p in PREDICTORS.items() if p.needs_grad and PROJECTION not in p.needs
)
ENERGY_VARIANTS: tuple[str, ...] = ("x0_xT", "x0_fxT")
#: arithmetic of the model's passes: float32, or autocast to bfloat16 / float16 (the losses,
#: the gradients' sums and the maps stay float32; see ``predictors/precision``)
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")


@dataclass
class PredictorOptions:
    """Options shared by all predictors; defaults follow the reference work.

    * ``sigma``/``kernel``: 2-D Gaussian smoothing of gradient maps (reference: 7, sigma 3);
      ``sigma = 0`` turns it off.
    * ``smoothgrad_n``: average input gradients over n noisy copies (0 = off); ``smoothgrad_noise``
      is the noise standard deviation as a fraction of each slice's intensity range.
    * ``n_latent_samples``: 1 uses z = μ; more averages the reconstruction term over samples.
    * ``energy_*``: projection steps T, step size α, L1 weight λ, map variant
      ``"x0_xT"`` (|x₀ - x_T|) or ``"x0_fxT"`` (|x₀ - f(x_T)|). Each step is bounded by the
      pixel's residual |x_t - f(x_t)| and a step that raises a slice's energy is undone with α
      halved (see ``predictors/energy``), so α is no longer critical: on the phantom study
      models α 0.05-2 give voxel AUROC 0.92-0.95 at 3, 20 and 50 steps. α 0.2 is the default
      because its AUROC changes least with the step count; λ 1 (z-scored slices). Without the
      safeguards α 0.5 oscillated with period 2: AUROC 0.95 after odd, 0.49 after even steps.
      ``energy_tol`` > 0 stops a slice once an accepted step lowers its energy by less than
      that fraction (0, the default, runs every step: maps as measured; docs/benchmarks.md).
    * ``median``/``erode``: volume stage of every map (``predict_volume``): the brain mask
      the map is kept in is eroded by ``erode`` voxels (the brain outline is the classic false
      positive), then the map gets a 3-D median filter of ``median`` voxels a side (Baur et
      al. 2021: 5). On the realistic benchmark the median raised every map's AUPRC; erosion
      helped ``rec`` a little (+0.01-0.02 AUPRC) but cost ``elbo_grad``, the default map,
      0.016 AUROC for no AUPRC, so it is off by default (docs/results.md). 0 turns either off.
    * ``chunk``: slices per batch; bounds memory (halved automatically on out-of-memory).
    * ``precision``: ``"fp32"`` (default; IEEE float32, on CUDA too: no TF32), ``"bf16"`` or
      ``"fp16"``: the model's forward and backward passes under autocast, used only when every
      requested predictor is marked ``reduced_precision`` (:func:`precision_for`); none is, as
      measured (docs/benchmarks.md, GPU), so the Python API computes fp32 and warns.
    """

    sigma: float = 3.0
    kernel: int = 7
    smoothgrad_n: int = 0
    smoothgrad_noise: float = 0.1
    n_latent_samples: int = 1
    energy_steps: int = 20
    energy_alpha: float = 0.2
    energy_lambda: float = 1.0
    energy_variant: str = "x0_xT"
    energy_tol: float = 0.0
    median: int = 5
    erode: int = 0
    chunk: int = 32
    seed: int = 0
    precision: str = "fp32"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.sigma < 0 or self.kernel < 1 or self.kernel % 2 == 0:
            raise ValueError(f"smoothing needs sigma >= 0 and an odd kernel, got {self.sigma}, {self.kernel}")
        if self.smoothgrad_n < 0 or self.n_latent_samples < 1:
            raise ValueError("smoothgrad_n must be >= 0 and n_latent_samples >= 1")
        if min(self.energy_steps, self.energy_alpha, self.energy_lambda, self.energy_tol) < 0:
            raise ValueError("energy steps, alpha, lambda and tolerance must be >= 0")
        if self.energy_variant not in ENERGY_VARIANTS:
            raise ValueError(f"energy_variant must be one of {ENERGY_VARIANTS}, got {self.energy_variant!r}")
        if self.median < 0 or self.erode < 0:
            raise ValueError(f"median and erode must be >= 0, got {self.median}, {self.erode}")
        if self.chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {self.chunk}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, "
                             f"got {self.precision!r}")

    def replace(self, **changes: Any) -> PredictorOptions:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PredictorOptions:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def check_names(names: list[str] | tuple[str, ...] | str) -> list[str]:
    """Validate predictor names (order kept, duplicates dropped); ValueError names the bad one."""
    if isinstance(names, str):
        names = [names]
    out: list[str] = []
    for n in names:
        if n not in PREDICTORS:
            raise ValueError(f"unknown predictor {n!r}; choose from {', '.join(PREDICTORS)}")
        if n not in out:
            out.append(n)
    if not out:
        raise ValueError("no predictor chosen")
    return out


def terms_needed(names: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The shared terms the predictors ``names`` need together, in :data:`TERMS` order."""
    need = {t for n in names for t in PREDICTORS[n].needs}
    return tuple(t for t in TERMS if t in need)


def precision_for(names: list[str] | tuple[str, ...], precision: str) -> tuple[str, list[str]]:
    """The precision a batch of ``names`` really runs in, and the predictors that kept it
    float32 (those not marked ``reduced_precision``; they share the batch's passes, so one of
    them keeps the whole batch in float32)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return precision, []
    refused = [n for n in names if not PREDICTORS[n].reduced_precision]
    return ("fp32" if refused else precision), refused


def precision_note(names: list[str] | tuple[str, ...], precision: str) -> str | None:
    """One line for users when ``precision`` was asked for but float32 is used, else None."""
    used, refused = precision_for(names, precision)
    if used == precision:
        return None
    return (f"precision {precision} not used: {', '.join(refused)} "
            f"{'does' if len(refused) == 1 else 'do'} not stay within 1e-3 of float32 "
            "in reduced precision (docs/benchmarks.md, GPU); computing in fp32")


def describe(name: str) -> str:
    """``name: formula`` for help texts."""
    info = PREDICTORS[name]
    return f"{info.name}: {info.formula}"
