"""Write a voxel array with its geometry to NIfTI, NRRD or MetaImage, atomically.

The file is first written into a hidden temporary folder beside the target, flushed, verified
(:mod:`.verify`: SimpleITK's NIfTI writer does not raise on a full disk) and only then moved in
place with ``os.replace``: a failed write (full disk, bad data) never leaves half a file and
never destroys an existing one. Temporaries of killed runs are removed by the next write. Detached formats (.mhd, .nhdr) also produce a data file
(.zraw / .raw.gz) beside the header; both are moved together. NIfTI files of 2-D and 3-D
arrays are streamed from the array with SimpleITK's own header (:mod:`.nifti_stream`): the
same file content, without a second copy of the voxels in memory.

Precision: NRRD and MetaImage keep spacing, origin and direction to float64; NIfTI stores them
as float32 (its header format), so they round-trip to about 1e-7 relative.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import VolumeWriteError
from .atomic import TEMP_SUFFIX, clean_stale_temps, fsync_path, temp_prefix
from .dicom import itk_reason
from .formats import WRITE_EXTENSIONS
from .geometry import Geometry
from .read import file_extension
from .verify import Verify, verify_written

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
    verify: Verify = "auto",
) -> Path:
    """Write ``data`` ((z, y, x) order) with ``geometry``; returns the path of the header file.

    Refuses to replace an existing file (or the data file of a detached header) unless
    ``overwrite`` is True. The file is verified (see :mod:`.verify`) before it replaces
    anything. Raises :class:`VolumeWriteError`.
    """
    staged = stage_volume(path, data, geometry, overwrite=overwrite, verify=verify)
    try:
        return staged.commit()
    finally:
        staged.discard()


@dataclass
class StagedWrite:
    """A verified volume waiting in a temporary folder beside its target.

    Why separate: a caller writing several files (one case of ``predict``) stages them all
    first and commits only when every one is verified, so a case is never left half written.
    """

    path: Path
    tmp: Path
    files: list[str]  # names inside ``tmp``, header last
    overwrite: bool

    def commit(self) -> Path:
        """Move the files into place (refusing existing ones unless ``overwrite``)."""
        parent = self.path.parent
        if not self.overwrite:
            clash = [f for f in self.files if (parent / f).exists()]
            if clash:
                raise VolumeWriteError(f"{parent / clash[0]}: already exists; use overwrite "
                                       "(--overwrite) to replace it")
        try:
            for f in self.files:
                os.replace(self.tmp / f, parent / f)
        except OSError as exc:
            raise VolumeWriteError(f"{self.path.name}: writing failed "
                                   f"({exc.strerror or exc})") from None
        fsync_path(parent)
        return self.path

    def discard(self) -> None:
        """Remove the temporary folder and whatever is still in it."""
        shutil.rmtree(self.tmp, ignore_errors=True)


def staging_folder(path: Path) -> Path:
    """A new hidden temporary folder beside ``path`` (stale ones of killed runs removed first),
    where a write is made and verified before it may replace anything."""
    name, parent = path.name, path.parent
    clean_stale_temps(parent)
    try:
        return Path(tempfile.mkdtemp(prefix=temp_prefix(name), suffix=TEMP_SUFFIX, dir=parent))
    except PermissionError:
        raise VolumeWriteError(f"{name}: permission denied: cannot write into {parent}") from None
    except OSError as exc:
        raise VolumeWriteError(f"{name}: cannot write into {parent} ({exc.strerror})") from None


def stage_volume(
    path: str | os.PathLike,
    data: np.ndarray,
    geometry: Geometry,
    overwrite: bool = False,
    verify: Verify = "auto",
) -> StagedWrite:
    """Write and verify ``data`` in a temporary folder beside ``path``; see :func:`write_volume`."""
    import SimpleITK as sitk

    from .nifti_stream import streamable

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

    stream = ext in (".nii", ".nii.gz") and streamable(arr)
    image = None
    try:
        if stream:
            geometry.apply_to_sitk(sitk.Image([1] * arr.ndim, sitk.sitkUInt8))  # validity
        else:
            image = sitk.GetImageFromArray(arr)
            geometry.apply_to_sitk(image)
    except RuntimeError as exc:
        raise VolumeWriteError(f"{name}: invalid geometry ({itk_reason(exc)})") from None

    tmp = staging_folder(path)
    staged = StagedWrite(path, tmp, [], overwrite)
    try:
        _write_file(tmp / name, arr, geometry, image, ext)
        staged.files = sorted(os.listdir(tmp), key=lambda f: f == name)  # header last
        if name not in staged.files:
            raise VolumeWriteError(f"{name}: writing failed (no file was produced)")
        for f in staged.files:
            fsync_path(tmp / f)
        verify_written(tmp / name, [tmp / f for f in staged.files], arr, verify)
    except OSError as exc:
        staged.discard()
        why = "disk full: " if exc.errno == errno.ENOSPC else ""
        raise VolumeWriteError(f"{name}: writing failed ({why}{exc.strerror or exc}); nothing "
                               "was replaced") from None
    except BaseException:
        staged.discard()
        raise
    return staged


def _write_file(target: Path, arr: np.ndarray, geometry: Geometry, image, ext: str) -> None:
    """Write one file: NIfTI streamed from ``arr`` when ``image`` is None (no copy of the
    voxels, :mod:`.nifti_stream`), otherwise ``image`` through SimpleITK."""
    import SimpleITK as sitk

    from . import nifti_stream

    try:
        if image is None:
            probe = target.with_name("header-probe.nii")
            header = nifti_stream.nifti_header(arr, geometry, probe)
            if header is not None:
                nifti_stream.write_nifti(target, arr, header, compress=ext == ".nii.gz")
                return
            image = sitk.GetImageFromArray(arr)
            geometry.apply_to_sitk(image)
        sitk.WriteImage(image, str(target), True)
    except RuntimeError as exc:
        raise VolumeWriteError(f"{target.name}: writing failed ({itk_reason(exc)})") from None
