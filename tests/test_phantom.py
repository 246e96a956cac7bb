"""The procedural brain phantom: determinism, anatomy, lesions, geometry."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_vae_anomaly.data.phantom import (
    CSF,
    GREY,
    WHITE,
    Phantom,
    make_phantom,
    smooth_noise,
)
from napari_vae_anomaly.io import Geometry, Volume

SMALL = (32, 48, 48)


@pytest.fixture(scope="module")
def default_pair() -> tuple[Phantom, Phantom]:
    """Seed 0 at the default shape, with and without lesions."""
    return make_phantom(0), make_phantom(0, lesions=False)


@pytest.fixture(scope="module")
def small_set() -> list[Phantom]:
    return [make_phantom(s, shape=SMALL) for s in range(4)]


def test_shapes_dtypes_and_geometry(default_pair):
    p, _ = default_pair
    assert p.image.shape == (64, 96, 96) and p.image.dtype == np.float32
    assert p.brain_mask.dtype == bool and p.brain_mask.shape == p.image.shape
    assert p.lesion_mask.dtype == np.uint8 and p.lesion_mask.shape == p.image.shape
    assert p.tissue.dtype == np.uint8
    g = p.geometry
    assert isinstance(g, Geometry)
    assert g.spacing == (1.0, 1.0, 1.0)
    assert g.is_identity_direction()
    # centred: world (0,0,0) in the middle of the grid, ITK (x, y, z) order
    assert g.origin == (-47.5, -47.5, -31.5)
    vol = p.volume
    assert isinstance(vol, Volume) and vol.data is p.image and vol.geometry == g
    assert p.lesion_volume.data is p.lesion_mask


def test_spacing_is_itk_ordered():
    p = make_phantom(3, shape=(16, 20, 24), spacing=(0.5, 0.8, 2.0))
    assert p.geometry.spacing == (0.5, 0.8, 2.0)
    assert p.geometry.scale == (2.0, 0.8, 0.5)  # napari (z, y, x)
    assert p.geometry.origin == pytest.approx((-5.75, -7.6, -15.0))


def test_same_seed_is_identical_and_seeds_differ(small_set):
    again = make_phantom(2, shape=SMALL)
    ref = small_set[2]
    np.testing.assert_array_equal(again.image, ref.image)
    np.testing.assert_array_equal(again.lesion_mask, ref.lesion_mask)
    np.testing.assert_array_equal(again.brain_mask, ref.brain_mask)
    assert again.lesion_info == ref.lesion_info
    for a, b in [(0, 1), (1, 2), (2, 3)]:
        pa, pb = small_set[a], small_set[b]
        # different anatomy, not just different noise
        assert (pa.brain_mask != pb.brain_mask).mean() > 0.005
        assert (pa.tissue != pb.tissue).mean() > 0.02


def test_background_is_zero_and_brain_positive(default_pair):
    p, _ = default_pair
    assert np.all(p.image[~p.brain_mask] == 0.0)
    assert np.all(p.image[p.brain_mask] > 0.0)
    assert np.isfinite(p.image).all()
    assert 0.15 < p.brain_mask.mean() < 0.6
    # skull-stripped: the brain is one blob that does not touch the array border
    assert ndi.label(p.brain_mask)[1] == 1
    for ax in range(3):
        assert not np.take(p.brain_mask, [0, -1], axis=ax).any()
    assert 100 < p.image.max() < 2000  # MRI-like arbitrary units


def test_flair_like_tissue_contrast(small_set):
    for p in small_set:
        clean = p.lesion_mask == 0
        med = {t: np.median(p.image[(p.tissue == t) & clean]) for t in (GREY, WHITE)}
        # at this small shape most CSF voxels are partial-volume (thin sulci): use a low quantile
        assert np.percentile(p.image[(p.tissue == CSF) & clean], 10) < 0.6 * med[WHITE]
        assert med[GREY] > 1.05 * med[WHITE]
    # the grey/white contrast itself depends on the seed
    ratios = []
    for p in small_set:
        clean = p.lesion_mask == 0
        gm = np.median(p.image[(p.tissue == GREY) & clean])
        ratios.append(gm / np.median(p.image[(p.tissue == WHITE) & clean]))
    assert np.ptp(ratios) > 0.03


def test_ventricles_are_central_and_paired(default_pair):
    p, _ = default_pair
    csf = p.tissue == CSF
    mid = p.image.shape[0] // 2 + 3
    sl = csf[mid]
    nx = sl.shape[1]
    centre_band = sl[:, nx // 2 - 20 : nx // 2 + 20].sum()
    assert centre_band > 40  # ventricles near the middle
    left, right = sl[:, : nx // 2].sum(), sl[:, nx // 2 :].sum()
    assert 0.5 < left / max(right, 1) < 2.0  # roughly symmetric pair


def test_lesions_inside_brain_with_both_contrasts(small_set, default_pair):
    signs = set()
    for p in [*small_set, default_pair[0]]:
        n = len(p.lesion_info)
        assert 2 <= n <= 5
        labels = set(np.unique(p.lesion_mask)) - {0}
        assert labels <= set(range(1, n + 1))
        assert np.all(p.brain_mask[p.lesion_mask > 0])
        for info in p.lesion_info:
            assert 1.0 <= info.radius <= 10.0
            assert 0.3 <= abs(info.contrast) <= 0.6
            assert p.lesion_mask[info.centre] > 0
            assert info.voxels == int((p.lesion_mask == info.label).sum())
            signs.add(np.sign(info.contrast))
    assert signs == {-1.0, 1.0}


def test_lesion_contrast_matches_sign(default_pair):
    p, q = default_pair
    for info in p.lesion_info:
        core = ndi.binary_erosion(p.lesion_mask == info.label, iterations=1)
        if core.sum() < 10:
            core = p.lesion_mask == info.label
        ratio = p.image[core].mean() / q.image[core].mean()
        assert ratio == pytest.approx(1.0 + info.contrast, abs=0.2)
        assert np.sign(ratio - 1.0) == np.sign(info.contrast)


def test_lesion_sizes_vary(small_set, default_pair):
    sizes = [i.voxels for p in [*small_set, default_pair[0]] for i in p.lesion_info]
    assert min(sizes) < 200 and max(sizes) > 1000


def test_lesion_free_variant_is_the_same_subject(default_pair):
    p, q = default_pair
    assert q.lesion_info == [] and not q.lesion_mask.any()
    np.testing.assert_array_equal(p.brain_mask, q.brain_mask)
    np.testing.assert_array_equal(p.tissue, q.tissue)
    # Identical outside the lesions' soft rim (at most a few voxels past each label) ...
    near = ndi.binary_dilation(p.lesion_mask > 0, iterations=4)
    np.testing.assert_array_equal(p.image[~near], q.image[~near])
    # ... and clearly different inside the labels.
    inside = p.lesion_mask > 0
    rel = np.abs(p.image[inside] - q.image[inside]) / q.image[inside]
    assert np.median(rel) > 0.2


def test_n_lesions_option():
    assert len(make_phantom(5, shape=SMALL, n_lesions=1).lesion_info) == 1
    assert len(make_phantom(5, shape=SMALL, n_lesions=0).lesion_info) == 0
    with pytest.raises(ValueError, match="n_lesions"):
        make_phantom(5, shape=SMALL, n_lesions=-1)


@pytest.mark.parametrize("shape", [(64, 96), (4, 48, 48), (1, 2, 3, 4)])
def test_bad_shape(shape):
    with pytest.raises(ValueError, match="shape"):
        make_phantom(0, shape=shape)


def test_smooth_noise_unit_std_and_deterministic():
    a = smooth_noise(np.random.default_rng(1), (10, 20, 30), 4)
    b = smooth_noise(np.random.default_rng(1), (10, 20, 30), 4)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (10, 20, 30) and a.dtype == np.float32
    assert a.std() == pytest.approx(1.0, abs=1e-4) and abs(a.mean()) < 1e-5
    # smooth: neighbours are strongly correlated
    assert np.corrcoef(a[:, :, 1:].ravel(), a[:, :, :-1].ravel())[0, 1] > 0.9
