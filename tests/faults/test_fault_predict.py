"""predict under faults: clashing names, unwritable folders, failures and Ctrl-C mid-case."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from faults_data import checkpoint_and_scan, snapshot

from napari_vae_anomaly.cli.main import main
from napari_vae_anomaly.predictors.registry import DEFAULT_PREDICTORS


@pytest.fixture
def setup(tmp_path):
    ckpt, scan = checkpoint_and_scan(tmp_path)
    return tmp_path, ckpt, scan


def _argv(ckpt, out, *inputs, extra=()):
    return ["predict", *map(str, inputs), "--model", str(ckpt), "--threshold", "0.5",
            "--out-dir", str(out), "--no-progress", *extra]


@pytest.fixture
def no_compute(monkeypatch):
    """Fail if a case gets computed: refusals must come first."""
    import napari_vae_anomaly.predictors.pipeline as pipeline

    def refuse(*_a, **_k):
        raise AssertionError("a case was computed")

    monkeypatch.setattr(pipeline, "predict_volume", refuse)
    monkeypatch.setattr(pipeline, "predict_volume_iter", refuse)


def test_same_file_name_in_two_folders_is_refused_up_front(setup, capsys, no_compute):
    d, ckpt, scan = setup
    for sub in ("a", "b"):
        (d / sub).mkdir()
        shutil.copy(scan, d / sub / "scan.nii.gz")
    out = d / "out"
    assert main(_argv(ckpt, out, d / "a/scan.nii.gz", d / "b/scan.nii.gz",
                      extra=["--overwrite"])) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "a/scan.nii.gz" in err[0] and "b/scan.nii.gz" in err[0] and "--keep-parent" in err[0]
    assert not out.exists()


def test_keep_parent_writes_both(setup):
    d, ckpt, scan = setup
    for sub in ("a", "b"):
        (d / sub).mkdir()
        shutil.copy(scan, d / sub / "scan.nii.gz")
    out = d / "out"
    assert main(_argv(ckpt, out, d / "a/scan.nii.gz", d / "b/scan.nii.gz",
                      extra=["--keep-parent"])) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{p}_scan_{k}.nii.gz" for p in ("a", "b") for k in (DEFAULT_PREDICTORS[0], "mask"))


def test_same_stem_different_format_and_same_input_twice(setup, capsys, no_compute):
    from napari_vae_anomaly.io import read_volume, write_volume

    d, ckpt, scan = setup
    vol = read_volume(scan)
    other = write_volume(d / "scan.nrrd", vol.data, vol.geometry)
    assert main(_argv(ckpt, d / "o", scan, other)) == 2
    assert "scan.nii.gz and" in capsys.readouterr().err
    assert main(_argv(ckpt, d / "o", scan, scan)) == 2
    assert "given twice" in capsys.readouterr().err


def test_unwritable_out_dir_found_before_computing(setup, monkeypatch, capsys, no_compute):
    import tempfile

    d, ckpt, scan = setup
    real = tempfile.mkstemp

    def denied(*args, dir=None, **kwargs):
        if str(dir).endswith("locked"):
            raise PermissionError(13, "Permission denied")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    assert main(_argv(ckpt, d / "locked", scan)) == 2
    err = capsys.readouterr().err
    assert "permission denied (cannot write into it)" in err
    (d / "afile").write_text("x")
    assert main(_argv(ckpt, d / "afile" / "out", scan)) == 2
    assert "cannot create it" in capsys.readouterr().err


def test_failed_write_leaves_no_partial_case(setup, full_disk, capsys):
    d, ckpt, scan = setup
    out = d / "out"
    out.mkdir()
    full_disk(50, formats=("_mask.nii.gz",))  # the maps are fine, the mask is cut off
    assert main(_argv(ckpt, out, scan, extra=["--predictor", "rec", "--predictor", "combi"])) == 1
    assert "disk full" in capsys.readouterr().err
    assert snapshot(out) == {}  # neither maps nor temporaries


def test_ctrl_c_mid_case_leaves_old_outputs_and_no_partial_case(setup, monkeypatch, capsys):
    import napari_vae_anomaly.io.write as write_mod

    d, ckpt, scan = setup
    out = d / "out"
    assert main(_argv(ckpt, out, scan)) == 0
    before = snapshot(out)
    real = write_mod.stage_volume
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(write_mod, "stage_volume", interrupted)
    assert main(_argv(ckpt, out, scan, extra=["--overwrite", "--threshold", "0.1"])) == 130
    assert snapshot(out) == before


def test_volume_notes_are_printed_as_warnings(setup, capsys):
    import SimpleITK as sitk

    d, ckpt, scan = setup
    data = sitk.GetArrayFromImage(sitk.ReadImage(str(scan)))
    data[2, 10, 10] = np.nan
    data[3, 11, 11] = np.inf
    nan_scan = d / "holes.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(data), str(nan_scan))
    four = d / "two_channels.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.stack([data, data]), isVector=False), str(four))
    assert main(_argv(ckpt, d / "out", nan_scan, four)) == 0
    err = capsys.readouterr().err
    assert "predict: warning: holes.nii.gz: 2 NaN/infinite voxels were set to 0" in err
    assert "predict: warning: two_channels.nii.gz: 2 channels; used channel 0" in err


def test_a_case_failing_after_its_maps_were_staged_leaves_nothing(setup, monkeypatch, capsys):
    """Maps are staged as they are made; when the case fails later (here: making the mask),
    the staged maps are discarded with it: no file, no temporary."""
    import napari_vae_anomaly.io.write as write_mod
    import napari_vae_anomaly.postprocessing.mask_lesions as mask_mod

    d, ckpt, scan = setup
    out = d / "out"
    real = write_mod.stage_volume
    staged = []

    def counted(path, *args, **kwargs):
        staged.append(path.name)
        return real(path, *args, **kwargs)

    def broken(*_a, **_k):
        raise ValueError("no mask today")

    monkeypatch.setattr(write_mod, "stage_volume", counted)
    monkeypatch.setattr(mask_mod, "mask_and_lesions", broken)
    rc = main(_argv(ckpt, out, scan, extra=["--predictor", "rec", "--predictor", "combi"]))
    assert rc == 1
    assert staged == ["scan_rec.nii.gz", "scan_combi.nii.gz", "scan_ensemble.nii.gz"]
    assert f"predict: {scan}: ValueError: no mask today" in capsys.readouterr().err
    assert snapshot(out) == {}
