"""Preprocessing shared by training and prediction: foreground, normalization, slicing.

The VAE works on square 2-D slices of a fixed size, so a volume is

1. masked: ``foreground_mask`` finds the brain (non-zero voxels of a skull-stripped scan, or
   an Otsu threshold when the background is not zero);
2. normalized: intensities are clipped to percentiles of the foreground and z-scored over the
   foreground, then clipped to +-``z_clip``; everything outside the foreground is set to
   ``background``;
3. sliced along ``axis``, each slice padded (centred) to a square with the background value and
   resized to ``size`` x ``size`` (bilinear for images, nearest for masks).

:class:`PreprocessConfig` is stored in every checkpoint so prediction repeats this exactly,
and :func:`from_slices` undoes step 3 for anomaly maps (resize back, crop, restack).

Why ``background = -z_clip`` by default: like air on a real scan, the background is then the
darkest value, the brain outline is an edge the model must reproduce, and zero (the mean
tissue value) never stands for "no tissue". numpy/scipy only: this module is imported by the
GUI at start-up and must not pull in torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from .errors import AnomalyError

FOREGROUND_METHODS = ("auto", "nonzero", "otsu", "all")
MIN_FOREGROUND_VOXELS = 8


class PreprocessError(AnomalyError, ValueError):
    """An image or option cannot be preprocessed (NaN, empty foreground, constant image...)."""


@dataclass
class PreprocessConfig:
    """How a volume becomes model input. Recorded in checkpoints (``to_dict``/``from_dict``).

    ``axis``: array axis to slice along (0 = z for (z, y, x) arrays, i.e. axial slices).
    ``skip_slices``: slices dropped at each end of the axis, training only.
    ``size``: side of the square model input. ``clip_percentiles``: foreground percentiles
    the raw intensities are clipped to before the z-score. ``z_clip``: z-scores are clipped to
    +-z_clip. ``background``: value of non-foreground pixels (default -z_clip, see module
    doc). ``min_foreground_fraction``: training skips slices whose foreground covers less of
    the (unpadded) slice. ``foreground``: method of :func:`foreground_mask`.
    """

    axis: int = 0
    skip_slices: int = 0
    size: int = 64
    clip_percentiles: tuple[float, float] = (0.5, 99.5)
    z_clip: float = 3.0
    background: float | None = None
    min_foreground_fraction: float = 0.05
    foreground: str = "auto"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.clip_percentiles = tuple(float(p) for p in self.clip_percentiles)  # type: ignore[assignment]
        self.z_clip = float(self.z_clip)
        if self.background is None:
            self.background = -self.z_clip
        self.background = float(self.background)
        if self.axis not in (0, 1, 2):
            raise PreprocessError(f"preprocess axis must be 0, 1 or 2, got {self.axis}")
        self.axis = int(self.axis)
        if int(self.skip_slices) != self.skip_slices or self.skip_slices < 0:
            raise PreprocessError(f"skip_slices must be an integer >= 0, got {self.skip_slices}")
        self.skip_slices = int(self.skip_slices)
        if int(self.size) != self.size or self.size < 4:
            raise PreprocessError(f"preprocess size must be an integer >= 4, got {self.size}")
        self.size = int(self.size)
        lo_hi = self.clip_percentiles
        if len(lo_hi) != 2 or not 0.0 <= lo_hi[0] < lo_hi[1] <= 100.0:
            raise PreprocessError(
                f"clip_percentiles must be (low, high) with 0 <= low < high <= 100, got {lo_hi}"
            )
        if not np.isfinite(self.z_clip) or self.z_clip <= 0:
            raise PreprocessError(f"z_clip must be a positive number, got {self.z_clip}")
        if not np.isfinite(self.background):
            raise PreprocessError(f"background must be finite, got {self.background}")
        if not 0.0 <= self.min_foreground_fraction < 1.0:
            raise PreprocessError(
                f"min_foreground_fraction must be in [0, 1), got {self.min_foreground_fraction}"
            )
        if self.foreground not in FOREGROUND_METHODS:
            raise PreprocessError(
                f"foreground method must be one of {FOREGROUND_METHODS}, got {self.foreground!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["clip_percentiles"] = list(self.clip_percentiles)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessConfig:
        """Inverse of :meth:`to_dict`; unknown keys (from newer versions) are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# --------------------------------------------------------------------------- checks
def _as_finite_array(data: Any, what: str = "image") -> np.ndarray:
    a = np.asarray(data)
    if a.dtype.kind not in "biuf":
        raise PreprocessError(f"{what} must be numeric, got dtype {a.dtype}")
    if a.ndim not in (2, 3):
        raise PreprocessError(f"{what} must be 2-D or 3-D, got shape {a.shape}")
    if a.size == 0 or min(a.shape) < 1:
        raise PreprocessError(f"{what} is empty (shape {a.shape})")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        n = int((~np.isfinite(a)).sum())
        raise PreprocessError(f"{what} has {n} NaN/Inf voxels; replace them before preprocessing")
    return a


# --------------------------------------------------------------------------- foreground
def _otsu_threshold(values: np.ndarray, bins: int = 256,
                    value_range: tuple[np.float64, np.float64] | None = None) -> float:
    hist, edges = np.histogram(values, bins=bins, range=value_range)
    centres = (edges[:-1] + edges[1:]) / 2.0
    w0 = np.cumsum(hist).astype(float)
    w1 = w0[-1] - w0
    m = np.cumsum(hist * centres)
    mu0 = m / np.maximum(w0, 1)
    mu1 = (m[-1] - m) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(centres[int(np.argmax(between[:-1]))]) if bins > 1 else float(centres[0])


def _clean_mask(mask: np.ndarray) -> np.ndarray:
    """Drop specks (components under 10 % of the largest, which keeps e.g. a detached
    cerebellum) and fill holes in 3-D and slice by slice along axis 0."""
    from .postprocessing.components import component_sizes, label_box
    from .postprocessing.filters import bounding_box

    box = bounding_box(mask)  # labels of the box only, uint16 when they fit; no int64 copies
    if box is not None:
        lab, n = label_box(mask[box])
        if n > 1:
            sizes = component_sizes(lab, n)
            sizes[0] = 0
            mask = np.zeros(mask.shape, dtype=bool)
            mask[box] = (sizes >= 0.1 * sizes.max())[lab]
        del lab
    mask = ndi.binary_fill_holes(mask)
    if mask.ndim == 3:
        for i in range(mask.shape[0]):
            if mask[i].any():
                mask[i] = ndi.binary_fill_holes(mask[i])
    return mask


def foreground_mask(data: np.ndarray, method: str = "auto") -> np.ndarray:
    """Boolean mask of the object (brain) voxels, same shape as ``data``.

    ``auto``: when at least 5 % of the voxels hold exactly the minimum value (a skull-stripped
    or masked scan), the voxels above it; otherwise an Otsu threshold. Both are cleaned
    (specks removed, holes filled). ``nonzero``: ``data != 0`` as is. ``otsu``: the Otsu
    threshold, cleaned. ``all``: every voxel. A constant image gives an empty ``auto`` mask.
    """
    a = _as_finite_array(data)
    if method not in FOREGROUND_METHODS:
        raise PreprocessError(
            f"foreground method must be one of {FOREGROUND_METHODS}, got {method!r}"
        )
    if method == "all":
        return np.ones(a.shape, dtype=bool)
    if method == "nonzero":
        return a != 0
    lo = a.min()
    if method == "auto" and np.count_nonzero(a == lo) >= 0.05 * a.size:
        mask = a > lo
    else:
        if a.max() == lo:
            return np.zeros(a.shape, dtype=bool)
        mask = a > _otsu_of(a, lo)
    return _clean_mask(mask) if mask.any() else mask


def _otsu_of(a: np.ndarray, lo: Any) -> float:
    """Otsu threshold of every voxel. Floating voxels are binned as they are, with float64
    bounds: np.histogram then converts each block of them to its float64 edges' type, so the
    counts are those of a float64 copy of the volume, without that copy (8 bytes a voxel)."""
    if a.dtype.kind != "f":
        return _otsu_threshold(a.ravel().astype(np.float64))
    return _otsu_threshold(a.ravel(), value_range=(np.float64(lo), np.float64(a.max())))


# --------------------------------------------------------------------------- normalization
def normalize_intensity(
    data: np.ndarray, mask: np.ndarray, config: PreprocessConfig | None = None
) -> np.ndarray:
    """Percentile clip + z-score over ``mask``, clip to +-z_clip, background elsewhere.

    Raises :class:`PreprocessError` for NaN/Inf, a mask of the wrong shape, a foreground of
    fewer than 8 voxels, or a foreground without intensity spread (constant image).
    """
    cfg = config or PreprocessConfig()
    a = _as_finite_array(data)
    m = np.asarray(mask, dtype=bool)
    if m.shape != a.shape:
        raise PreprocessError(f"foreground mask shape {m.shape} differs from image shape {a.shape}")
    n = int(m.sum())
    if n < MIN_FOREGROUND_VOXELS:
        raise PreprocessError(
            f"foreground has {n} voxels (need at least {MIN_FOREGROUND_VOXELS}); "
            "is the image empty or constant, or the mask wrong?"
        )
    # the percentiles partition a copy of the values in place (numpy would copy them once
    # more), then the values are taken again for the clip and the z-score: one float64 copy
    # of the foreground at a time instead of two, the same values (they depend only on order
    # statistics)
    lo, hi = np.percentile(a[m].astype(np.float64), cfg.clip_percentiles, overwrite_input=True)
    vals = a[m].astype(np.float64)
    if hi <= lo:  # most voxels share one value: fall back to the full range
        lo, hi = vals.min(), vals.max()
    if hi <= lo:
        raise PreprocessError(f"image is constant ({lo:g}) over its foreground; cannot z-score it")
    np.clip(vals, lo, hi, out=vals)  # in place: the foreground values are copied once
    mean, std = vals.mean(), vals.std()
    out = np.full(a.shape, cfg.background, dtype=np.float32)
    vals -= mean
    vals /= std
    out[m] = np.clip(vals, -cfg.z_clip, cfg.z_clip, out=vals)
    return out


# --------------------------------------------------------------------------- slicing
@dataclass(frozen=True)
class SliceLayout:
    """How slices map back onto the volume: original ``shape`` (as given, 2-D or 3-D), slicing
    ``axis`` (of the 3-D view), the unpadded slice shape, the padding to the square of side
    ``square`` (before, after) per slice axis, and the model ``size``."""

    shape: tuple[int, ...]
    axis: int
    slice_shape: tuple[int, int]
    square: int
    pad: tuple[tuple[int, int], tuple[int, int]]
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "shape": list(self.shape),
            "axis": self.axis,
            "slice_shape": list(self.slice_shape),
            "square": self.square,
            "pad": [list(p) for p in self.pad],
            "size": self.size,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SliceLayout:
        return cls(
            tuple(d["shape"]),
            int(d["axis"]),
            tuple(d["slice_shape"]),
            int(d["square"]),
            tuple(tuple(p) for p in d["pad"]),  # type: ignore[arg-type]
            int(d["size"]),
        )


@dataclass
class SliceBatch:
    """Model-ready slices of one volume: ``images`` (N, 1, S, S) float32, ``masks``
    (N, 1, S, S) bool foreground, ``indices`` (N,) positions along the axis, ``layout``."""

    images: np.ndarray
    masks: np.ndarray
    indices: np.ndarray
    layout: SliceLayout

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, keep: np.ndarray) -> SliceBatch:
        """The slices selected by a boolean or integer index array (same layout)."""
        keep = np.asarray(keep)
        return SliceBatch(self.images[keep], self.masks[keep], self.indices[keep], self.layout)


def _as_3d(a: np.ndarray, axis: int) -> tuple[np.ndarray, int]:
    """2-D (H, W) input is one slice: view it as (1, H, W) sliced along axis 0."""
    return (a[None], 0) if a.ndim == 2 else (a, axis)


def _resize_stack(stack: np.ndarray, out: int, order: int) -> np.ndarray:
    """Resize (N, H, H) square slices to (N, out, out); pixel-area aligned (grid_mode)."""
    h = stack.shape[-1]
    if h == out:
        return stack.copy()
    if stack.shape[0] == 0:
        return np.zeros((0, out, out), dtype=stack.dtype)
    zoomed = ndi.zoom(stack, (1.0, out / h, out / h), order=order, mode="nearest", grid_mode=True)
    return zoomed[:, :out, :out]


def _layout(shape: tuple[int, ...], axis: int, size: int) -> SliceLayout:
    shape3 = (1, *shape) if len(shape) == 2 else tuple(shape)
    ax = 0 if len(shape) == 2 else axis
    h, w = (s for i, s in enumerate(shape3) if i != ax)
    side = max(h, w)
    ph, pw = side - h, side - w
    pad = ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2))
    return SliceLayout(tuple(shape), ax, (h, w), side, pad, size)


_SLICE_CHUNK = 8  # slices padded and resized together by _to_slices


def _to_slices(vol3: np.ndarray, layout: SliceLayout, fill: float, order: int,
               dtype: Any = None) -> np.ndarray:
    """(N, H, W) slices of ``vol3`` along the layout axis -> padded, resized (N, S, S).

    A few slices at a time (each slice is resized on its own: the values are the same), so
    no padded full-size copy of the volume is held; ``dtype``: of the result (default: the
    volume's)."""
    st = np.moveaxis(vol3, layout.axis, 0)
    n = st.shape[0]
    out = np.empty((n, layout.size, layout.size), dtype or st.dtype)
    for start in range(0, n, _SLICE_CHUNK):
        part = np.pad(st[start : start + _SLICE_CHUNK], ((0, 0), *layout.pad),
                      mode="constant", constant_values=fill)
        out[start : start + _SLICE_CHUNK] = _resize_stack(part, layout.size, order)
    return out


def preprocess_volume(
    data: np.ndarray,
    config: PreprocessConfig | None = None,
    mask: np.ndarray | None = None,
    training: bool = False,
    exclude_mask: np.ndarray | None = None,
) -> SliceBatch:
    """Foreground, normalization, slicing, padding and resizing of one volume.

    ``mask`` None -> :func:`foreground_mask` with ``config.foreground``. With
    ``training=False`` every slice is returned (prediction covers the whole volume). With
    ``training=True`` ``skip_slices`` are dropped at each end (3-D only), and slices whose
    foreground covers less than ``min_foreground_fraction`` of the slice; ``exclude_mask``
    (e.g. lesion labels of a patient volume, same shape) also drops every slice it touches,
    so only lesion-free slices serve as normal data. The batch may be empty.
    """
    cfg = config or PreprocessConfig()
    a = _as_finite_array(data)
    m = foreground_mask(a, cfg.foreground) if mask is None else np.asarray(mask, dtype=bool)
    if m.shape != a.shape:
        raise PreprocessError(f"foreground mask shape {m.shape} differs from image shape {a.shape}")
    norm = normalize_intensity(a, m, cfg)
    layout = _layout(a.shape, cfg.axis, cfg.size)
    norm3, ax = _as_3d(norm, cfg.axis)
    m3, _ = _as_3d(m, cfg.axis)
    n = norm3.shape[ax]
    keep = np.ones(n, dtype=bool)
    if training:
        if a.ndim == 3 and cfg.skip_slices:
            keep[: cfg.skip_slices] = False
            keep[max(n - cfg.skip_slices, 0) :] = False
        other = tuple(i for i in range(3) if i != ax)
        frac = m3.mean(axis=other)
        keep &= frac >= max(cfg.min_foreground_fraction, 1e-12)
        if exclude_mask is not None:
            ex = np.asarray(exclude_mask)
            if ex.shape != a.shape:
                raise PreprocessError(
                    f"exclude mask shape {ex.shape} differs from image shape {a.shape}"
                )
            ex3, _ = _as_3d(ex != 0, cfg.axis)
            keep &= ~ex3.any(axis=other)
    idx = np.flatnonzero(keep)
    every = keep.all()  # prediction: no copy of the volume to select its slices
    sel3 = norm3 if every else np.take(norm3, idx, axis=ax)
    msel3 = m3 if every else np.take(m3, idx, axis=ax)
    del norm
    assert cfg.background is not None  # PreprocessConfig sets it
    images = _to_slices(sel3, layout, cfg.background, order=1, dtype=np.float32)
    masks = _to_slices(msel3.view(np.uint8), layout, 0, order=0) > 0
    return SliceBatch(images[:, None], masks[:, None], idx.astype(np.int64), layout)


def slice_masks(mask_volume: np.ndarray, batch: SliceBatch) -> np.ndarray:
    """Bring a label/mask volume of the original shape into the batch's slice layout.

    Returns (N, 1, S, S) with the volume's dtype (bool stays bool, labels keep their values),
    resized with nearest neighbour, for the slices in ``batch.indices``.
    """
    v = np.asarray(mask_volume)
    lay = batch.layout
    if v.shape != lay.shape:
        raise PreprocessError(f"mask shape {v.shape} differs from the volume shape {lay.shape}")
    v3, _ = _as_3d(v, lay.axis)
    sel = np.take(v3, batch.indices, axis=lay.axis)
    as_int = sel.astype(np.int64) if v.dtype == bool else sel
    out = _to_slices(as_int, lay, 0, order=0)
    return out.astype(v.dtype)[:, None]


def lesion_free_slices(batch: SliceBatch, lesion_masks: np.ndarray) -> SliceBatch:
    """The slices of ``batch`` that hold no lesion voxel.

    ``lesion_masks``: a label volume of the original shape (checked at full resolution, so
    tiny lesions that vanish when resized still count), or masks already in the batch layout
    ((N, 1, S, S) or (N, S, S)).
    """
    lm = np.asarray(lesion_masks)
    lay = batch.layout
    if lm.shape == lay.shape:
        v3, _ = _as_3d(lm != 0, lay.axis)
        other = tuple(i for i in range(3) if i != lay.axis)
        touched = np.asarray(v3.any(axis=other))[batch.indices]
    elif lm.shape in ((len(batch), 1, lay.size, lay.size), (len(batch), lay.size, lay.size)):
        touched = (lm.reshape(len(batch), -1) != 0).any(axis=1)
    else:
        raise PreprocessError(
            f"lesion mask shape {lm.shape} matches neither the volume {lay.shape} nor the "
            f"batch ({len(batch)}, 1, {lay.size}, {lay.size})"
        )
    return batch.subset(~touched)


_BACK_CHUNK = 8  # slices resized back together by from_slices


def from_slices(
    maps: np.ndarray, batch: SliceBatch, fill: float = 0.0, order: int = 1
) -> np.ndarray:
    """Put per-slice maps (N, S, S) or (N, 1, S, S) back into the original volume shape.

    Inverse of the slicing in :func:`preprocess_volume`: resize each map to the padded square
    (bilinear, ``order=0`` for labels), crop the padding, place it at ``batch.indices`` along
    the axis; slices not in the batch get ``fill``. Returns float32 (2-D for 2-D input).
    """
    lay = batch.layout
    a = np.asarray(maps)
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if a.shape != (len(batch), lay.size, lay.size):
        raise PreprocessError(
            f"maps of shape {np.asarray(maps).shape} do not match the batch "
            f"({len(batch)}, {lay.size}, {lay.size})"
        )
    (t, _), (left, _) = lay.pad
    h, w = lay.slice_shape
    shape3 = (1, *lay.shape) if len(lay.shape) == 2 else lay.shape
    out = np.full(shape3, fill, dtype=np.float32)
    view = np.moveaxis(out, lay.axis, 0)
    # resized a few slices at a time (each slice is resized on its own, so the values are the
    # same): the full-size resized stack is never held beside the output
    for start in range(0, len(batch), _BACK_CHUNK):
        part = slice(start, start + _BACK_CHUNK)
        big = _resize_stack(a[part].astype(np.float32), lay.square, order)
        view[batch.indices[part]] = big[:, t : t + h, left : left + w]
    return out[0] if len(lay.shape) == 2 else out
