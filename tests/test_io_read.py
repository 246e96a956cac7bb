"""read_volume: formats, DICOM series, channels, and every kind of bad input."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from napari_vae_anomaly.errors import VolumeReadError
from napari_vae_anomaly.io import (
    Geometry,
    case_name,
    read_channels,
    read_volume,
    supported_extensions,
    write_volume,
)
from napari_vae_anomaly.io.dicom import find_dicom_series, is_dicom_file


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Bytes and mtime of every file below ``folder``: reading must change none of them."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*")) if p.is_file()
    }


def write_dicom_series(folder: Path, data: np.ndarray, uid: str, description: str,
                       prefix: str, spacing=(0.8, 0.7, 2.5), origin=(-10.0, 5.0, 30.0)) -> None:
    """Write ``data`` (z, y, x) as one DICOM file per slice with the tags a series needs."""
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(data.shape[0]):
        sl = sitk.GetImageFromArray(data[k : k + 1])
        sl.SetSpacing(spacing)
        pos = (origin[0], origin[1], origin[2] + k * spacing[2])
        sl.SetOrigin(pos)
        tags = {
            "0008|0060": "MR", "0020|000d": "1.2.826.0.1.1", "0020|000e": uid,
            "0008|103e": description, "0020|0032": "\\".join(str(v) for v in pos),
            "0020|0037": "1\\0\\0\\0\\1\\0", "0020|0013": str(k + 1),
            "0028|0030": f"{spacing[1]}\\{spacing[0]}", "0018|0050": str(spacing[2]),
            "0008|0018": f"{uid}.{k + 1}",
        }
        for key, value in tags.items():
            sl.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"{prefix}{k:03d}.dcm"))
        writer.Execute(sl)


@pytest.fixture
def scan(rng) -> np.ndarray:
    return rng.normal(50.0, 10.0, size=(6, 8, 10)).astype(np.float32)


# ------------------------------------------------------------------ formats and geometry
def test_reads_geometry_in_zyx_order(tmp_path, scan, oblique_geometry):
    path = write_volume(tmp_path / "sub-01_T1w.nii.gz", scan, oblique_geometry)
    vol = read_volume(path)
    assert vol.shape == (6, 8, 10)  # (z, y, x)
    assert vol.geometry.scale == pytest.approx((3.0, 1.1, 0.9), abs=1e-6)
    assert vol.geometry.translate == pytest.approx((40.0, 12.25, -91.5), abs=1e-4)
    assert vol.geometry.pixel_type == "32-bit float"
    assert vol.geometry.source == str(path.resolve())
    assert vol.geometry.extra["format"] == "NIfTI"
    assert vol.channel is None and vol.channels == []


def test_2d_png(tmp_path):
    data = (np.arange(35).reshape(5, 7) * 7).astype(np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(data), str(tmp_path / "slice.png"))
    vol = read_volume(tmp_path / "slice.png")
    np.testing.assert_array_equal(vol.data, data)
    assert vol.geometry.ndim == 2


def test_nhdr_detached_header(tmp_path, scan):
    write_volume(tmp_path / "a.nhdr", scan, Geometry.identity(3, (0.5, 0.5, 2.0)))
    vol = read_volume(tmp_path / "a.nhdr")
    np.testing.assert_array_equal(vol.data, scan)
    assert vol.geometry.spacing == (0.5, 0.5, 2.0)


def test_case_name_and_extensions(tmp_path):
    assert case_name("/x/sub-01_T1w.nii.gz") == "sub-01_T1w"
    assert case_name("brain.seg.nrrd") == "brain.seg"
    assert case_name("scan.MHA") == "scan"
    assert case_name(tmp_path) == tmp_path.name
    for ext in (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm", ".png", ".tif"):
        assert ext in supported_extensions()


# ------------------------------------------------------------------ 4-D and pixel types
@pytest.fixture
def four_d(tmp_path) -> Path:
    chans = [sitk.GetImageFromArray(np.full((4, 5, 6), 10.0 * (c + 1), np.float32))
             for c in range(3)]
    img = sitk.JoinSeries(chans)
    img.SetSpacing((0.5, 0.6, 0.7, 1.0))
    img.SetOrigin((1.0, 2.0, 3.0, 0.0))
    path = tmp_path / "multi.nii.gz"
    sitk.WriteImage(img, str(path))
    return path


def test_4d_channel_choice(four_d):
    vol = read_volume(four_d, channel=2)
    assert vol.shape == (4, 5, 6)
    assert np.all(vol.data == 30.0)
    assert vol.channel == 2
    assert vol.channels == ["channel 0", "channel 1", "channel 2"]
    assert vol.geometry.ndim == 3
    assert vol.geometry.origin == (1.0, 2.0, 3.0)
    assert read_volume(four_d).channel == 0
    all_channels = read_channels(four_d)
    assert [v.channel for v in all_channels] == [0, 1, 2]
    assert [float(v.data[0, 0, 0]) for v in all_channels] == [10.0, 20.0, 30.0]
    with pytest.raises(VolumeReadError, match=r"multi\.nii\.gz: channel 3 does not exist .*3 channels"):
        read_volume(four_d, channel=3)


def test_3d_has_only_channel_0(tmp_path, scan):
    path = write_volume(tmp_path / "a.mha", scan, Geometry.identity(3))
    assert read_volume(path, channel=0).channel is None
    with pytest.raises(VolumeReadError, match=r"a\.mha: channel 1 does not exist"):
        read_volume(path, channel=1)


def test_rgb_refused(tmp_path):
    rgb = sitk.GetImageFromArray(np.zeros((4, 5, 3), np.uint8), isVector=True)
    sitk.WriteImage(rgb, str(tmp_path / "photo.png"))
    with pytest.raises(VolumeReadError, match=r"^photo\.png: colour \(RGB\) image; convert"):
        read_volume(tmp_path / "photo.png")


def test_vector_and_complex_refused(tmp_path):
    vec = sitk.GetImageFromArray(np.zeros((4, 5, 6, 2), np.float32), isVector=True)
    sitk.WriteImage(vec, str(tmp_path / "field.nrrd"))
    with pytest.raises(VolumeReadError, match=r"field\.nrrd: voxels of type 'vector of 32-bit "
                                              r"float' \(2 components\) are not supported"):
        read_volume(tmp_path / "field.nrrd")
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5, 6), np.complex64)),
                    str(tmp_path / "k.nrrd"))
    with pytest.raises(VolumeReadError, match=r"k\.nrrd: complex-valued voxels"):
        read_volume(tmp_path / "k.nrrd")


# ------------------------------------------------------------------ DICOM
def test_dicom_series_folder_picks_largest_and_lists_others(tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    big = (np.arange(6 * 8 * 9).reshape(6, 8, 9) % 300).astype(np.int16)
    write_dicom_series(folder, big, "1.2.826.0.1.1.100", "T1 axial", "t1_")
    write_dicom_series(folder, big[:3, :5, :5], "1.2.826.0.1.1.200", "localizer", "loc_")
    (folder / "README.txt").write_text("not a DICOM file")
    before = snapshot(folder)

    vol = read_volume(folder)
    np.testing.assert_array_equal(vol.data, big)
    assert vol.geometry.spacing == pytest.approx((0.8, 0.7, 2.5))
    assert vol.geometry.origin == pytest.approx((-10.0, 5.0, 30.0))
    extra = dict(vol.geometry.extra)
    files = extra.pop("dicom_files")  # the source files, in slice order, for DICOM SEG output
    assert extra == {"format": "DICOM series", "series_uid": "1.2.826.0.1.1.100"}
    assert files == [str((folder / f"t1_{k:03d}.dcm").resolve()) for k in range(6)]
    assert len(vol.notes) == 1
    note = vol.notes[0]
    assert note.startswith("export holds 2 DICOM series; read 'T1 axial' (MR, 6 slices")
    assert "left out 'localizer' (MR, 3 slices, UID 1.2.826.0.1.1.200)" in note

    other = read_volume(folder, series="1.2.826.0.1.1.200")
    assert other.shape == (3, 5, 5)
    with pytest.raises(VolumeReadError, match=r"export: no DICOM series with UID 9\.9"):
        read_volume(folder, series="9.9")
    assert [s.n_files for s in find_dicom_series(folder)] == [6, 3]
    assert snapshot(folder) == before


def test_dicom_series_in_a_subfolder_and_single_file(tmp_path):
    sub = tmp_path / "patient" / "study1"
    sub.mkdir(parents=True)
    data = np.arange(4 * 6 * 7, dtype=np.int16).reshape(4, 6, 7)
    write_dicom_series(sub, data, "1.2.3.7", "T2", "s")
    assert read_volume(tmp_path / "patient").shape == (4, 6, 7)
    one = read_volume(sub / "s002.dcm")
    assert one.shape == (1, 6, 7)
    np.testing.assert_array_equal(one.data[0], data[2])
    assert one.geometry.origin[2] == pytest.approx(35.0)
    assert one.geometry.extra["dicom_files"] == [str((sub / "s002.dcm").resolve())]
    assert is_dicom_file(sub / "s002.dcm")
    os.rename(sub / "s002.dcm", sub / "s002")  # DICOM files often have no extension
    assert read_volume(sub / "s002").shape == (1, 6, 7)


def test_folder_without_dicom(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text("hello")
    with pytest.raises(VolumeReadError, match=r"^notes: no DICOM series found in this folder$"):
        read_volume(folder)
    with pytest.raises(VolumeReadError, match=r"empty: no DICOM series found"):
        (tmp_path / "empty").mkdir()
        read_volume(tmp_path / "empty")


def test_mixed_slice_sizes_in_one_series(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    write_dicom_series(folder, np.zeros((3, 6, 7), np.int16), "1.2.3.9", "T1", "a")
    write_dicom_series(folder, np.zeros((2, 4, 4), np.int16), "1.2.3.9", "T1", "b",
                       origin=(-10.0, 5.0, 60.0))
    with pytest.raises(VolumeReadError, match=r"^mixed: DICOM series 1\.2\.3\.9 could not be "
                                              r"read as one volume"):
        read_volume(folder)


# ------------------------------------------------------------------ bad files
def _valid_bytes(tmp_path: Path, ext: str, scan: np.ndarray) -> bytes:
    """The bytes of a valid file of this format (written in a sub-folder)."""
    (tmp_path / "src").mkdir(exist_ok=True)
    return write_volume(tmp_path / "src" / f"ok{ext}", scan, Geometry.identity(3)).read_bytes()


@pytest.mark.parametrize(
    ("ext", "message"),
    [
        (".nii", r"bad\.nii: the file is truncated \(\d+ of \d+ bytes present\)"),
        (".nii.gz", r"bad\.nii\.gz: the compressed data is truncated or damaged"),
        (".nrrd", r"bad\.nrrd: the voxel data is truncated or damaged \(expected \d+ bytes"),
        (".mha", r"bad\.mha: the voxel data is truncated or damaged"),
    ],
)
def test_truncated_files(tmp_path, scan, ext, message):
    data = _valid_bytes(tmp_path, ext, scan)
    path = tmp_path / f"bad{ext}"
    path.write_bytes(data[: len(data) * 2 // 3])
    before = snapshot(tmp_path)
    with pytest.raises(VolumeReadError, match="^" + message):
        read_volume(path)
    assert snapshot(tmp_path) == before


def test_uncompressed_nifti_with_gz_name_is_still_checked(tmp_path, scan):
    data = _valid_bytes(tmp_path, ".nii.gz", scan)
    raw = gzip.decompress(data)
    (tmp_path / "short.nii.gz").write_bytes(gzip.compress(raw[: len(raw) - 40]))
    with pytest.raises(VolumeReadError, match=r"short\.nii\.gz: the file is truncated .* after "
                                              r"decompression"):
        read_volume(tmp_path / "short.nii.gz")


def test_plain_nifti_named_nii_gz_is_read(tmp_path, scan):
    (tmp_path / "plain.nii.gz").write_bytes(_valid_bytes(tmp_path, ".nii", scan))
    np.testing.assert_array_equal(read_volume(tmp_path / "plain.nii.gz").data, scan)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.nrrd", b"", r"^empty\.nrrd: the file is empty \(0 bytes\)$"),
        ("notes.nii", b"hello world\n" * 40, r"^notes\.nii: not a valid NIfTI file"),
        ("junk.nrrd", b"\x00\x01garbage" * 50, r"^junk\.nrrd: not a valid NRRD file"),
        ("junk.mha", b"ObjectType = Image\nnonsense\n", r"^junk\.mha: not a valid MetaImage file"),
        ("junk.png", b"\x89PNG\r\n\x1a\nbroken", r"^junk\.png: not a valid PNG file"),
        ("fake.dcm", b"\x00" * 300, r"^fake\.dcm: not a valid DICOM file"),
        ("table.csv", b"a,b\n1,2\n", r"^table\.csv: unsupported file type \(\.csv\); readable:"),
        ("noext", b"hello", r"^noext: unsupported file type \(no extension\)"),
    ],
)
def test_corrupt_empty_and_wrong_extension(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    before = snapshot(tmp_path)
    with pytest.raises(VolumeReadError, match=message) as info:
        read_volume(path)
    assert "\n" not in str(info.value)
    assert snapshot(tmp_path) == before


def test_missing_path(tmp_path):
    with pytest.raises(VolumeReadError, match=r"nope\.nii\.gz: no such file or folder"):
        read_volume(tmp_path / "nope.nii.gz")


def test_zero_size_and_single_voxel(tmp_path):
    (tmp_path / "z.mhd").write_text(
        "ObjectType = Image\nNDims = 3\nDimSize = 0 4 4\nElementType = MET_FLOAT\n"
        "ElementDataFile = z.raw\n"
    )
    (tmp_path / "z.raw").write_bytes(b"")
    with pytest.raises(VolumeReadError, match=r"^z\.mhd: the image is empty \(size 0 x 4 x 4\)$"):
        read_volume(tmp_path / "z.mhd")
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((1, 1, 1), np.float32)),
                    str(tmp_path / "one.nrrd"))
    with pytest.raises(VolumeReadError, match=r"^one\.nrrd: the image holds a single voxel"):
        read_volume(tmp_path / "one.nrrd")


def test_mhd_with_missing_data_file(tmp_path, scan):
    write_volume(tmp_path / "m.mhd", scan, Geometry.identity(3))
    os.remove(tmp_path / "m.zraw")
    with pytest.raises(VolumeReadError, match=r"^m\.mhd: .*data file is missing"):
        read_volume(tmp_path / "m.mhd")


def test_nan_and_inf_are_zeroed_with_a_note(tmp_path, scan):
    scan = scan.copy()
    scan[0, 0, 0] = np.nan
    scan[1, 2, 3] = np.inf
    scan[2, 2, 2] = -np.inf
    path = write_volume(tmp_path / "holes.nrrd", scan, Geometry.identity(3))
    before = snapshot(tmp_path)
    vol = read_volume(path)
    assert np.isfinite(vol.data).all()
    assert vol.data[0, 0, 0] == 0 and vol.data[1, 2, 3] == 0 and vol.data[2, 2, 2] == 0
    assert vol.data[3, 3, 3] == scan[3, 3, 3]
    assert vol.notes == ["holes.nrrd: 3 NaN/infinite voxels were set to 0"]
    with pytest.raises(VolumeReadError, match=r"^holes\.nrrd: 3 voxels are NaN or infinite$"):
        read_volume(path, nonfinite="error")
    assert snapshot(tmp_path) == before


def test_all_nan_refused(tmp_path):
    path = write_volume(tmp_path / "void.mha", np.full((3, 4, 5), np.nan, np.float32),
                        Geometry.identity(3))
    with pytest.raises(VolumeReadError, match=r"^void\.mha: every voxel is NaN or infinite$"):
        read_volume(path)


# --------------------------------------------------------------------------- orientation
@pytest.mark.parametrize(("direction", "labels", "mirrored"), [
    ((1, 0, 0, 0, 1, 0, 0, 0, 1), ("I→S", "A→P", "R→L"), False),  # LPS
    ((-1, 0, 0, 0, -1, 0, 0, 0, 1), ("I→S", "P→A", "L→R"), True),  # RAS
    ((1, 0, 0, 0, 0, -1, 0, 1, 0), ("P→A", "I→S", "R→L"), False),  # coronal slices
    ((0, 0, -1, 1, 0, 0, 0, -1, 0), ("L→R", "S→I", "A→P"), False),  # sagittal slices
])
def test_anatomical_axis_labels_follow_the_direction_matrix(direction, labels, mirrored):
    from napari_vae_anomaly.io.geometry import anatomical_axis_labels, orientation_note

    g = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), direction)
    assert anatomical_axis_labels(g) == labels
    note = orientation_note(g)
    assert (note is not None and "left-right flipped" in note) == mirrored


def test_axis_labels_of_a_2d_image_and_an_oblique_scan(oblique_geometry):
    from napari_vae_anomaly.io.geometry import anatomical_axis_labels, orientation_note

    assert anatomical_axis_labels(Geometry.identity(2)) == ("A→P", "R→L")
    assert orientation_note(Geometry.identity(2)) is None
    labels = anatomical_axis_labels(oblique_geometry)
    assert len(labels) == 3 and all(label.startswith("~") for label in labels)
    assert "oblique scan shown without its rotation" in orientation_note(oblique_geometry)


def test_grid_description_lists_every_figure_in_one_axis_order():
    g = Geometry((0.9, 1.1, 3.0), (-91.5, 12.25, 40.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert g.describe_grid((10, 20, 30)) == [
        "axes (z, y, x): I→S, A→P, R→L (LPS)",
        "size: 10 x 20 x 30 voxels, 30.0 x 22.0 x 27.0 mm",
        "spacing: 3 x 1.1 x 0.9 mm",
        "origin: (40.0, 12.2, -91.5) mm",
    ]
