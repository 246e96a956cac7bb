"""Lean foreground and normalization give the values of the code they replaced, bit for bit.

The references below are the functions as they were before (a float64 copy of the volume
for Otsu's histogram, int32 labels and an int64 gather to drop specks, a copy of the
foreground values for the percentiles)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_vae_anomaly.postprocessing.components import component_sizes, plane_runs
from napari_vae_anomaly.preprocessing import (
    PreprocessConfig,
    _otsu_threshold,
    foreground_mask,
    normalize_intensity,
)


def old_clean_mask(mask):
    lab, n = ndi.label(mask)
    if n > 1:
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        mask = sizes[lab] >= 0.1 * sizes.max()
    mask = ndi.binary_fill_holes(mask)
    if mask.ndim == 3:
        for i in range(mask.shape[0]):
            if mask[i].any():
                mask[i] = ndi.binary_fill_holes(mask[i])
    return mask


def old_foreground_mask(a, method="auto"):
    lo = a.min()
    if method == "auto" and np.count_nonzero(a == lo) >= 0.05 * a.size:
        mask = a > lo
    else:
        if a.max() == lo:
            return np.zeros(a.shape, dtype=bool)
        mask = a > _otsu_threshold(a.ravel().astype(np.float64))
    return old_clean_mask(mask) if mask.any() else mask


def old_normalize(a, m, cfg):
    vals = a[m].astype(np.float64)
    lo, hi = np.percentile(vals, cfg.clip_percentiles)
    if hi <= lo:
        lo, hi = vals.min(), vals.max()
    np.clip(vals, lo, hi, out=vals)
    mean, std = vals.mean(), vals.std()
    out = np.full(a.shape, cfg.background, dtype=np.float32)
    vals -= mean
    vals /= std
    out[m] = np.clip(vals, -cfg.z_clip, cfg.z_clip, out=vals)
    return out


def volumes(rng):
    """Otsu cases (noisy background, odd spreads and dtypes) and masked (skull-stripped) ones,
    with specks, holes and several blobs, 3-D and 2-D."""
    z, y, x = np.mgrid[:20, :34, :30]
    blob = ((z - 9) / 7.0) ** 2 + ((y - 16) / 12.0) ** 2 + ((x - 14) / 10.0) ** 2 < 1
    blob2 = ((z - 15) / 3.0) ** 2 + ((y - 28) / 4.0) ** 2 + ((x - 25) / 3.0) ** 2 < 1
    noisy = (blob * 100 + blob2 * 60 + rng.normal(0, 15, blob.shape)).astype(np.float32)
    noisy[blob & (rng.random(blob.shape) < 0.02)] = -5  # holes
    stripped = np.where(blob | blob2, noisy, 0).astype(np.float32)
    stripped[2, 2, 2] = 50  # a speck
    wide = (noisy.astype(np.float64) * 1e-3) ** 3 * 1e9 + 1e-7
    return [noisy, stripped, wide, (noisy * 3).astype(np.int16), noisy[9], stripped[9],
            np.abs(noisy).astype(np.float32) ** 1.7]


@pytest.mark.parametrize("method", ["auto", "otsu"])
def test_foreground_is_the_old_one(rng, method):
    partial = 0
    for a in volumes(rng):
        got = foreground_mask(a, method)
        want = old_foreground_mask(a, method)
        assert got.dtype == bool and got.shape == a.shape
        np.testing.assert_array_equal(got, want)
        partial += 0 < want.mean() < 1
    assert partial >= 5
    stripped = volumes(rng)[1]
    assert stripped[2, 2, 2] > 0 and not foreground_mask(stripped, method)[2, 2, 2]  # speck


def test_otsu_of_float32_voxels_is_the_float64_copys(rng):
    from napari_vae_anomaly.preprocessing import _otsu_of

    for a in [rng.gamma(2.0, 3.0, 50_000).astype(np.float32),
              (rng.normal(size=70_001) * 1e-30).astype(np.float32),
              np.concatenate([rng.normal(0, 1, 9_000), rng.normal(40, 2, 200_000)]),
              rng.integers(-3, 900, 10_000).astype(np.int16)]:
        want = _otsu_threshold(a.astype(np.float64))
        assert _otsu_of(a, a.min()) == want


def test_normalization_is_the_old_one(rng):
    cfg = PreprocessConfig()
    for a in volumes(rng):
        m = foreground_mask(a)
        got = normalize_intensity(a, m, cfg)
        assert got.tobytes() == old_normalize(a, m, cfg).tobytes()


def test_component_sizes_count_every_label_in_runs_of_planes(rng):
    lab, n = ndi.label(rng.random((9, 11, 7)) > 0.6)
    want = np.bincount(lab.ravel(), minlength=n + 1)
    for voxels in (1, 77, 1 << 20):
        np.testing.assert_array_equal(component_sizes(lab.astype(np.uint16), n, voxels), want)
    assert [(s.start, s.stop) for s in plane_runs((9, 11, 7), 200)] == [
        (0, 2), (2, 4), (4, 6), (6, 8), (8, 9)]
