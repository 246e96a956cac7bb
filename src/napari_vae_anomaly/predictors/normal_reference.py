"""Normal-reference statistics of every map, measured on whole normal volumes.

Why: a map's scale differs from model to model and predictor to predictor, so ensembles
normalize their members and masks need a threshold. Normalizing with the *test volume's own*
statistics lets the lesions it holds shift them; thresholds from single reference slices miss
the volume stage (erosion, 3-D median filter). So at the end of training the held-out normal
*volumes* go through :func:`~.pipeline.predict_volume` exactly as a test volume would
(:func:`~.reference_measurement.measure_normal_reference`), and a
voxel-aligned sample of every map's normal scores (the same voxels for every map, so any
ensemble of them can be formed afterwards) is stored in the checkpoint with exact means and
standard deviations.

The reference is valid for the predictor options it was measured with (smoothing, erosion,
median, ...); :meth:`NormalReference.matches` says whether it applies, and callers fall back
to per-volume normalization and reference-slice thresholds when it does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .registry import PREDICTORS, PredictorOptions

if TYPE_CHECKING:
    from ..models.checkpoint import LoadedModel

#: options that change a map's values (chunk and seed do not)
OPTION_KEYS: tuple[str, ...] = (
    "sigma", "kernel", "smoothgrad_n", "smoothgrad_noise", "n_latent_samples", "median", "erode",
)
#: predictors measured at training time: the registry's entries marked ``reference`` (all but
#: the iterative, costly projection)
REFERENCE_PREDICTORS: tuple[str, ...] = tuple(n for n, p in PREDICTORS.items() if p.reference)
SAMPLE_SIZE = 16384
MAX_SAMPLE = 1 << 20


def option_subset(options: PredictorOptions | dict[str, Any]) -> dict[str, Any]:
    d = options.to_dict() if isinstance(options, PredictorOptions) else dict(options)
    return {k: d.get(k) for k in OPTION_KEYS}


@dataclass
class NormalReference:
    """Normal scores of ``names`` (``scores[i]`` belongs to ``names[i]``, same voxels)."""

    names: list[str]
    scores: np.ndarray  # (M, K) float32
    options: dict[str, Any]
    mean: dict[str, float]
    std: dict[str, float]
    volumes: int = 0
    voxels: int = 0
    in_sample: bool = False  # measured on training volumes (too few to hold any out)
    extra: dict[str, Any] = field(default_factory=dict)

    def matches(self, options: PredictorOptions | None, names: Sequence[str] = ()) -> bool:
        """True when maps made with ``options`` have this reference's distribution."""
        o = option_subset(options or PredictorOptions())
        same = all(_close(o[k], self.options.get(k)) for k in OPTION_KEYS)
        return same and all(n in self.names for n in names)

    def values(self, name: str) -> np.ndarray:
        return self.scores[self.names.index(name)]

    def stats(self, name: str) -> tuple[float, float]:
        """(mean, std) of the normal scores of ``name``; std is never 0."""
        sd = float(self.std[name])
        return float(self.mean[name]), sd if sd > 0 else 1.0

    def normalized(self, name: str) -> np.ndarray:
        mu, sd = self.stats(name)
        return (self.values(name) - mu) / sd

    def card(self) -> dict[str, Any]:
        """What goes into the model card (the scores go in a tensor of their own)."""
        return {"names": list(self.names), "options": dict(self.options),
                "mean": dict(self.mean), "std": dict(self.std), "volumes": self.volumes,
                "voxels": self.voxels, "in_sample": self.in_sample,
                "sample": int(self.scores.shape[1])}

    @classmethod
    def from_card(cls, d: Any, scores: np.ndarray) -> NormalReference:
        """Rebuild from a card entry and its tensor; ValueError names what is wrong."""
        if not isinstance(d, dict):
            raise ValueError("normal_reference must be an object")
        names = d.get("names")
        if not isinstance(names, list) or not names or not all(n in PREDICTORS for n in names):
            raise ValueError(f"normal_reference names must be known predictors, got {names!r}"[:200])
        s = np.asarray(scores, np.float32)
        if s.ndim != 2 or s.shape[0] != len(names) or not 1 <= s.shape[1] <= MAX_SAMPLE:
            raise ValueError(f"normal scores of shape {s.shape} do not match {len(names)} maps")
        if not np.isfinite(s).all():
            raise ValueError("normal scores are not finite")
        mean, std, opts = d.get("mean"), d.get("std"), d.get("options")
        for what, v in (("mean", mean), ("std", std)):
            if not isinstance(v, dict) or set(v) != set(names) or not all(
                isinstance(x, int | float) and np.isfinite(x) for x in v.values()
            ):
                raise ValueError(f"normal_reference {what} must give a finite number per map")
        if not isinstance(opts, dict):
            raise ValueError("normal_reference options must be an object")
        assert isinstance(mean, dict) and isinstance(std, dict)  # checked above
        return cls(list(names), s, {k: opts.get(k) for k in OPTION_KEYS},
                   {k: float(v) for k, v in mean.items()}, {k: float(v) for k, v in std.items()},
                   int(d.get("volumes", 0) or 0), int(d.get("voxels", 0) or 0),
                   bool(d.get("in_sample", False)))


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, int | float) and isinstance(b, int | float):
        return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(a)))
    return a == b


def references_of(models: Sequence[LoadedModel], names: Sequence[str],
                  options: PredictorOptions | None) -> list[NormalReference] | None:
    """Every model's reference when all have one that applies, else None."""
    refs = [getattr(m, "normal_reference", None) for m in models]
    if refs and all(r is not None and r.matches(options, names) for r in refs):
        return refs  # type: ignore[return-value]
    return None


def resolve_normalization(method: str, models: Sequence[LoadedModel], names: Sequence[str],
                          options: PredictorOptions | None) -> tuple[str, list[NormalReference] | None]:
    """``"reference"`` when asked for and every model has an applicable reference; else the
    per-volume ``"zscore"`` fallback (other methods pass through)."""
    if method != "reference":
        return method, None
    refs = references_of(models, names, options)
    return ("reference", refs) if refs is not None else ("zscore", None)
