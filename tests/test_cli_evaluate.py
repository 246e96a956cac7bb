"""`napari-vae-anomaly evaluate` end to end on synthetic maps and masks in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from napari_vae_anomaly.cli.main import main
from napari_vae_anomaly.metrics import oracle_best_dice, voxel_auprc, voxel_auroc

SHAPE = (6, 10, 12)


def _write(path: Path, data: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(data), str(path))
    return path


@pytest.fixture
def study(tmp_path):
    """Two cases: images (foreground = nonzero), masks, a perfect and a noisy map each."""
    rng = np.random.default_rng(5)
    arrays = {}
    for i, case in enumerate(("c1", "c2")):
        image = np.zeros(SHAPE, np.float32)
        image[:, 1:9, 2:10] = 1.0 + rng.random((SHAPE[0], 8, 8))
        seg = np.zeros(SHAPE, np.uint8)
        seg[1:4, 3 + i : 6 + i, 4:8] = 1 + i
        fg = image != 0
        perfect = np.where(seg > 0, 1.0, 0.2) * fg
        noisy = (rng.random(SHAPE) + 0.4 * (seg > 0)) * fg
        _write(tmp_path / "images" / f"{case}_flair.nii.gz", image)
        _write(tmp_path / "masks" / f"{case}_seg.nii.gz", seg)
        _write(tmp_path / "maps" / f"{case}_rec.nii.gz", perfect.astype(np.float32))
        _write(tmp_path / "maps" / f"{case}_kl_grad.nii.gz", noisy.astype(np.float32))
        arrays[case] = (seg, fg, noisy.astype(np.float32))
    return tmp_path, arrays


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _table(text: str) -> dict[tuple[str, str], dict[str, str]]:
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    header = _cells(lines[0])
    rows = [dict(zip(header, _cells(ln), strict=True)) for ln in lines[2:]]
    return {(r["predictor"], r["case"]): r for r in rows}


def test_folders_matched_by_case_with_images_as_foreground(study, capsys):
    root, arrays = study
    out = root / "report"
    argv = ["evaluate", "--maps", str(root / "maps"), "--masks", str(root / "masks")]
    argv += ["--images", str(root / "images"), "--threshold", "0.5", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    table = _table(printed)
    assert set(table) == {
        (p, c) for p in ("kl_grad", "rec") for c in ("c1", "c2", "pooled", "mean")
    }
    perfect = table[("rec", "pooled")]
    assert perfect["auroc"] == "1.0000" and perfect["auprc"] == "1.0000"
    assert perfect["dice"] == "1.0000" and perfect["oracle_dice"] == "1.0000"
    assert perfect["voxels"] == str(2 * 6 * 8 * 8)  # only the image's nonzero voxels
    assert perfect["slice_auroc_mean"] == "1.0000"
    assert perfect["abnormal_slices"] == "6" and perfect["normal_slices"] == "6"

    # the noisy map's numbers are those of the library on the same voxels
    seg, fg, noisy = arrays["c1"]
    c1 = table[("kl_grad", "c1")]
    assert c1["auroc"] == f"{voxel_auroc(noisy, seg, fg):.4f}"
    assert c1["auprc"] == f"{voxel_auprc(noisy, seg, fg):.4f}"
    assert c1["oracle_dice"] == f"{oracle_best_dice(noisy, seg, fg).dice:.4f}"
    s_all = np.concatenate([a[2][a[1]] for a in arrays.values()])
    y_all = np.concatenate([a[0][a[1]] for a in arrays.values()])
    assert table[("kl_grad", "pooled")]["auroc"] == f"{voxel_auroc(s_all, y_all):.4f}"
    assert 0.6 < float(table[("kl_grad", "pooled")]["auroc"]) < 1.0

    # the written files hold the same table
    assert (out / "metrics.md").read_text() == printed
    data = json.loads((out / "metrics.json").read_text())
    row = next(r for r in data["rows"] if r["predictor"] == "kl_grad" and r["case"] == "c1")
    assert row["auroc"] == pytest.approx(voxel_auroc(noisy, seg, fg), abs=1e-9)
    assert row["threshold"] == 0.5
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header[:2] == ["predictor", "case"] and "oracle_dice" in header
    assert not any("whole volume" in n for n in data["notes"])

    # a second run does not overwrite, unless asked
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "refusing to overwrite" in err and "--overwrite" in err and err.count("\n") == 1
    assert main([*argv, "--overwrite"]) == 0


def test_files_without_foreground_use_the_whole_volume(study, capsys):
    root, _ = study
    argv = ["evaluate", "--maps", str(root / "maps" / "c2_rec.nii.gz")]
    argv += ["--masks", str(root / "masks" / "c2_seg.nii.gz")]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    row = _table(printed)[("rec", "c2")]
    assert row["voxels"] == str(np.prod(SHAPE)) and row["auroc"] == "1.0000"
    columns = _cells(printed.splitlines()[0])
    assert "dice" not in columns and "threshold" not in columns and "oracle_dice" in columns
    assert "foreground: the whole volume" in printed


def test_unmatched_names_pair_in_order_when_files_are_listed(study, tmp_path, capsys):
    root, _ = study
    seg = sitk.ReadImage(str(root / "masks" / "c1_seg.nii.gz"))
    sitk.WriteImage(seg, str(tmp_path / "truth.nii.gz"))
    argv = ["evaluate", "--maps", str(root / "maps" / "c1_rec.nii.gz")]
    assert main([*argv, "--masks", str(tmp_path / "truth.nii.gz")]) == 0
    printed = capsys.readouterr().out
    assert _table(printed)[("map", "truth")]["oracle_dice"] == "1.0000"
    assert "paired in the order given" in printed
    two = [str(root / "masks" / "c2_seg.nii.gz"), str(tmp_path / "truth.nii.gz")]
    assert main([*argv, "--masks", *two]) == 2
    assert "1 maps match no mask by case name" in capsys.readouterr().err


def test_shape_mismatch_names_both_files(study, capsys):
    root, _ = study
    bad = _write(root / "other" / "c1_rec.nii.gz", np.zeros((6, 10, 11), np.float32))
    mask = root / "masks" / "c1_seg.nii.gz"
    status = main(["evaluate", "--maps", str(bad), "--masks", str(mask)])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1
    assert str(bad) in err and str(mask) in err and "(6, 10, 11)" in err


def test_missing_inputs_are_one_line_errors(study, capsys):
    root, _ = study
    assert main(["evaluate", "--maps", str(root / "nope"), "--masks", str(root / "masks")]) == 2
    assert "--maps" in capsys.readouterr().err
    status = main(
        ["evaluate", "--maps", str(root / "maps"), "--masks", str(root / "masks")]
        + ["--foreground", str(root / "masks" / "c1_seg.nii.gz")]
    )
    assert status == 2 and "--foreground: no file for case c2" in capsys.readouterr().err


def test_one_folder_for_maps_masks_and_images(study, capsys):
    root, _ = study
    mixed = root / "mixed"
    mixed.mkdir()
    for sub in ("maps", "masks", "images"):
        for f in (root / sub).iterdir():
            (mixed / f.name).write_bytes(f.read_bytes())
    argv = ["evaluate", "--maps", str(mixed), "--masks", *map(str, mixed.glob("*_seg.nii.gz"))]
    argv += ["--images", *map(str, mixed.glob("*_flair.nii.gz"))]
    assert main(argv) == 0
    table = _table(capsys.readouterr().out)
    assert {p for p, _ in table} == {"rec", "kl_grad"}  # no "seg" or "flair" predictor
    assert table[("rec", "pooled")]["auroc"] == "1.0000"


def test_predict_mask_files_in_the_maps_folder_are_not_predictors(study, capsys):
    """A predict output folder holds <case>_mask beside the maps: it is skipped, and said so."""
    root, arrays = study
    for case, (seg, _fg, _noisy) in arrays.items():
        _write(root / "maps" / f"{case}_mask.nii.gz", (seg > 0).astype(np.uint8))
    argv = ["evaluate", "--maps", str(root / "maps"), "--masks", str(root / "masks"),
            "--images", str(root / "images"), "--threshold", "0.5"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert {p for p, _ in _table(out)} == {"kl_grad", "rec"}
    assert "2 <case>_mask file(s) in --maps skipped" in out
