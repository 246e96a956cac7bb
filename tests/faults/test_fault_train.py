"""train under faults: an empty volume is named, --resume refuses conflicting options."""

from __future__ import annotations

import numpy as np
from faults_data import checkpoint_and_scan, snapshot

from napari_vae_anomaly.cli.main import main
from napari_vae_anomaly.io import Geometry, write_volume


def test_empty_volume_error_names_the_file(tmp_path, capsys):
    geo = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    blank = write_volume(tmp_path / "blank_T1.nii.gz", np.zeros((6, 20, 20), np.float32), geo)
    out = tmp_path / "m.safetensors"
    assert main(["train", str(blank), "--out", str(out), "--epochs", "1", "--size", "16",
                 "--quiet", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "blank_T1.nii.gz:" in err
    assert not out.exists()


def test_resume_refuses_conflicting_model_options(tmp_path, capsys):
    ckpt, _ = checkpoint_and_scan(tmp_path)  # size 16, features 4,8, latent 4
    before = snapshot(tmp_path)
    for opt in (["--latent", "32"], ["--size", "32"], ["--features", "8,16"]):
        assert main(["train", "--phantom", "1", "--resume", str(ckpt), "--out",
                     str(tmp_path / "r.safetensors"), "--epochs", "1", "--quiet", *opt]) == 2
        err = capsys.readouterr().err
        assert f"{opt[0]} " in err and "conflicts with --resume" in err, err
    assert snapshot(tmp_path) == before


def test_train_prints_volume_notes_as_warnings(tmp_path, capsys):
    import SimpleITK as sitk

    rng = np.random.default_rng(0)
    data = rng.normal(100, 10, (8, 20, 20)).astype(np.float32)
    data[:, :4] = 0
    data[3, 10, 10] = np.nan
    scans = []
    for i in range(2):
        scans.append(tmp_path / f"n{i}.nii.gz")
        sitk.WriteImage(sitk.GetImageFromArray(data), str(scans[-1]))
    assert main(["train", *map(str, scans), "--out", str(tmp_path / "m.safetensors"),
                 "--epochs", "1", "--size", "16", "--features", "4,8", "--latent", "4",
                 "--batch-size", "8", "--quiet", "--device", "cpu", "--no-augment"]) == 0
    err = capsys.readouterr().err
    assert "napari-vae-anomaly train: warning: n0.nii.gz: 1 NaN/infinite voxels were set to 0" in err
