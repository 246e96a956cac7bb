"""The domain check: a data profile recorded by training in the model card, and readable
warnings (never a refusal) for scans unlike the training data - a photograph, an RGB image, a
tiny volume, far-off spacing, another contrast - in the core, ``predict`` and Detect."""

from __future__ import annotations

import numpy as np
import pytest

from napari_vae_anomaly.data.phantom import make_phantom
from napari_vae_anomaly.models.domain import (
    check_domain,
    data_profile,
    domain_message,
    profile_of_card,
    volume_profile,
)

SHAPE = (24, 48, 48)


@pytest.fixture(scope="module")
def card():
    """A card whose profile comes from two normal phantoms (1 mm voxels)."""
    volumes = [make_phantom(seed=s, shape=SHAPE, lesions=False) for s in (1, 2)]
    profile = data_profile([volume_profile(p.image, p.geometry.scale) for p in volumes])
    return {"name": "tiny", "training": {"data": {"profile": profile}}}


def test_volume_and_data_profiles_hold_the_figures_compared():
    a = np.zeros((10, 20, 30), np.float32)
    a[2:8, 5:15, 5:25] = np.linspace(100, 200, 6 * 10 * 20).reshape(6, 10, 20)
    p = volume_profile(a, (3.0, 1.0, 0.5))
    assert p["ndim"] == 3 and p["shape"] == [10, 20, 30] and p["spacing"] == [3.0, 1.0, 0.5]
    assert p["foreground_fraction"] == pytest.approx(1200 / 6000)
    p1, p50, p99 = p["intensity_percentiles"]
    assert p1 == pytest.approx(101, abs=0.1) and p50 == pytest.approx(150, abs=0.1)
    assert p["median_position"] == pytest.approx(0.5, abs=0.01)
    q = volume_profile(a[:, :10], (2.0, 1.0, 0.5))
    prof = data_profile([p, q])
    assert prof["volumes"] == 2 and prof["ndim"] == 3
    assert prof["shape"] == [[10, 10, 30], [10, 20, 30]]
    assert prof["spacing"] == [[2.0, 1.0, 0.5], [3.0, 1.0, 0.5]]
    assert prof["foreground_fraction"][0] <= prof["foreground_fraction"][1]


def test_a_scan_like_the_training_data_gives_no_warning(card):
    other = make_phantom(seed=5, shape=SHAPE, lesions=True)
    assert check_domain(other.image, other.geometry.scale, card) == []


def test_photograph_rgb_tiny_spacing_and_contrast_are_named(card):
    rng = np.random.default_rng(0)
    photo = check_domain(rng.random((480, 640)), (1.0, 1.0), card)
    assert len(photo) == 1 and photo[0].startswith("a 2-D image (a photograph or a single slice?)")
    assert "3-D volumes of 24 x 48 x 48 voxels" in photo[0]
    rgb = check_domain((rng.random((48, 64, 3)) * 255).astype(np.uint8), None, card)
    assert rgb == ["an RGB colour image, which is not supported: the model was trained on "
                   "single-channel scans"]
    tiny = check_domain(rng.random((5, 20, 20)), (1.0, 1.0, 1.0), card)
    assert "5 x 20 x 20 voxels, far smaller than the training volumes (24 x 48 x 48)" in tiny
    p = make_phantom(seed=5, shape=SHAPE, lesions=False)
    far = check_domain(p.image, (1.0, 0.3, 0.3), card)
    assert far == ["voxel spacing 1 x 0.3 x 0.3 mm, unlike the training data's 1 x 1 x 1 mm"]
    inverted = check_domain(p.image.max() - p.image, p.geometry.scale, card)
    assert any("intensity distribution unlike the training data's" in w for w in inverted)
    ct = check_domain(p.image * 3.0 - 1000.0, p.geometry.scale, card)
    assert any("negative intensities" in w for w in ct)
    message = domain_message(tiny, "tiny")
    assert message.startswith("this scan is unlike the data model 'tiny' was trained on: 5 x 20")


def test_old_cards_fall_back_to_the_listed_shapes_and_spacing():
    old = {"training": {"data": {"shapes": [[24, 48, 48], [30, 48, 48]],
                                 "spacing": [[0.5, 0.5, 2.0], [0.5, 0.5, 2.0]]}}}
    prof = profile_of_card(old)
    assert prof["shape"] == [[24, 48, 48], [30, 48, 48]]
    assert prof["spacing"] == [[2.0, 0.5, 0.5], [2.0, 0.5, 0.5]]  # ITK (x, y, z) -> (z, y, x)
    assert check_domain(np.ones((4, 4, 4)), (2.0, 0.5, 0.5), old) == [
        "4 x 4 x 4 voxels, far smaller than the training volumes (24 x 48 x 48 to 30 x 48 x 48)"]
    assert profile_of_card({"name": "hand-made"}) == {}
    assert check_domain(np.ones((4, 4, 4)), None, {"name": "hand-made"}) == []
    garbage = {"training": {"data": {"profile": {"ndim": 3, "shape": "big", "spacing": 7}}}}
    assert "profile is unreadable" in check_domain(np.ones((4, 4, 4)), (1, 1, 1), garbage)[0]


def test_training_records_the_profile_and_the_card_round_trips(tmp_path, card):
    from napari_vae_anomaly.models.card_schema import CardError, check_card
    from napari_vae_anomaly.models.checkpoint import load_checkpoint, read_card, save_checkpoint
    from napari_vae_anomaly.models.vae import VAE, VAEConfig
    from napari_vae_anomaly.preprocessing import PreprocessConfig
    from napari_vae_anomaly.training.slices import collect_slices

    volumes = [make_phantom(seed=s, shape=SHAPE, lesions=False).volume for s in (1, 2)]
    summary = collect_slices(volumes, PreprocessConfig(size=16)).summary
    assert summary["profile"] == card["training"]["data"]["profile"]
    path = save_checkpoint(tmp_path / "m.safetensors", VAE(VAEConfig(size=16, features=(4, 8),
                                                                     latent=4)),
                           {"name": "m", "training": {"data": summary}}, PreprocessConfig(size=16))
    assert read_card(path)["training"]["data"]["profile"] == summary["profile"]
    assert profile_of_card(load_checkpoint(path).card) == summary["profile"]
    with pytest.raises(CardError, match="profile must be an object"):
        check_card({"training": {"data": {"profile": [1, 2]}}})


def test_bundled_model_carries_the_profile_of_its_training_subjects():
    from napari_vae_anomaly._sample_data import MNI_LESION_KINDS, MNI_LESION_SEED
    from napari_vae_anomaly.data.realistic import make_subject
    from napari_vae_anomaly.models import bundled_model_path
    from napari_vae_anomaly.models.checkpoint import read_card

    bundled = read_card(bundled_model_path())
    prof = bundled["training"]["data"]["profile"]
    assert prof["volumes"] == 24 and prof["shape"] == [[94, 116, 98], [94, 116, 98]]
    assert prof["spacing"] == [[2.0, 2.0, 2.0], [2.0, 2.0, 2.0]]
    sample = make_subject(MNI_LESION_SEED, MNI_LESION_KINDS)
    assert check_domain(sample.volume.data, sample.volume.geometry.scale, bundled) == []


def test_predict_prints_the_warning_and_still_runs(tmp_path, capsys):
    from types import SimpleNamespace

    from _models import phantom_setup
    from napari_vae_anomaly.cli.main import main
    from napari_vae_anomaly.io.geometry import Geometry
    from napari_vae_anomaly.io.write import write_volume
    from napari_vae_anomaly.models.checkpoint import save_checkpoint

    loaded, test = phantom_setup()
    profile = data_profile([volume_profile(test.image, (1.0, 1.0, 1.0))])
    ref = SimpleNamespace(images=loaded.normal_images, masks=loaded.normal_masks)
    ckpt = save_checkpoint(tmp_path / "m.safetensors", loaded.model,
                           {"name": "tiny", "training": {"data": {"profile": profile}}},
                           loaded.preprocess, normal_reference=ref)
    scan = write_volume(tmp_path / "fine.nii.gz", test.image, Geometry.identity(3, 0.25))
    argv = ["predict", str(scan), "--model", str(ckpt), "--predictor", "rec",
            "--out-dir", str(tmp_path / "out"), "--no-progress"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert ("predict: warning: this scan is unlike the data model 'tiny' was trained on: voxel "
            "spacing 0.25 x 0.25 x 0.25 mm, unlike the training data's 1 x 1 x 1 mm") in err
    assert (tmp_path / "out" / "fine_mask.nii.gz").is_file()
