"""Write a voxel array with its geometry to NIfTI, NRRD or MetaImage, atomically.

The file is first written into a hidden temporary folder beside the target and then moved in
place with ``os.replace``: a failed write (full disk, bad data) never leaves half a file and
never destroys an existing one. Detached formats (.mhd, .nhdr) also produce a data file
(.zraw / .raw.gz) beside the header; both are moved together.

Precision: NRRD and MetaImage keep spacing, origin and direction to float64; NIfTI stores them
as float32 (its header format), so they round-trip to about 1e-7 relative.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..errors import VolumeWriteError
from .dicom import itk_reason
from .geometry import Geometry
from .read import file_extension

WRITE_EXTENSIONS: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
_SITK_DTYPES = frozenset(
    np.dtype(t) for t in (
        np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.uint64, np.int64,
        np.float32, np.float64,
    )
)


def writable_extensions() -> tuple[str, ...]:
    """File extensions :func:`write_volume` can write."""
    return WRITE_EXTENSIONS


def prepare_array(data: np.ndarray, name: str = "data") -> np.ndarray:
    """Native-endian, contiguous array of a type all formats hold (bool -> uint8, f16 -> f32)."""
    arr = np.asarray(data)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    elif arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    if arr.dtype.kind in "biuf" and arr.dtype.newbyteorder("=") in _SITK_DTYPES:
        arr = arr.astype(arr.dtype.newbyteorder("="), copy=False)
    if arr.dtype not in _SITK_DTYPES:
        raise VolumeWriteError(f"{name}: cannot write voxels of type {arr.dtype}; "
                               "numbers (integers or floats) are needed")
    return np.ascontiguousarray(arr)


def write_volume(
    path: str | os.PathLike,
    data: np.ndarray,
    geometry: Geometry,
    overwrite: bool = False,
) -> Path:
    """Write ``data`` ((z, y, x) order) with ``geometry``; returns the path of the header file.

    Refuses to replace an existing file (or the data file of a detached header) unless
    ``overwrite`` is True. Raises :class:`VolumeWriteError`.
    """
    import SimpleITK as sitk

    path = Path(path)
    name = path.name
    ext = file_extension(path)
    if ext not in WRITE_EXTENSIONS:
        raise VolumeWriteError(f"{name}: cannot write this file type ({ext or 'no extension'});"
                               f" use one of {', '.join(WRITE_EXTENSIONS)}")
    arr = prepare_array(data, name)
    if arr.ndim not in (2, 3, 4):
        raise VolumeWriteError(f"{name}: {arr.ndim}-D arrays cannot be written (2-D to 4-D)")
    if arr.size == 0:
        raise VolumeWriteError(f"{name}: the array is empty (shape {arr.shape})")
    if geometry.ndim != arr.ndim:
        raise VolumeWriteError(f"{name}: the array has {arr.ndim} dimensions (shape "
                               f"{arr.shape}) but the geometry has {geometry.ndim}")
    parent = path.parent
    if not parent.is_dir():
        raise VolumeWriteError(f"{name}: the folder {parent} does not exist")
    if path.is_dir():
        raise VolumeWriteError(f"{path}: is a folder, not a file name")
    if path.exists() and not overwrite:
        raise VolumeWriteError(f"{path}: already exists; use overwrite (--overwrite) to "
                               "replace it")

    image = sitk.GetImageFromArray(arr)
    try:
        geometry.apply_to_sitk(image)
    except RuntimeError as exc:
        raise VolumeWriteError(f"{name}: invalid geometry ({itk_reason(exc)})") from None

    try:
        tmp = tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise VolumeWriteError(f"{name}: cannot write into {parent} ({exc.strerror})") from None
    try:
        try:
            sitk.WriteImage(image, os.path.join(tmp, name), True)
        except RuntimeError as exc:
            raise VolumeWriteError(f"{name}: writing failed ({itk_reason(exc)})") from None
        produced = sorted(os.listdir(tmp), key=lambda f: f == name)  # header last
        if not overwrite:
            clash = [f for f in produced if (parent / f).exists()]
            if clash:
                raise VolumeWriteError(f"{parent / clash[0]}: already exists; use overwrite "
                                       "(--overwrite) to replace it")
        for f in produced:
            os.replace(os.path.join(tmp, f), parent / f)
    except OSError as exc:
        raise VolumeWriteError(f"{name}: writing failed ({exc.strerror or exc})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path
