"""The MNI152 ICBM 2009c (symmetric, 09a release) template: real adult brain anatomy on disk.

The T1 template and its grey/white-matter probability maps ship inside the nilearn wheel
(``nilearn/datasets/data/mni_icbm152_*_tal_nlin_sym_09a_converted.nii.gz``), so realistic test
data needs no download: ``pip install "napari-vae-anomaly[realistic]"`` installs nilearn, and
this module only *reads* those three files (nilearn itself is never imported, so none of its
heavy dependencies load).

On machines without nilearn the arrays can come from an ``.npz`` written by
:func:`save_template_npz` (keys ``t1``, ``gm``, ``wm``, ``spacing``, ``origin``, ``direction``),
named by the ``NAPARI_VAE_ANOMALY_TEMPLATE`` environment variable.

numpy/scipy only at import time (napari imports the sample-data module at start-up).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import AnomalyError

TEMPLATE_ENV = "NAPARI_VAE_ANOMALY_TEMPLATE"
FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
INSTALL_HINT = (
    'the MNI152 template comes with nilearn: pip install "napari-vae-anomaly[realistic]" '
    f"(or set {TEMPLATE_ENV} to a template .npz)"
)


class TemplateMissing(AnomalyError, RuntimeError):
    """The MNI152 template files cannot be found (nilearn not installed)."""


@dataclass(frozen=True)
class Template:
    """Template arrays in (z, y, x) order at ``spacing`` mm (isotropic), values in [0, 1].

    ``t1``: the T1 template (0 outside the brain), ``gm``/``wm``/``csf``: tissue probabilities
    (``csf`` is what the brain holds beyond grey and white matter), ``brain``: bool mask.
    ``origin``/``direction`` are ITK-ordered (x, y, z), as in :class:`~..io.geometry.Geometry`.
    """

    t1: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    brain: np.ndarray
    spacing: float
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.t1.shape)


def template_folder() -> Path | None:
    """Where nilearn keeps the template files, or None (nilearn is located, not imported)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    return folder if all((folder / f).is_file() for f in FILES.values()) else None


def template_available() -> bool:
    """True when :func:`load_template` can work on this machine."""
    env = os.environ.get(TEMPLATE_ENV)
    return bool(env and Path(env).is_file()) or template_folder() is not None


def _read_raw() -> tuple[dict[str, np.ndarray], tuple, tuple]:
    env = os.environ.get(TEMPLATE_ENV)
    if env and Path(env).is_file():
        with np.load(env) as z:
            arrays = {k: np.asarray(z[k], np.float32) / 255.0 for k in FILES}  # stored as uint8
            spacing = float(np.asarray(z["spacing"]))
            if abs(spacing - 1.0) > 1e-6:
                raise TemplateMissing(f"{env}: template .npz must hold the 1 mm arrays")
            return arrays, tuple(z["origin"].tolist()), tuple(z["direction"].tolist())
    folder = template_folder()
    if folder is None:
        raise TemplateMissing(f"MNI152 template not found; {INSTALL_HINT}")
    import SimpleITK as sitk

    arrays, origin, direction = {}, (), ()
    for key, name in FILES.items():
        img = sitk.ReadImage(str(folder / name))
        arrays[key] = sitk.GetArrayFromImage(img).astype(np.float32) / 255.0
        origin, direction = img.GetOrigin(), img.GetDirection()
    return arrays, tuple(origin), tuple(direction)


def save_template_npz(path: str | Path) -> Path:
    """Write the 1 mm template arrays to ``path`` (uint8-compressed), for machines without
    nilearn (set ``NAPARI_VAE_ANOMALY_TEMPLATE`` to it there)."""
    arrays, origin, direction = _read_raw()
    path = Path(path)
    out: dict[str, Any] = {k: np.round(v * 255).astype(np.uint8) for k, v in arrays.items()}
    out.update(spacing=np.float64(1.0), origin=np.asarray(origin), direction=np.asarray(direction))
    np.savez_compressed(path, **out)
    return path


def _block_mean(a: np.ndarray, f: int) -> np.ndarray:
    s = tuple((n // f) * f for n in a.shape)
    a = a[: s[0], : s[1], : s[2]]
    return a.reshape(s[0] // f, f, s[1] // f, f, s[2] // f, f).mean(axis=(1, 3, 5))


@lru_cache(maxsize=4)
def load_template(spacing: int = 2) -> Template:
    """The template at ``spacing`` mm (1, 2 or 3; block-averaged from 1 mm), cached."""
    if spacing not in (1, 2, 3):
        raise ValueError(f"template spacing must be 1, 2 or 3 mm, got {spacing}")
    arrays, origin, direction = _read_raw()
    brain1 = arrays["t1"] > 0
    csf1 = np.clip(brain1 - arrays["gm"] - arrays["wm"], 0.0, 1.0)
    arrays = dict(arrays, csf=csf1, brain=brain1.astype(np.float32))
    if spacing > 1:
        arrays = {k: _block_mean(v, spacing) for k, v in arrays.items()}
        # the first block's centre moves half a block along each world axis (direction-aware)
        d = np.asarray(direction).reshape(3, 3)
        origin = tuple(np.asarray(origin) + d @ np.full(3, (spacing - 1) / 2.0))
    brain = arrays["brain"] >= 0.5
    out = {k: np.where(brain, arrays[k], 0.0).astype(np.float32) for k in ("t1", "gm", "wm", "csf")}
    return Template(
        out["t1"], out["gm"], out["wm"], out["csf"], brain, float(spacing),
        tuple(float(o) for o in origin), tuple(float(v) for v in direction),  # type: ignore[arg-type]
    )
