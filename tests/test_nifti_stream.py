"""The streaming NIfTI writer: the same file content as SimpleITK's writer, without the copy."""

from __future__ import annotations

import gzip
import math
import os

import numpy as np
import pytest

from napari_vae_anomaly.io import Geometry, read_volume, write_volume
from napari_vae_anomaly.io.nifti_stream import streamable

_C, _S = math.cos(0.3), math.sin(0.3)
GEOMETRIES = {
    3: Geometry((0.9, 1.1, 3.0), (10.0, -20.0, 30.0), (_C, -_S, 0, _S, _C, 0, 0, 0, 1)),
    2: Geometry((0.5, 2.0), (1.0, 2.0), (0, 1, 1, 0)),
}


def _content(path) -> bytes:
    raw = path.read_bytes()
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


def _sitk_file(path, arr, geometry) -> None:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(arr)
    geometry.apply_to_sitk(image)
    sitk.WriteImage(image, str(path), True)


@pytest.mark.parametrize("ext", [".nii", ".nii.gz"])
@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8, np.int16, np.uint16,
                                   np.int64])
def test_same_bytes_as_simpleitk(tmp_path, ext, ndim, dtype):
    rng = np.random.default_rng(ndim)
    arr = (rng.random((7, 9, 11)[:ndim]) * 100).astype(dtype)
    ours = write_volume(tmp_path / f"ours{ext}", arr, GEOMETRIES[ndim])
    _sitk_file(tmp_path / f"ref{ext}", arr, GEOMETRIES[ndim])
    assert _content(ours) == _content(tmp_path / f"ref{ext}")  # header and voxels
    back = read_volume(ours)
    np.testing.assert_array_equal(back.data, arr)
    assert sorted(os.listdir(tmp_path)) == sorted([f"ours{ext}", f"ref{ext}"])  # no probe left


def test_no_full_size_copy_for_simpleitk(tmp_path, monkeypatch):
    """Only the one-voxel header probe becomes a SimpleITK image, never the volume."""
    import SimpleITK as sitk

    made = []
    real = sitk.GetImageFromArray
    monkeypatch.setattr(sitk, "GetImageFromArray", lambda a, *k: made.append(a.shape) or
                        real(a, *k))
    arr = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    write_volume(tmp_path / "m.nii.gz", arr, GEOMETRIES[3])
    write_volume(tmp_path / "mask.nii.gz", arr > 3, GEOMETRIES[3])  # read back whole too
    assert made == [(1, 1, 1), (1, 1, 1)]
    write_volume(tmp_path / "m.nrrd", arr, GEOMETRIES[3])  # other formats: SimpleITK writes
    assert made[-1] == (4, 5, 6)


def test_other_layouts_still_written(tmp_path):
    """Big-endian and strided arrays are made native and contiguous first and come back the
    same; 4-D arrays are left to SimpleITK."""
    arr = np.arange(3 * 4 * 5, dtype=">f4").reshape(3, 4, 5)
    np.testing.assert_array_equal(read_volume(write_volume(tmp_path / "be.nii", arr,
                                                           GEOMETRIES[3])).data, arr)
    strided = np.arange(6 * 8 * 10, dtype=np.int16).reshape(6, 8, 10)[::2, :, ::-1]
    np.testing.assert_array_equal(read_volume(write_volume(tmp_path / "s.nii.gz", strided,
                                                           GEOMETRIES[3])).data, strided)
    four = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    assert not streamable(four) and streamable(four[0])


def test_large_slabs_cross_the_chunk_size(tmp_path, monkeypatch):
    """Slabs of a few rows at a time (forced small here) give the same file."""
    from napari_vae_anomaly.io import nifti_stream

    arr = np.random.default_rng(0).random((9, 13, 17)).astype(np.float32)
    whole = write_volume(tmp_path / "a.nii.gz", arr, GEOMETRIES[3])
    monkeypatch.setattr(nifti_stream, "_SLAB_BYTES", 3 * 13 * 17 * 4 - 1)  # 2 slices a slab
    cut = write_volume(tmp_path / "b.nii.gz", arr, GEOMETRIES[3])
    assert _content(whole) == _content(cut)


def test_header_fields_read_back(tmp_path):
    """The shared header parser reads what was written: version, byte order, type code, size
    (x first), where the voxels start and no scaling; anything else is not a header."""
    from napari_vae_anomaly.io.nifti_raw import parse_header, read_header

    arr = np.zeros((3, 4, 5), np.int16)
    path = write_volume(tmp_path / "h.nii.gz", arr, GEOMETRIES[3])
    info = read_header(path)
    assert info is not None
    assert (info.version, info.endian, info.datatype, info.dims) == (1, "<", 4, (5, 4, 3))
    assert info.offset == 352 and info.slope in (0.0, 1.0) and info.inter == 0.0
    assert info.count == 60
    big = bytearray(gzip.decompress(path.read_bytes()))
    big[0:4] = (348).to_bytes(4, "big")  # the same header claimed big-endian: not parsed as one
    assert parse_header(bytes(big)) is None
    assert parse_header(b"\0" * 400) is None and parse_header(b"short") is None
