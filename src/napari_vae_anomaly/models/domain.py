"""Is this scan like the ones the model was trained on? A data profile and a domain check.

A VAE trained on brain FLAIR volumes still returns maps for a photograph, a CT or a 5x20x20
random array: the numbers mean nothing there, and nothing says so. Training therefore records
a *data profile* of its volumes in the model card (``training.data.profile``: dimensions,
size, spacing, foreground fraction and the shape of the intensity distribution), and
:func:`check_domain` compares a scan with it, returning readable warnings - never a refusal:
the user may know better (a new scanner, a deliberate test).

What is compared, and why these tolerances:

* dimensions and colour: a 2-D image or an RGB picture is not a scan of the trained kind;
* size: an axis under a quarter of the smallest training axis (and under 16 voxels) leaves
  too little anatomy for slices the model knows;
* spacing (mm, z/y/x): more than 2x away from the training range changes what a lesion of a
  given size looks like;
* the intensity distribution's shape, read as where the median of the foreground lies
  between its 1st and 99th percentiles ("median position"): it differs between contrasts
  (FLAIR, T1, CT) while the raw scale differs between scanners too much to compare; a margin
  of 0.15 outside the training range;
* the foreground fraction (the share of the volume the foreground mask covers), half to 1.5x
  the training range: a scan that is not skull-stripped, or another body part;
* negative intensities where training had none (CT's Hounsfield units, for instance).

Cards without a profile (older models) are checked against the shapes and spacings their
data summary lists, when present. Qt-free; used by the Detect widget and ``predict``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

PROFILE_KEY = "profile"
PROFILE_VERSION = 1
MAX_PROFILE_VOXELS = 4_000_000  # larger volumes are profiled on every second voxel per axis
SPACING_FACTOR = 2.0
MIN_AXIS = 16
AXIS_FRACTION = 0.25
POSITION_MARGIN = 0.15
FOREGROUND_LOW, FOREGROUND_HIGH = 0.5, 1.5


def is_rgb(data: Any) -> bool:
    """A colour picture: a last axis of 3 or 4 channels in 8-bit (what napari shows as RGB)."""
    a = np.asarray(data)
    return a.ndim >= 3 and a.shape[-1] in (3, 4) and a.dtype == np.uint8


def _subsample(a: np.ndarray) -> np.ndarray:
    return a[(slice(None, None, 2),) * a.ndim] if a.size > MAX_PROFILE_VOXELS else a


def volume_profile(data: Any, spacing_zyx: Sequence[float] | None = None) -> dict[str, Any]:
    """The profile of one volume: ndim, shape, spacing (mm, z/y/x), foreground fraction,
    foreground intensity percentiles (1, 50, 99) and the median's position between them."""
    from ..preprocessing import foreground_mask

    a = np.asarray(data, dtype=np.float32)
    small = _subsample(a)
    small = np.where(np.isfinite(small), small, 0.0)
    fg = foreground_mask(small) if small.size else np.zeros(small.shape, bool)
    values = small[fg] if fg.any() else small.ravel()
    p1, p50, p99 = (float(v) for v in np.percentile(values, (1, 50, 99))) if values.size \
        else (0.0, 0.0, 0.0)
    return {
        "ndim": int(a.ndim),
        "shape": [int(n) for n in a.shape],
        "spacing": [float(s) for s in spacing_zyx] if spacing_zyx is not None else None,
        "foreground_fraction": float(fg.mean()) if fg.size else 0.0,
        "intensity_percentiles": [p1, p50, p99],
        "median_position": (p50 - p1) / (p99 - p1) if p99 > p1 else 0.5,
    }


def _range(values: list[Any]) -> list[Any]:
    arr = np.asarray(values)  # integers (shapes) stay integers
    return [arr.min(axis=0).tolist(), arr.max(axis=0).tolist()]


def data_profile(profiles: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The training data's profile from per-volume ones: ranges ([min, max]) of each figure."""
    if not profiles:
        return {}
    spacings = [p["spacing"] for p in profiles if p.get("spacing") is not None]
    same_ndim = len({p["ndim"] for p in profiles}) == 1
    return {
        "version": PROFILE_VERSION,
        "volumes": len(profiles),
        "ndim": int(profiles[0]["ndim"]) if same_ndim else None,
        "shape": _range([p["shape"] for p in profiles]) if same_ndim else None,
        "spacing": _range(spacings) if spacings and same_ndim else None,
        "foreground_fraction": _range([p["foreground_fraction"] for p in profiles]),
        "intensity_p1": _range([p["intensity_percentiles"][0] for p in profiles]),
        "median_position": _range([p["median_position"] for p in profiles]),
    }


def profile_of_card(card: Mapping[str, Any]) -> dict[str, Any]:
    """The card's training data profile; for older cards, one built from the listed shapes
    and ITK-ordered spacings of the data summary (only size and spacing then); {} if none."""
    data = ((card.get("training") or {}).get("data") or {}) if isinstance(card, Mapping) else {}
    profile = data.get(PROFILE_KEY)
    if isinstance(profile, Mapping) and profile:
        return dict(profile)
    shapes, spacings = data.get("shapes") or [], data.get("spacing") or []
    if not shapes:
        return {}
    ndims = {len(s) for s in shapes}
    if len(ndims) != 1:
        return {}
    out: dict[str, Any] = {"volumes": len(shapes), "ndim": ndims.pop(), "shape": _range(shapes)}
    if spacings and len(spacings) == len(shapes):
        out["spacing"] = _range([list(s)[::-1] for s in spacings])
    return out


def _fmt(values: Sequence[float] | np.ndarray, unit: str = "") -> str:
    return " x ".join(f"{v:.3g}" for v in values) + unit


def _span(lo: Sequence[float] | np.ndarray, hi: Sequence[float] | np.ndarray, unit: str = "") -> str:
    return _fmt(lo, unit) if np.allclose(lo, hi) else f"{_fmt(lo)} to {_fmt(hi, unit)}"


def _size_warnings(scan: Mapping[str, Any], prof: Mapping[str, Any]) -> list[str]:
    out = []
    if prof.get("ndim") == 3 and scan["ndim"] == 2:
        out.append("a 2-D image (a photograph or a single slice?); the model was trained on "
                   f"3-D volumes of {_span(*prof['shape'])} voxels")
        return out
    shape = prof.get("shape")
    if shape and len(shape[0]) == scan["ndim"]:
        small = [n < MIN_AXIS and n < AXIS_FRACTION * lo for n, lo in zip(scan["shape"], shape[0],
                                                                          strict=True)]
        if any(small):
            out.append(f"{_fmt(scan['shape'])} voxels, far smaller than the training volumes "
                       f"({_span(*shape)})")
    spacing = prof.get("spacing")
    if spacing and scan.get("spacing") and len(spacing[0]) == scan["ndim"]:
        lo, hi = np.asarray(spacing[0]), np.asarray(spacing[1])
        s = np.asarray(scan["spacing"])
        if np.any(s < lo / SPACING_FACTOR) or np.any(s > hi * SPACING_FACTOR):
            out.append(f"voxel spacing {_fmt(s, ' mm')}, unlike the training data's "
                       f"{_span(lo, hi, ' mm')}")
    return out


def _intensity_warnings(scan: Mapping[str, Any], prof: Mapping[str, Any]) -> list[str]:
    out = []
    pos = prof.get("median_position")
    if pos and not pos[0] - POSITION_MARGIN <= scan["median_position"] <= pos[1] + POSITION_MARGIN:
        out.append(f"an intensity distribution unlike the training data's (median at "
                   f"{scan['median_position']:.2f} of the 1-99 % range, training "
                   f"{pos[0]:.2f}-{pos[1]:.2f}): another modality or contrast?")
    fg = prof.get("foreground_fraction")
    f = scan["foreground_fraction"]
    if fg and not FOREGROUND_LOW * fg[0] <= f <= min(1.0, FOREGROUND_HIGH * fg[1]):
        out.append(f"a foreground covering {100 * f:.0f} % of the volume (training "
                   f"{100 * fg[0]:.0f}-{100 * fg[1]:.0f} %): not skull-stripped, or another "
                   "body part?")
    p1 = prof.get("intensity_p1")
    lo, _mid, hi = scan["intensity_percentiles"]
    if p1 and p1[0] >= 0 and lo < -0.05 * max(abs(hi), 1e-12):
        out.append("negative intensities (CT Hounsfield units?) where the training data had none")
    return out


def check_domain(data: Any, spacing_zyx: Sequence[float] | None,
                 card: Mapping[str, Any]) -> list[str]:
    """Readable reasons why ``data`` is unlike the model's training data ([] when alike).

    ``spacing_zyx``: voxel size in mm in array order (None when unknown: not compared).
    """
    if is_rgb(data):
        return ["an RGB colour image, which is not supported: the model was trained on "
                "single-channel scans"]
    prof = profile_of_card(card)
    if not prof:
        return []
    a = np.asarray(data)
    if a.ndim not in (2, 3) or a.size == 0:
        return [f"a {a.ndim}-D array of shape {a.shape}; the model expects 3-D scans"]
    scan = volume_profile(a, spacing_zyx)
    try:  # a hand-made or foreign card may hold anything under "profile"
        out = _size_warnings(scan, prof)
        if scan["ndim"] == prof.get("ndim") and "median_position" in prof:
            out += _intensity_warnings(scan, prof)
    except (TypeError, ValueError, KeyError, IndexError):
        return ["the model card's training data profile is unreadable, so the scan was not "
                "compared with it"]
    return out


def domain_message(warnings: Sequence[str], model_name: str) -> str:
    """One line for a notification or the CLI: the warnings joined after a lead-in."""
    return (f"this scan is unlike the data model {model_name!r} was trained on: "
            + "; ".join(warnings) + ". Its maps may mean little")


def domain_warnings(data: Any, spacing_zyx: Sequence[float] | None,
                    models: Sequence[Any]) -> list[str]:
    """One :func:`domain_message` per model (anything with ``name`` and ``card``) the scan is
    unlike; [] when it is like all of them."""
    out = []
    for model in models:
        found = check_domain(data, spacing_zyx, getattr(model, "card", {}) or {})
        if found:
            out.append(domain_message(found, str(getattr(model, "name", "model"))))
    return out
