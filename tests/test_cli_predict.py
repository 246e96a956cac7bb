"""``napari-vae-anomaly predict``: files, geometry, corrupt cases, no silent overwrite."""

from __future__ import annotations

import numpy as np
import pytest

from _models import save_phantom_checkpoint
from napari_vae_anomaly.cli.main import main


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """A saved checkpoint (with normal reference) and three inputs, one of them corrupt."""
    from types import SimpleNamespace

    from napari_vae_anomaly.data.phantom import make_phantom
    from napari_vae_anomaly.io.geometry import Geometry
    from napari_vae_anomaly.io.write import write_volume

    d = tmp_path_factory.mktemp("cohort")
    ckpt, loaded, test = save_phantom_checkpoint(d / "tiny.safetensors")
    a, b = np.deg2rad(15.0), np.deg2rad(-10.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    geo = Geometry((0.9, 1.1, 2.5), (-40.0, 10.0, 5.0), tuple((rz @ rx).ravel()))
    first = write_volume(d / "case01.nii.gz", test.image, geo)
    other = make_phantom(seed=8, shape=(20, 40, 44), lesions=True)
    second = write_volume(d / "case02.nrrd", other.image, other.geometry)
    bad = d / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b not really a gzip file")
    return SimpleNamespace(dir=d, ckpt=ckpt, first=first, second=second, bad=bad, geo=geo,
                           shapes={"case01": test.image.shape, "case02": other.image.shape})


def test_cohort_with_a_corrupt_case(cohort, tmp_path, capsys):
    from napari_vae_anomaly.io.read import read_volume

    out = tmp_path / "out"
    argv = ["predict", str(cohort.first), str(cohort.bad), str(cohort.second), "--model",
            str(cohort.ckpt), "--predictor", "rec", "--predictor", "combi", "--min-size", "3",
            "--out-dir", str(out), "--no-progress"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "broken.nii.gz" in err and "2 of 3 case(s) done" in err
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{c}_{k}.nii.gz" for c in ("case01", "case02") for k in ("rec", "combi", "ensemble", "mask"))
    m = read_volume(out / "case01_rec.nii.gz")
    assert m.data.dtype == np.float32 and m.shape == cohort.shapes["case01"]
    np.testing.assert_allclose(m.geometry.spacing, cohort.geo.spacing, rtol=1e-5)
    np.testing.assert_allclose(m.geometry.origin, cohort.geo.origin, atol=1e-4)
    np.testing.assert_allclose(m.geometry.direction, cohort.geo.direction, atol=1e-5)
    mask = read_volume(out / "case02_mask.nii.gz")
    assert mask.data.dtype == np.uint8 and mask.shape == cohort.shapes["case02"]
    assert set(np.unique(mask.data)) <= {0, 1}


def test_refuses_to_overwrite_then_overwrites(cohort, tmp_path, capsys):
    out = tmp_path / "o"
    base = ["predict", str(cohort.first), "--model", str(cohort.ckpt), "--threshold", "0.5",
            "--out-dir", str(out), "--no-progress"]
    assert main(base) == 0
    files = sorted(out.iterdir())
    # the default predictors, their ensemble (which makes the mask) and the mask
    from napari_vae_anomaly.predictors.registry import DEFAULT_PREDICTORS

    ens = ("ensemble",) if len(DEFAULT_PREDICTORS) > 1 else ()
    assert [p.name for p in files] == sorted(
        f"case01_{k}.nii.gz" for k in (*DEFAULT_PREDICTORS, *ens, "mask"))
    stamp = {p: p.stat().st_mtime_ns for p in files}
    capsys.readouterr()
    assert main(base) == 0  # a rerun keeps what is there; not a failure (issue 12)
    err = capsys.readouterr().err
    assert "kept" in err and "--overwrite" in err and "0 of 1 case(s) done" in err
    assert {p: p.stat().st_mtime_ns for p in files} == stamp
    assert main([*base, "--overwrite"]) == 0


def test_fixed_threshold_mask_is_map_above_it(cohort, tmp_path):
    from napari_vae_anomaly.io.read import read_volume

    out = tmp_path / "t"
    assert main(["predict", str(cohort.second), "--model", str(cohort.ckpt), "--predictor",
                 "rec", "--threshold", "0.3", "--min-size", "0", "--out-dir", str(out), "--no-progress"]) == 0
    rec = read_volume(out / "case02_rec.nii.gz").data
    mask = read_volume(out / "case02_mask.nii.gz").data
    np.testing.assert_array_equal(mask, (rec > 0.3).astype(np.uint8))


def test_bad_model_is_a_one_line_error(cohort, tmp_path, capsys):
    assert main(["predict", str(cohort.first), "--model", str(cohort.bad), "--no-progress",
                 "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "broken.nii.gz" in err[0]


def test_missing_input_is_one_line_exit_2_and_no_output_folder(cohort, tmp_path, capsys):
    out = tmp_path / "never"
    rc = main(["predict", str(tmp_path / "nope.nii.gz"), str(cohort.first), "--model",
               str(cohort.ckpt), "--out-dir", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and not out.exists()
    assert len(err) == 1 and "nope.nii.gz does not exist" in err[0] and "nothing was written" in err[0]


def test_a_case_that_fails_to_write_does_not_stop_the_next(cohort, tmp_path, capsys,
                                                            monkeypatch):
    """Writing runs in a background thread: its failure is still one line for that case."""
    import napari_vae_anomaly.io.write as write_mod
    from napari_vae_anomaly.errors import VolumeWriteError

    real = write_mod.stage_volume

    def first_fails(path, *args, **kwargs):
        if path.name.startswith("case01_"):
            raise VolumeWriteError("case01_rec.nii.gz: no space left on the device")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(write_mod, "stage_volume", first_fails)
    out = tmp_path / "out"
    assert main(["predict", str(cohort.first), str(cohort.second), "--model", str(cohort.ckpt),
                 "--predictor", "rec", "--threshold", "0.3", "--out-dir", str(out),
                 "--no-progress"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert [ln for ln in err if "no space left" in ln] == [
        f"predict: {cohort.first}: case01_rec.nii.gz: no space left on the device"]
    assert err[-1] == f"predict: 1 of 2 case(s) done, written to {out}; failed: {cohort.first}"
    assert sorted(p.name for p in out.iterdir()) == ["case02_mask.nii.gz", "case02_rec.nii.gz"]
