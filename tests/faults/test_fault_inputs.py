"""Broken inputs: DICOM series with missing slices, NaN hidden by ITK, unreadable files."""

from __future__ import annotations

import os

import numpy as np
import pytest
import SimpleITK as sitk
from faults_data import checkpoint_and_scan, snapshot

from napari_vae_anomaly.errors import VolumeReadError
from napari_vae_anomaly.io import read_volume
from test_io_read import write_dicom_series

UID = "1.2.826.0.1.1.77"


@pytest.fixture
def gap_series(tmp_path):
    """12 axial slices 2 mm apart, the 6th file lost."""
    folder = tmp_path / "export"
    folder.mkdir()
    data = np.arange(12 * 6 * 7, dtype=np.int16).reshape(12, 6, 7)
    write_dicom_series(folder, data, UID, "T2 axial", "s", spacing=(0.8, 0.7, 2.0))
    (folder / "s005.dcm").unlink()
    return folder


def test_missing_dicom_slice_is_a_note_naming_series_and_slices(gap_series):
    before = snapshot(gap_series)
    vol = read_volume(gap_series)
    assert vol.shape[0] == 11
    (note,) = vol.notes
    assert note.startswith("export: DICOM series 'T2 axial' (MR, 11 slices, UID 1.2.826.0.1.1.77)")
    assert "11 slices from 30 to 52 mm are not evenly spaced: usual step 2 mm" in note
    assert "4 mm between slices 5 and 6 (at 38 and 42 mm)" in note
    assert "uniform 2.2 mm spacing" in note
    assert snapshot(gap_series) == before


def test_missing_dicom_slice_refused_in_strict_mode(gap_series):
    with pytest.raises(VolumeReadError, match=r"^export: DICOM series .* not evenly spaced.*"
                                              r"refused in strict mode\)$"):
        read_volume(gap_series, strict=True)


def test_regular_dicom_series_has_no_note(tmp_path):
    folder = tmp_path / "ok"
    folder.mkdir()
    write_dicom_series(folder, np.zeros((5, 4, 4), np.int16), UID, "T1", "s")
    assert read_volume(folder, strict=True).notes == []


def test_predict_warns_about_the_gap_and_strict_refuses(gap_series, tmp_path, capsys):
    from napari_vae_anomaly.cli.main import main

    ckpt, _ = checkpoint_and_scan(tmp_path)
    argv = ["predict", str(gap_series), "--model", str(ckpt), "--threshold", "0.5",
            "--out-dir", str(tmp_path / "o"), "--no-progress"]
    assert main(argv) == 0
    assert "predict: warning: export: DICOM series 'T2 axial'" in capsys.readouterr().err
    assert main([*argv, "--strict", "--overwrite"]) == 1
    assert "refused in strict mode" in capsys.readouterr().err


@pytest.mark.parametrize("ext", [".nii.gz", ".nii"])
def test_nifti_nan_seen_through_itk(tmp_path, ext):
    data = np.ones((4, 5, 6), np.float32)
    data[1, 2, 3] = np.nan
    data[2, 2, 2] = -np.inf
    path = tmp_path / f"holes{ext}"
    sitk.WriteImage(sitk.GetImageFromArray(data), str(path))
    vol = read_volume(path)
    assert vol.notes == [f"holes{ext}: 2 NaN/infinite voxels were set to 0"]
    assert np.isfinite(vol.data).all()
    with pytest.raises(VolumeReadError, match=r"2 voxels are NaN or infinite"):
        read_volume(path, nonfinite="error")


def test_permission_errors_are_named(tmp_path, monkeypatch):
    from faults_data import checkpoint_and_scan as make

    _, scan = make(tmp_path)
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(scan)
                        else real(p, mode))
    with pytest.raises(VolumeReadError, match=r"^scan\.nii\.gz: permission denied"):
        read_volume(scan)
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(locked)
                        else real(p, mode))
    with pytest.raises(VolumeReadError, match=r"^hidden\.nii\.gz: permission denied"):
        read_volume(locked / "hidden.nii.gz")  # a folder we may not search: not "no such file"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_real_unreadable_file(tmp_path):
    _, scan = checkpoint_and_scan(tmp_path)
    scan.chmod(0)
    try:
        with pytest.raises(VolumeReadError, match="permission denied"):
            read_volume(scan)
    finally:
        scan.chmod(0o644)
