"""The one-pass mask and lesion table equal the two-pass functions' results bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_vae_anomaly.io import Geometry
from napari_vae_anomaly.postprocessing import mask_lesions
from napari_vae_anomaly.postprocessing.lesions import lesion_table
from napari_vae_anomaly.postprocessing.mask import MaskOptions, postprocess
from napari_vae_anomaly.postprocessing.mask_lesions import mask_and_lesions


def two_pass(score, threshold, options, foreground, geometry):
    mask = postprocess(score, threshold, options, foreground, geometry.spacing)
    return mask, lesion_table(mask, score, geometry, options.connectivity)


def assert_same(got, want):
    (mask, rows), (ref_mask, ref_rows) = got, want
    assert mask.dtype == np.uint8 and mask.shape == ref_mask.shape
    np.testing.assert_array_equal(mask, ref_mask)
    assert [r.to_dict() for r in rows] == [r.to_dict() for r in ref_rows]  # exact floats


def smooth_score(rng, shape, sigma=1.2):
    return ndimage.gaussian_filter(rng.normal(size=shape), sigma).astype(np.float32) * 5


@pytest.mark.parametrize("slab", [1 << 20, 200, 1])
@pytest.mark.parametrize("min_voxels,min_mm3,connectivity",
                         [(0, 0.0, 1), (1, 0.0, 1), (8, 0.0, 1), (3, 20.0, 1), (8, 0.0, 3)])
def test_random_maps_give_the_two_pass_mask_and_rows(rng, oblique_geometry, monkeypatch, slab,
                                                     min_voxels, min_mm3, connectivity):
    monkeypatch.setattr(mask_lesions, "SLAB_VOXELS", slab)  # one slab, a few planes, one plane
    score = smooth_score(rng, (23, 31, 27))
    fg = np.zeros(score.shape, bool)
    fg[2:21, 3:29, 1:25] = rng.random((19, 26, 24)) > 0.1
    opts = MaskOptions(min_voxels=min_voxels, min_mm3=min_mm3, connectivity=connectivity)
    counts = []
    for threshold in (-0.5, 0.0, 0.8, 2.0):
        for foreground in (fg, None):
            got = mask_and_lesions(score, threshold, opts, foreground, oblique_geometry)
            want = two_pass(score, threshold, opts, foreground, oblique_geometry)
            assert_same(got, want)
            counts.append(len(want[1]))
    assert max(counts) > 3 and min(counts) < max(counts)  # order and removal were checked


def test_ties_in_size_keep_the_raster_order_and_mm3_uses_the_spacing(monkeypatch):
    monkeypatch.setattr(mask_lesions, "SLAB_VOXELS", 16)
    score = np.zeros((6, 8, 8), np.float32)
    for i, (z, y, x) in enumerate([(4, 6, 6), (0, 1, 1), (2, 4, 1), (5, 0, 7)]):
        score[z, y, x] = 1.0 + i  # four single voxels: one size, four scores
    score[1, 5:7, 5:7] = 0.5  # four voxels
    geo = Geometry((2.0, 1.0, 1.5), (3.0, -2.0, 1.0), tuple(np.eye(3).ravel()))
    for opts in (MaskOptions(), MaskOptions(min_mm3=6.0), MaskOptions(min_mm3=3.0)):
        got = mask_and_lesions(score, 0.1, opts, None, geo)
        assert_same(got, two_pass(score, 0.1, opts, None, geo))
    mask, rows = mask_and_lesions(score, 0.1, MaskOptions(), None, geo)
    assert [r.voxels for r in rows] == [4, 1, 1, 1, 1]
    assert [r.max_score for r in rows] == [0.5, 2.0, 3.0, 1.0, 4.0]  # raster order of ties
    assert mask_and_lesions(score, 0.1, MaskOptions(min_mm3=6.0), None, geo)[0].sum() == 4


def test_empty_removed_filled_and_many_components(rng, oblique_geometry):
    score = smooth_score(rng, (12, 20, 20))
    opts = MaskOptions(min_voxels=8)
    mask, rows = mask_and_lesions(score, 99.0, opts, None, oblique_geometry)
    assert mask.shape == score.shape and mask.max() == 0 and rows == []
    mask, rows = mask_and_lesions(score, 0.0, MaskOptions(min_voxels=10**6), None,
                                  oblique_geometry)
    assert mask.max() == 0 and rows == []
    filled = MaskOptions(min_voxels=4, fill_holes=True)  # filled after removal: two passes
    assert_same(mask_and_lesions(score, 0.3, filled, None, oblique_geometry),
                two_pass(score, 0.3, filled, None, oblique_geometry))
    dots = np.zeros((82, 82, 82), np.float32)  # 68921 single voxels: int32 labels
    dots[::2, ::2, ::2] = rng.random((41, 41, 41)).astype(np.float32) + 1
    got = mask_and_lesions(dots, 0.5, MaskOptions(), None, oblique_geometry)
    assert len(got[1]) == 41**3
    assert_same(got, two_pass(dots, 0.5, MaskOptions(), None, oblique_geometry))


def test_scores_are_summed_in_raster_order(rng, oblique_geometry, monkeypatch):
    """float64 sums of float32 scores of similar size are exact in any order; scores spread
    over 24 orders of magnitude are not, so this fails if the slabs were summed apart."""
    monkeypatch.setattr(mask_lesions, "SLAB_VOXELS", 1)
    score = smooth_score(rng, (16, 18, 18), sigma=2.5)
    score *= (10.0 ** rng.uniform(-12, 12, score.shape)).astype(np.float32)
    got = mask_and_lesions(score, 0.0, MaskOptions(min_voxels=8), None, oblique_geometry)
    assert_same(got, two_pass(score, 0.0, MaskOptions(min_voxels=8), None, oblique_geometry))
