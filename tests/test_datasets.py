"""Case discovery: BraTS folders (nested and flat), generic folders, CSV tables, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from napari_vae_anomaly.data.datasets import (
    Case,
    discover_cases,
    find_brats_cases,
    find_generic_cases,
    read_cases_csv,
)
from napari_vae_anomaly.errors import AnomalyError


def _write(path: Path, value: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(np.full((2, 3, 4), value, np.uint8)), str(path))
    return path


def _brats_case(root: Path, case: str, nested: bool = True, seg: bool = True) -> None:
    folder = root / case if nested else root
    for mod in ("t1", "t1ce", "t2", "flair"):
        _write(folder / f"{case}_{mod}.nii.gz")
    if seg:
        _write(folder / f"{case}_seg.nii.gz", 2)


def test_brats_case_folders_pick_the_modality(tmp_path):
    for case in ("BraTS_002", "BraTS_001"):
        _brats_case(tmp_path, case)
    cases = find_brats_cases(tmp_path, modality="t1")
    assert [c.name for c in cases] == ["BraTS_001", "BraTS_002"]
    assert cases[0] == Case(
        "BraTS_001",
        tmp_path / "BraTS_001" / "BraTS_001_t1.nii.gz",
        tmp_path / "BraTS_001" / "BraTS_001_seg.nii.gz",
    )
    flair = discover_cases(tmp_path, modality="FLAIR")
    assert flair[1].image_path.name == "BraTS_002_flair.nii.gz"
    assert all(c.mask_path.name.endswith("_seg.nii.gz") for c in flair)


def test_brats_flat_layout(tmp_path):
    _brats_case(tmp_path, "p1", nested=False)
    _brats_case(tmp_path, "p2", nested=False)
    cases = discover_cases(tmp_path, modality="t2")
    assert [(c.name, c.image_path.name, c.mask_path.name) for c in cases] == [
        ("p1", "p1_t2.nii.gz", "p1_seg.nii.gz"),
        ("p2", "p2_t2.nii.gz", "p2_seg.nii.gz"),
    ]


def test_brats_missing_masks_are_listed(tmp_path):
    _brats_case(tmp_path, "a")
    _brats_case(tmp_path, "b", seg=False)
    _brats_case(tmp_path, "c", seg=False)
    with pytest.raises(AnomalyError, match=r"2 of 3 cases have no mask: b, c"):
        find_brats_cases(tmp_path)
    cases = find_brats_cases(tmp_path, require_masks=False)
    assert [c.mask_path is None for c in cases] == [False, True, True]


def test_brats_wrong_modality_and_empty_folder(tmp_path):
    _write(tmp_path / "x" / "x_t2.nii.gz")
    with pytest.raises(AnomalyError, match="no BraTS cases for modality flair.*present: t2"):
        find_brats_cases(tmp_path, modality="flair")
    with pytest.raises(AnomalyError, match="--modality pd: unknown"):
        find_brats_cases(tmp_path, modality="pd")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(AnomalyError, match="no cases found"):
        discover_cases(empty)
    with pytest.raises(AnomalyError, match="not a folder"):
        discover_cases(tmp_path / "nowhere")


def test_generic_folder_with_masks_beside(tmp_path):
    _write(tmp_path / "scan_b.nrrd")
    _write(tmp_path / "scan_b_seg.nrrd")
    _write(tmp_path / "scan_a.nii.gz")
    _write(tmp_path / "scan_a_seg.mha")  # another extension is fine
    (tmp_path / "notes.txt").write_text("not a volume")
    cases = discover_cases(tmp_path)
    assert [(c.name, c.image_path.name, c.mask_path.name) for c in cases] == [
        ("scan_a", "scan_a.nii.gz", "scan_a_seg.mha"),
        ("scan_b", "scan_b.nrrd", "scan_b_seg.nrrd"),
    ]
    _write(tmp_path / "scan_c.nii.gz")
    with pytest.raises(AnomalyError, match="1 of 3 cases have no mask: scan_c"):
        find_generic_cases(tmp_path)


def test_csv_with_header_and_relative_paths(tmp_path):
    _write(tmp_path / "img" / "one.nii.gz")
    _write(tmp_path / "lab" / "one_lab.nii.gz")
    _write(tmp_path / "img" / "two.nii.gz")
    _write(tmp_path / "lab" / "two_lab.nii.gz")
    table = tmp_path / "cases.csv"
    table.write_text(
        "image,mask\nimg/one.nii.gz,lab/one_lab.nii.gz\n"
        f"{tmp_path / 'img' / 'two.nii.gz'},lab/two_lab.nii.gz\n"
    )
    cases = discover_cases(table)
    assert [c.name for c in cases] == ["one", "two"]
    assert cases[0].mask_path == (tmp_path / "lab" / "one_lab.nii.gz").resolve()


def test_csv_without_header_named_cases_and_errors(tmp_path):
    _write(tmp_path / "a.nii.gz")
    _write(tmp_path / "m.nii.gz")
    plain = tmp_path / "plain.csv"
    plain.write_text("a.nii.gz,m.nii.gz\n")
    assert read_cases_csv(plain)[0].mask_path.name == "m.nii.gz"
    named = tmp_path / "named.csv"
    named.write_text("case,image,mask\npatient7,a.nii.gz,\n")
    with pytest.raises(AnomalyError, match="no mask: patient7"):
        read_cases_csv(named)
    assert read_cases_csv(named, require_masks=False) == [
        Case("patient7", (tmp_path / "a.nii.gz").resolve(), None)
    ]
    broken = tmp_path / "broken.csv"
    broken.write_text("image,mask\nmissing.nii.gz,m.nii.gz\n")
    with pytest.raises(AnomalyError, match="1 listed files do not exist: .*missing.nii.gz"):
        read_cases_csv(broken)
    with pytest.raises(AnomalyError, match="--layout odd: unknown"):
        discover_cases(tmp_path, layout="odd")
