"""write_volume: exact round trips (data, dtype, geometry) and safe, atomic writing."""

from __future__ import annotations

import os

import numpy as np
import pytest

from napari_vae_anomaly.errors import VolumeWriteError
from napari_vae_anomaly.io import Geometry, read_volume, writable_extensions, write_volume

FORMATS = [".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"]


def geometry_tolerance(ext: str) -> float:
    """NIfTI headers hold float32; the other formats keep float64 text."""
    return 1e-6 if ext.startswith(".nii") else 1e-12


def assert_same_geometry(a: Geometry, b: Geometry, atol: float) -> None:
    np.testing.assert_allclose(a.spacing, b.spacing, rtol=0, atol=atol)
    np.testing.assert_allclose(a.origin, b.origin, rtol=0, atol=atol * 100)
    np.testing.assert_allclose(a.direction, b.direction, rtol=0, atol=atol)


@pytest.fixture
def image(rng) -> np.ndarray:
    return rng.normal(100.0, 30.0, size=(7, 9, 11)).astype(np.float32)


@pytest.fixture
def mask(rng) -> np.ndarray:
    return rng.integers(0, 4, size=(7, 9, 11)).astype(np.uint8)


@pytest.mark.parametrize("ext", FORMATS)
def test_round_trip_float_image(tmp_path, image, oblique_geometry, ext):
    path = write_volume(tmp_path / f"scan{ext}", image, oblique_geometry)
    vol = read_volume(path)
    assert vol.data.dtype == np.float32
    np.testing.assert_array_equal(vol.data, image)
    assert_same_geometry(vol.geometry, oblique_geometry, geometry_tolerance(ext))
    assert vol.geometry.is_oblique()
    assert vol.notes == []


@pytest.mark.parametrize("ext", FORMATS)
def test_round_trip_uint8_mask(tmp_path, mask, oblique_geometry, ext):
    path = write_volume(tmp_path / f"mask{ext}", mask, oblique_geometry)
    vol = read_volume(path)
    assert vol.data.dtype == np.uint8
    np.testing.assert_array_equal(vol.data, mask)
    assert_same_geometry(vol.geometry, oblique_geometry, geometry_tolerance(ext))


@pytest.mark.parametrize(
    "dtype", [np.int8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.float64]
)
def test_integer_and_float_dtypes_kept(tmp_path, rng, dtype):
    data = rng.integers(-100 if np.dtype(dtype).kind != "u" else 0, 100, size=(3, 4, 5))
    data = data.astype(dtype)
    path = write_volume(tmp_path / "x.nrrd", data, Geometry.identity(3))
    vol = read_volume(path)
    assert vol.data.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(vol.data, data)


def test_bool_becomes_uint8_and_big_endian_is_accepted(tmp_path):
    b = np.zeros((3, 4, 5), bool)
    b[1, 2, 3] = True
    vol = read_volume(write_volume(tmp_path / "b.nii.gz", b, Geometry.identity(3)))
    assert vol.data.dtype == np.uint8
    assert vol.data.sum() == 1 and vol.data[1, 2, 3] == 1
    be = np.arange(60, dtype=">f4").reshape(3, 4, 5)
    vol = read_volume(write_volume(tmp_path / "be.mha", be, Geometry.identity(3)))
    np.testing.assert_array_equal(vol.data, be.astype(np.float32))


def test_2d_round_trip(tmp_path):
    data = np.arange(12, dtype=np.int16).reshape(3, 4)
    g = Geometry((0.5, 0.25), (3.0, -4.0), (1.0, 0.0, 0.0, 1.0))
    vol = read_volume(write_volume(tmp_path / "slice.nrrd", data, g))
    np.testing.assert_array_equal(vol.data, data)
    assert vol.geometry.spacing == (0.5, 0.25) and vol.geometry.origin == (3.0, -4.0)


def test_mhd_writes_a_data_file_beside_the_header(tmp_path, mask, oblique_geometry):
    write_volume(tmp_path / "m.mhd", mask, oblique_geometry)
    assert sorted(os.listdir(tmp_path)) == ["m.mhd", "m.zraw"]
    assert "ElementDataFile = m.zraw" in (tmp_path / "m.mhd").read_text()


def test_refuses_to_overwrite_and_keeps_old_file(tmp_path, image, mask, oblique_geometry):
    path = write_volume(tmp_path / "scan.nii.gz", image, oblique_geometry)
    before = path.read_bytes()
    with pytest.raises(VolumeWriteError, match=r"scan\.nii\.gz: already exists; use overwrite"):
        write_volume(path, mask, oblique_geometry)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["scan.nii.gz"]  # no temporary left behind
    write_volume(path, mask, oblique_geometry, overwrite=True)
    np.testing.assert_array_equal(read_volume(path).data, mask)


def test_refuses_to_overwrite_a_detached_data_file(tmp_path, mask):
    (tmp_path / "m.zraw").write_bytes(b"precious")
    with pytest.raises(VolumeWriteError, match=r"m\.zraw: already exists"):
        write_volume(tmp_path / "m.mhd", mask, Geometry.identity(3))
    assert (tmp_path / "m.zraw").read_bytes() == b"precious"
    assert sorted(os.listdir(tmp_path)) == ["m.zraw"]


def test_failed_write_leaves_old_file_and_no_temporary(tmp_path, image, monkeypatch):
    import SimpleITK as sitk

    path = write_volume(tmp_path / "scan.nrrd", image, Geometry.identity(3))
    before = path.read_bytes()

    def broken_write(img, fname, *args):
        with open(fname, "wb") as f:  # half a file, then a failure
            f.write(b"NRRD0004\n")
        raise RuntimeError("sitk::ERROR: No space left on device")

    monkeypatch.setattr(sitk, "WriteImage", broken_write)
    with pytest.raises(VolumeWriteError, match=r"scan\.nrrd: writing failed \(No space left"):
        write_volume(path, image * 2, Geometry.identity(3), overwrite=True)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["scan.nrrd"]


@pytest.mark.parametrize(
    ("name", "data", "geometry", "message"),
    [
        ("x.png", np.zeros((3, 4, 5)), Geometry.identity(3), r"x\.png: cannot write this file type"),
        ("x", np.zeros((3, 4, 5)), Geometry.identity(3), r"x: cannot write this file type \(no ext"),
        ("x.nii", np.zeros((3, 4, 5)), Geometry.identity(2), r"3 dimensions .* geometry has 2"),
        ("x.nii", np.zeros((3, 4, 5, 2, 2)), Geometry.identity(5), r"5-D arrays cannot be"),
        ("x.nii", np.zeros((0, 4, 5)), Geometry.identity(3), r"x\.nii: the array is empty"),
        ("x.nrrd", np.zeros((3, 4), complex), Geometry.identity(2), r"voxels of type complex128"),
        ("x.nrrd", np.array([["a", "b"]]), Geometry.identity(2), r"voxels of type <U1"),
    ],
)
def test_bad_requests(tmp_path, name, data, geometry, message):
    with pytest.raises(VolumeWriteError, match=message):
        write_volume(tmp_path / name, data, geometry)
    assert os.listdir(tmp_path) == []


def test_missing_folder(tmp_path):
    with pytest.raises(VolumeWriteError, match=r"the folder .*nowhere does not exist"):
        write_volume(tmp_path / "nowhere" / "x.nii", np.zeros((2, 2, 2)), Geometry.identity(3))


def test_writable_extensions():
    assert set(FORMATS) <= set(writable_extensions())
