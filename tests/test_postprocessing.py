"""Thresholds, component removal in voxels and mm³, hole filling, the lesion table."""

from __future__ import annotations

import time

import numpy as np
import pytest

from napari_vae_anomaly.io import Geometry
from napari_vae_anomaly.postprocessing.components import (
    label_components,
    min_voxels_for,
    remove_small_components,
)
from napari_vae_anomaly.postprocessing.filters import fill_holes, median_filter_map
from napari_vae_anomaly.postprocessing.lesions import (
    index_to_world,
    label_lesions,
    lesion_rows,
    lesion_table,
)
from napari_vae_anomaly.postprocessing.mask import MaskOptions, make_mask, postprocess
from napari_vae_anomaly.postprocessing.threshold import (
    best_dice_threshold,
    dice_curve,
    threshold_at_fraction,
)


def test_threshold_at_fraction_exceeded_by_that_fraction(rng):
    s = rng.normal(size=100_000)
    t = threshold_at_fraction(s, 0.05)
    assert (s > t).mean() == pytest.approx(0.05, abs=1e-3)
    assert t == pytest.approx(1.645, abs=0.03)
    with pytest.raises(ValueError, match="fraction"):
        threshold_at_fraction(s, 0.0)
    with pytest.raises(ValueError, match="no normal scores"):
        threshold_at_fraction(np.array([np.nan]), 0.1)


def test_best_dice_threshold_finds_the_separating_value(rng):
    lab = np.zeros((10, 20, 20), np.uint8)
    lab[3:6, 5:10, 5:10] = 1
    score = rng.uniform(0, 1, lab.shape) + 2.0 * lab
    t, d = best_dice_threshold([score], [lab])
    assert d == pytest.approx(1.0)
    assert t == pytest.approx(score[lab == 0].max()) and t < score[lab > 0].min()
    curve = dice_curve([score], [lab], n_thresholds=64)
    assert curve.thresholds.size > 40
    # the curve's values agree with a direct computation
    for thr, dc in zip(curve.thresholds[::9], curve.dice[::9], strict=True):
        pred = score > thr
        direct = 2 * (pred & (lab > 0)).sum() / (pred.sum() + (lab > 0).sum())
        assert dc == pytest.approx(direct)
    with pytest.raises(ValueError, match="no lesion voxel"):
        best_dice_threshold([score], [np.zeros_like(lab)])


def test_component_removal_in_voxels_and_mm3_with_anisotropic_spacing():
    m = np.zeros((12, 30, 30), bool)
    m[1:3, 2:5, 2:5] = True          # 2*3*3 = 18 voxels
    m[6:10, 10:20, 10:20] = True     # 400 voxels
    m[11, 28, 28] = True             # 1 voxel
    assert label_components(m)[1] == 3
    kept = remove_small_components(m, min_voxels=19)
    assert kept.dtype == np.uint8 and kept.sum() == 400
    # ITK spacing (x, y, z) = (0.5, 0.5, 4): one voxel is 1 mm³, the 18-voxel blob 18 mm³
    spacing = (0.5, 0.5, 4.0)
    assert min_voxels_for(0, 18.0, spacing) == 18
    assert remove_small_components(m, min_mm3=18.0, spacing=spacing).sum() == 418
    assert remove_small_components(m, min_mm3=18.5, spacing=spacing).sum() == 400
    # with 2 mm³ voxels, 36 mm³ keeps the 18-voxel blob, 37 does not
    spacing2 = (1.0, 0.5, 4.0)
    assert remove_small_components(m, min_mm3=36.0, spacing=spacing2).sum() == 418
    assert remove_small_components(m, min_mm3=37.0, spacing=spacing2).sum() == 400


def test_connectivity_changes_what_is_one_component():
    m = np.zeros((3, 3, 3), bool)
    m[0, 0, 0] = m[1, 1, 1] = True
    assert label_components(m, connectivity=1)[1] == 2
    assert label_components(m, connectivity=3)[1] == 1


def test_fill_holes_and_median_filter():
    m = np.zeros((7, 7, 7), np.uint8)
    m[1:6, 1:6, 1:6] = 1
    m[3, 3, 3] = 0
    filled = fill_holes(m)
    assert filled.dtype == np.uint8 and filled[3, 3, 3] == 1 and filled.sum() == 125
    s = np.zeros((9, 9, 9), np.float32)
    s[4, 4, 4] = 100.0  # an isolated spike disappears under a 3x3x3 median
    s[1:8, 1:8, 1:8] += 1.0
    f = median_filter_map(s, 3, foreground=s > 0)
    assert f[4, 4, 4] == pytest.approx(1.0) and f.dtype == np.float32


def test_make_mask_and_postprocess():
    score = np.zeros((10, 20, 20), np.float32)
    score[2:6, 2:6, 2:6] = 5.0
    score[8, 15, 15] = 5.0
    fg = np.ones(score.shape, bool)
    fg[:, :, :4] = False
    m = make_mask(score, 1.0, foreground=fg)
    assert m.dtype == np.uint8 and m.sum() == 4 * 4 * 2 + 1
    m2 = make_mask(score, 1.0, min_voxels=2)
    assert m2.sum() == 64
    m3 = postprocess(score, 1.0, MaskOptions(median_size=3))
    assert m3[8, 15, 15] == 0 and m3[3, 3, 3] == 1
    assert make_mask(score, 10.0).sum() == 0


def test_lesion_table_volumes_scores_and_world_centroids(oblique_geometry):
    mask = np.zeros((10, 20, 20), np.uint8)
    mask[1:3, 1:4, 1:4] = 1        # 18 voxels
    mask[5:9, 10:15, 10:15] = 1    # 100 voxels, centre (6.5, 12, 12)
    score = np.zeros(mask.shape, np.float32)
    score[5:9, 10:15, 10:15] = 2.0
    score[7, 12, 12] = 9.0
    rows = lesion_table(mask, score, oblique_geometry)
    assert [r.label for r in rows] == [1, 2] and [r.voxels for r in rows] == [100, 18]
    vox = 0.9 * 1.1 * 3.0
    assert rows[0].volume_ml == pytest.approx(100 * vox / 1000)
    assert rows[0].max_score == pytest.approx(9.0)
    assert rows[0].mean_score == pytest.approx((99 * 2 + 9) / 100)
    assert rows[0].centroid_voxel == pytest.approx((6.5, 12.0, 12.0))
    g = oblique_geometry
    expect = np.asarray(g.origin) + g.direction_matrix @ (np.asarray(g.spacing) * [12.0, 12.0, 6.5])
    assert rows[0].centroid_world == pytest.approx(tuple(expect))
    # identity geometry: world == index * spacing reversed
    ident = Geometry((2.0, 1.0, 5.0), (0, 0, 0), tuple(np.eye(3).ravel()))
    assert tuple(index_to_world(np.array([1.0, 2.0, 3.0]), ident)) == pytest.approx((6.0, 2.0, 5.0))
    assert lesion_table(np.zeros_like(mask), score) == []


def test_make_mask_is_fast_on_a_full_size_volume(rng):
    """Live-slider budget (150 ms on 2 cores): assert a generous 1 s to stay robust here."""
    shape = (155, 240, 240)
    score = np.zeros(shape, np.float32)
    fg = np.zeros(shape, bool)
    fg[10:145, 30:210, 30:210] = True
    score[fg] = rng.random(int(fg.sum()), dtype=np.float32)
    make_mask(score, 0.999, fg, min_voxels=8)
    t0 = time.perf_counter()
    m = make_mask(score, 0.99, fg, min_voxels=8)
    dt = time.perf_counter() - t0
    assert m.shape == shape and dt < 1.0


def test_fast_lesion_rows_match_a_direct_ndimage_computation(rng, oblique_geometry):
    """The bincount rows (the widget's live table, the CLI's) against scipy's own statistics:
    same labels, sizes, scores, voxel centroids and full-geometry world centroids."""
    from scipy import ndimage

    mask = rng.random((9, 30, 26)) > 0.8
    score = rng.normal(size=mask.shape).astype(np.float32)
    labels = label_lesions(mask, min_voxels=3)
    rows = lesion_rows(labels, score, oblique_geometry)
    ref, n = ndimage.label(mask)
    sizes = np.bincount(ref.ravel())[1:]
    kept = np.sort(sizes[sizes >= 3])[::-1]
    assert [r.voxels for r in rows] == list(kept) and [r.label for r in rows] == list(range(1, len(kept) + 1))
    assert labels.dtype == (np.uint8 if len(kept) < 256 else np.uint16)
    idx = [r.label for r in rows]
    mean = ndimage.mean(score.astype(np.float64), labels, idx)
    mx = ndimage.maximum(score, labels, idx)
    com = np.asarray(ndimage.center_of_mass(labels > 0, labels, idx))
    np.testing.assert_allclose([r.mean_score for r in rows], mean, rtol=1e-9)
    np.testing.assert_allclose([r.max_score for r in rows], mx, rtol=1e-7)
    np.testing.assert_allclose([r.centroid_voxel for r in rows], com, atol=1e-9)
    world = index_to_world(com, oblique_geometry)
    np.testing.assert_allclose([r.centroid_world for r in rows], world, atol=1e-9)
    everything = lesion_table(mask, score, oblique_geometry)  # no size limit: the larger come first
    assert len(everything) == n and everything[: len(rows)] == rows


def test_label_lesions_drops_small_components_and_orders_by_size():
    mask = np.zeros((4, 12, 12), bool)
    mask[0, 0, 0] = True                      # 1 voxel, first in raster order
    mask[1:3, 2:4, 2:4] = True                # 8 voxels
    mask[1:4, 6:10, 6:10] = True              # 48 voxels
    labels = label_lesions(mask, min_voxels=2)
    assert labels.dtype == np.uint8 and labels.shape == mask.shape
    assert labels[2, 7, 7] == 1 and labels[1, 2, 2] == 2 and labels[0, 0, 0] == 0
    assert lesion_rows(labels)[0].centroid_world == pytest.approx((7.5, 7.5, 2.0))
    assert np.isnan(lesion_rows(labels)[0].mean_score)
    assert label_lesions(np.zeros((3, 3), bool)).max() == 0 and lesion_rows(np.zeros((3, 3), np.uint8)) == []
