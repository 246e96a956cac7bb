"""Preprocessing: foreground, normalization, slicing and its exact inverse."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_vae_anomaly.data.phantom import make_phantom
from napari_vae_anomaly.errors import AnomalyError
from napari_vae_anomaly.preprocessing import (
    PreprocessConfig,
    PreprocessError,
    SliceBatch,
    foreground_mask,
    from_slices,
    lesion_free_slices,
    normalize_intensity,
    preprocess_volume,
    slice_masks,
)

SHAPE = (10, 14, 20)  # anisotropic, non-square in every slicing direction


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(4, shape=(24, 36, 40))


def _blob_volume(shape=SHAPE, seed=0, sigma=2.0) -> tuple[np.ndarray, np.ndarray]:
    """Skull-stripped-like volume: positive smooth values in an ellipsoid, 0 outside."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    mask = sum(g**2 for g in grids) < 0.8
    img = 300 + 100 * ndi.gaussian_filter(rng.standard_normal(shape), sigma) + 5 * grids[0]
    return np.where(mask, img, 0.0).astype(np.float32), mask


# --------------------------------------------------------------------------- config
def test_config_defaults_and_dict_round_trip():
    cfg = PreprocessConfig()
    assert cfg.background == -cfg.z_clip == -3.0
    other = PreprocessConfig(
        axis=2,
        skip_slices=3,
        size=32,
        clip_percentiles=(1, 99),
        z_clip=2.5,
        background=-4.0,
        min_foreground_fraction=0.2,
        foreground="otsu",
    )
    d = json.loads(json.dumps(other.to_dict()))
    assert PreprocessConfig.from_dict(d) == other
    assert PreprocessConfig.from_dict({**d, "from_the_future": 1}) == other
    assert PreprocessConfig.from_dict(d).clip_percentiles == (1.0, 99.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"axis": 3}, "axis"),
        ({"skip_slices": -1}, "skip_slices"),
        ({"size": 2}, "size"),
        ({"clip_percentiles": (99, 1)}, "clip_percentiles"),
        ({"z_clip": 0}, "z_clip"),
        ({"min_foreground_fraction": 1.0}, "min_foreground_fraction"),
        ({"foreground": "magic"}, "foreground"),
    ],
)
def test_config_rejects_bad_values(kwargs, message):
    with pytest.raises(PreprocessError, match=message):
        PreprocessConfig(**kwargs)
    assert issubclass(PreprocessError, AnomalyError) and issubclass(PreprocessError, ValueError)


# --------------------------------------------------------------------------- foreground
def test_foreground_of_skull_stripped_phantom(phantom):
    np.testing.assert_array_equal(foreground_mask(phantom.image), phantom.brain_mask)
    np.testing.assert_array_equal(foreground_mask(phantom.image, "nonzero"), phantom.brain_mask)
    assert foreground_mask(phantom.image, "all").all()


def test_foreground_otsu_when_background_is_not_zero(phantom, rng):
    noisy = phantom.image + 40.0 + 10.0 * rng.standard_normal(phantom.image.shape)
    m = foreground_mask(noisy)
    assert m.dtype == bool and m.shape == noisy.shape
    truth = phantom.brain_mask
    dice = 2 * (m & truth).sum() / (m.sum() + truth.sum())
    assert dice > 0.95
    assert ndi.label(m)[1] == 1  # background specks removed, ventricles filled


def test_foreground_constant_image_is_empty_and_preprocess_says_why():
    img = np.full((6, 8, 8), 7.0)
    assert not foreground_mask(img).any()
    with pytest.raises(PreprocessError, match="foreground has 0 voxels"):
        preprocess_volume(img)


def test_foreground_bad_method():
    with pytest.raises(PreprocessError, match="foreground method"):
        foreground_mask(np.ones((4, 4)), "magic")


# --------------------------------------------------------------------------- normalization
def test_normalization_stats(rng):
    data = rng.normal(500.0, 80.0, size=(12, 30, 30))
    mask = np.zeros(data.shape, dtype=bool)
    mask[:, 5:25, 5:25] = True
    cfg = PreprocessConfig(clip_percentiles=(0.0, 100.0), z_clip=50.0, background=-7.0)
    out = normalize_intensity(data, mask, cfg)
    assert out.dtype == np.float32 and out.shape == data.shape
    assert abs(out[mask].mean()) < 1e-5 and out[mask].std() == pytest.approx(1.0, abs=1e-5)
    assert np.all(out[~mask] == -7.0)
    # defaults: percentile clip then +-3 clip, background = -3
    out = normalize_intensity(data, mask, PreprocessConfig(z_clip=1.5))
    assert out[mask].min() >= -1.5 and out[mask].max() <= 1.5
    assert np.all(out[~mask] == -1.5)
    assert abs(out[mask].mean()) < 0.05


def test_percentile_clip_removes_outliers(rng):
    data = rng.normal(100.0, 10.0, size=(10, 20, 20))
    mask = np.ones(data.shape, dtype=bool)
    data[0, 0, :5] = 1e6  # a few hot voxels must not squash the rest
    out = normalize_intensity(data, mask, PreprocessConfig(z_clip=10.0))
    assert out[1:].std() == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize(
    ("data", "mask", "message"),
    [
        (np.full((4, 5, 6), np.nan), np.ones((4, 5, 6), bool), "NaN/Inf"),
        (np.ones((4, 5, 6)), np.ones((4, 5)), "mask shape"),
        (np.ones((4, 5, 6)), np.zeros((4, 5, 6), bool), "foreground has 0 voxels"),
        (np.full((4, 5, 6), 3.0), np.ones((4, 5, 6), bool), "constant"),
        (np.ones((2, 3, 4, 5)), np.ones((2, 3, 4, 5), bool), "2-D or 3-D"),
        (np.ones((0, 5, 6)), np.ones((0, 5, 6), bool), "empty"),
        (np.array([["a", "b"]]), np.ones((1, 2), bool), "numeric"),
    ],
)
def test_normalization_bad_inputs(data, mask, message):
    with pytest.raises(PreprocessError, match=message):
        normalize_intensity(data, mask, PreprocessConfig())


def test_nan_in_volume_names_the_problem():
    img, _ = _blob_volume()
    img[3, 4, 5] = np.inf
    with pytest.raises(PreprocessError, match="1 NaN/Inf voxels"):
        preprocess_volume(img)


# --------------------------------------------------------------------------- slicing
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_exact_round_trip_when_size_is_the_padded_square(axis):
    img, mask = _blob_volume()
    side = max(s for i, s in enumerate(SHAPE) if i != axis)
    cfg = PreprocessConfig(axis=axis, size=side)
    batch = preprocess_volume(img, cfg)
    n = SHAPE[axis]
    assert batch.images.shape == (n, 1, side, side) and batch.images.dtype == np.float32
    assert batch.masks.shape == (n, 1, side, side) and batch.masks.dtype == bool
    np.testing.assert_array_equal(batch.indices, np.arange(n))
    norm = normalize_intensity(img, mask, cfg)
    back = from_slices(batch.images, batch, fill=123.0)
    assert back.dtype == np.float32 and back.shape == SHAPE
    np.testing.assert_array_equal(back, norm)
    back_mask = from_slices(batch.masks[:, 0].astype(np.float32), batch, order=0) > 0.5
    np.testing.assert_array_equal(back_mask, mask)
    # padding holds the background value, and the padded area is never foreground
    padded = batch.images[:, 0][~batch.masks[:, 0]]
    assert padded.size and np.all(padded == cfg.background)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_round_trip_through_resizing_is_close(axis):
    img, mask = _blob_volume(shape=(20, 28, 40), sigma=4.0)  # smooth: resizing keeps it
    cfg = PreprocessConfig(axis=axis, size=16)
    batch = preprocess_volume(img, cfg, mask=mask)
    assert batch.images.shape[2:] == (16, 16)
    norm = normalize_intensity(img, mask, cfg)
    back = from_slices(batch.images, batch, fill=cfg.background)
    inner = ndi.binary_erosion(mask, iterations=3)  # away from the sharp brain edge
    err = np.abs(back - norm)[inner]
    assert err.mean() < 0.1 and np.percentile(err, 95) < 0.3
    # the map is placed on the right slices and positions: the brain lands where it was
    back_mask = from_slices(batch.masks.astype(np.float32), batch, order=0) > 0.5
    dice = 2 * (back_mask & mask).sum() / (back_mask.sum() + mask.sum())
    assert dice > 0.9


def test_from_slices_fills_missing_slices_and_checks_shapes():
    img, _ = _blob_volume()
    cfg = PreprocessConfig(axis=0, size=20, skip_slices=2)
    batch = preprocess_volume(img, cfg, training=True)
    assert batch.indices[0] >= 2 and batch.indices[-1] <= SHAPE[0] - 3
    maps = np.ones((len(batch), 20, 20), dtype=np.float32)
    back = from_slices(maps, batch, fill=-1.0)
    keep = np.zeros(SHAPE[0], dtype=bool)
    keep[batch.indices] = True
    assert np.all(back[keep] == 1.0) and np.all(back[~keep] == -1.0)
    with pytest.raises(PreprocessError, match="do not match the batch"):
        from_slices(maps[:-1], batch)


def test_training_selection_skip_and_foreground_fraction():
    img = np.zeros((12, 10, 10), dtype=np.float32)
    rng = np.random.default_rng(0)
    img[2:10, 2:8, 2:8] = rng.uniform(100, 200, size=(8, 6, 6))
    img[10, 5, 5] = 150.0  # a slice with 1 % foreground
    cfg = PreprocessConfig(skip_slices=3, size=16, min_foreground_fraction=0.05)
    all_slices = preprocess_volume(img, cfg)
    np.testing.assert_array_equal(all_slices.indices, np.arange(12))  # prediction: every slice
    train = preprocess_volume(img, cfg, training=True)
    np.testing.assert_array_equal(train.indices, np.arange(3, 9))
    cfg0 = PreprocessConfig(size=16, min_foreground_fraction=0.0)
    train0 = preprocess_volume(img, cfg0, training=True)  # empty slices are never training data
    np.testing.assert_array_equal(train0.indices, np.arange(2, 11))
    huge = PreprocessConfig(skip_slices=20, size=16)
    assert len(preprocess_volume(img, huge, training=True)) == 0


def test_lesion_free_slices_and_exclude_mask(phantom):
    cfg = PreprocessConfig(size=32)
    batch = preprocess_volume(phantom.image, cfg, training=True)
    lesion_slices = set(np.flatnonzero(phantom.lesion_mask.any(axis=(1, 2))))
    assert lesion_slices and lesion_slices < set(range(24))
    free = lesion_free_slices(batch, phantom.lesion_mask)
    assert isinstance(free, SliceBatch) and len(free) < len(batch)
    assert not set(free.indices) & lesion_slices
    assert set(free.indices) == set(batch.indices) - lesion_slices
    excl = preprocess_volume(phantom.image, cfg, training=True, exclude_mask=phantom.lesion_mask)
    np.testing.assert_array_equal(excl.indices, free.indices)
    np.testing.assert_array_equal(excl.images, free.images)
    # masks already in the batch layout work too
    in_layout = slice_masks(phantom.lesion_mask, batch)
    free2 = lesion_free_slices(batch, in_layout)
    assert set(free2.indices) >= set(free.indices)
    with pytest.raises(PreprocessError, match="lesion mask shape"):
        lesion_free_slices(batch, np.zeros((3, 3)))


def test_slice_masks_keeps_labels_and_dtype(phantom):
    cfg = PreprocessConfig(axis=1, size=40)
    batch = preprocess_volume(phantom.image, cfg)
    labels = slice_masks(phantom.lesion_mask, batch)
    assert labels.shape == (len(batch), 1, 40, 40) and labels.dtype == np.uint8
    assert set(np.unique(labels)) <= set(np.unique(phantom.lesion_mask))
    brain = slice_masks(phantom.brain_mask, batch)
    assert brain.dtype == bool
    np.testing.assert_array_equal(brain, batch.masks)
    with pytest.raises(PreprocessError, match="differs from the volume shape"):
        slice_masks(phantom.lesion_mask[:-1], batch)


def test_two_d_input_is_one_slice():
    img, mask = _blob_volume(shape=(30, 18))
    cfg = PreprocessConfig(size=30, skip_slices=5)
    batch = preprocess_volume(img, cfg, training=True)
    assert batch.images.shape == (1, 1, 30, 30)
    np.testing.assert_array_equal(batch.indices, [0])
    back = from_slices(batch.images, batch)
    assert back.shape == (30, 18)
    np.testing.assert_array_equal(back, normalize_intensity(img, mask, cfg))


def test_layout_and_subset():
    img, _ = _blob_volume()
    batch = preprocess_volume(img, PreprocessConfig(axis=2, size=8))
    lay = batch.layout
    assert lay.shape == SHAPE and lay.axis == 2 and lay.slice_shape == (10, 14)
    assert lay.square == 14 and lay.pad == ((2, 2), (0, 0))
    assert type(lay).from_dict(json.loads(json.dumps(lay.to_dict()))) == lay
    sub = batch.subset(np.array([1, 3]))
    np.testing.assert_array_equal(sub.indices, [1, 3])
    np.testing.assert_array_equal(sub.images, batch.images[[1, 3]])


def test_module_does_not_import_torch():
    code = "import sys, napari_vae_anomaly.preprocessing; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
