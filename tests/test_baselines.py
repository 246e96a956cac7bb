"""Trivial baselines and the calibration core (numpy only, fast)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_vae_anomaly.metrics import dice, voxel_auroc
from napari_vae_anomaly.postprocessing.calibrate import calibrate, edited_slices, weight_grid
from napari_vae_anomaly.study.baselines import (
    MeanSliceDeviation,
    intensity_map,
    relative_positions,
)


@pytest.fixture
def bright_volume():
    """Noisy tissue (mean 0) in a ball-shaped foreground with a bright cubic lesion."""
    rng = np.random.default_rng(3)
    z, y, x = np.mgrid[:16, :32, :32]
    fg = (z - 8) ** 2 / 64 + (y - 16) ** 2 / 225 + (x - 16) ** 2 / 225 < 1
    img = rng.normal(0.0, 0.3, fg.shape).astype(np.float32)
    truth = np.zeros(fg.shape, np.uint8)
    truth[6:10, 12:18, 12:18] = 1
    img[truth > 0] += 3.0
    img[~fg] = -5.0  # dark background, like a scan: must not matter inside the foreground
    return img, truth, fg


def test_bright_and_dark_intensity(bright_volume):
    img, truth, fg = bright_volume
    bright = intensity_map(img, fg, "bright")
    dark = intensity_map(img, fg, "dark")
    assert bright.dtype == np.float32 and bright.shape == img.shape
    assert voxel_auroc(bright, truth, fg) > 0.99
    assert voxel_auroc(dark, truth, fg) < 0.01
    # background holds the lowest foreground score: a threshold never marks it
    assert bright[~fg].max() <= bright[fg].min()
    assert dark[~fg].max() <= dark[fg].min()


def test_intensity_rank_is_percentile(bright_volume):
    img, truth, fg = bright_volume
    rank = intensity_map(img, fg, "bright", rank=True)
    assert 0.0 <= rank[fg].min() and rank[fg].max() <= 100.0
    # same ordering as the intensity inside the foreground, so the same AUROC
    assert voxel_auroc(rank, truth, fg) == pytest.approx(voxel_auroc(img, truth, fg))
    assert np.mean(rank[fg] > 99.0) == pytest.approx(0.01, abs=0.005)
    with pytest.raises(ValueError, match="polarity"):
        intensity_map(img, fg, "grey")


def test_mean_slice_deviation_finds_what_normal_slices_lack():
    rng = np.random.default_rng(0)
    normal = rng.normal(0.0, 0.1, (40, 1, 16, 16)).astype(np.float32)
    normal[:, :, 4:12, 4:12] += 1.0  # the "anatomy" every normal slice shares
    masks = np.ones_like(normal, dtype=bool)
    base = MeanSliceDeviation().fit(normal, masks)
    test = normal[:4].copy()
    test[:, :, 1:3, 1:3] += 2.0  # lesion
    d = base.score(test, masks[:4])
    assert d.shape == (4, 16, 16) and d.dtype == np.float32
    assert d[:, 1:3, 1:3].min() > d[:, 4:12, 4:12].max()
    with pytest.raises(RuntimeError):
        MeanSliceDeviation().score(test)


def test_mean_slice_bands_follow_depth():
    a = np.zeros((4, 8, 8), np.float32)
    b = np.ones((4, 8, 8), np.float32)
    imgs = np.concatenate([a, b])
    pos = np.array([0.1] * 4 + [0.9] * 4)
    m = MeanSliceDeviation(bands=2).fit(imgs, None, pos)
    assert np.allclose(m.score(b, None, np.full(4, 0.9)), 0.0)
    assert np.allclose(m.score(b, None, np.full(4, 0.1)), 1.0)
    fg = np.zeros((10, 4, 4), bool)
    fg[2:8] = True
    assert np.allclose(relative_positions(np.array([2, 7, 0]), fg), [0.0, 1.0, 0.0])


def _synthetic(seed: int = 1):
    rng = np.random.default_rng(seed)
    truth = np.zeros((12, 24, 24), np.uint8)
    truth[3:9, 8:16, 8:16] = 1
    good = truth * 1.5 + rng.normal(0, 0.5, truth.shape)
    noise = rng.normal(0, 1.0, truth.shape)
    return truth, good.astype(np.float32), noise.astype(np.float32)


def test_edited_slices():
    a = np.zeros((5, 4, 4), np.uint8)
    b = a.copy()
    b[1, 0, 0] = 1
    b[3, 2, 2] = 2
    assert edited_slices(b, a).tolist() == [1, 3]
    assert edited_slices(b, a, axis=1).tolist() == [0, 2]
    c = a.copy()
    c[1, 0, 0] = 3  # label value change is not an edit of the binary mask
    assert edited_slices(c, b).tolist() == [3]


def test_calibration_beats_default_threshold_on_corrected_slices():
    truth, good, _ = _synthetic()
    default = 2.5  # far too high: misses most of the lesion
    slices = [4, 5, 10]
    cal = calibrate([good], truth, slices, default_threshold=default)
    assert cal.weights == (1.0,)
    assert cal.dice_after >= cal.dice_before
    region = np.zeros(truth.shape, bool)
    region[slices] = True
    d_default = dice(good > default, truth, region)
    assert cal.dice_before == pytest.approx(d_default)
    assert cal.dice_after == pytest.approx(dice(good > cal.threshold, truth, region))
    assert cal.dice_after > d_default + 0.2
    mask = cal.apply([good])
    assert mask.dtype == np.uint8 and mask.shape == truth.shape
    # the threshold generalizes to the slices the user did not correct
    assert dice(mask, truth) > 0.7
    assert "corrected slices" in cal.describe()


def test_calibration_weights_prefer_the_informative_map():
    truth, good, noise = _synthetic()
    before = (noise > 1.0).astype(np.uint8)
    cal = calibrate([noise, good], truth, [3, 4, 5], before=before)
    assert cal.weights[1] > cal.weights[0]
    assert cal.dice_after > cal.dice_before
    assert len(weight_grid(2)) == 5 and weight_grid(2)[0] == (0.5, 0.5)


def test_calibration_without_lesion_marks_nothing_there():
    truth, good, _ = _synthetic()
    cal = calibrate([good], truth, [0, 1])
    assert cal.apply([good])[[0, 1]].sum() == 0
    assert cal.notes
    with pytest.raises(ValueError, match="no corrected slice"):
        calibrate([good], truth, [])
