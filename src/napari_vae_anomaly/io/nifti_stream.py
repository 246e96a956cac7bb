"""Write NIfTI straight from a numpy array, without the copy SimpleITK makes of it.

Why: SimpleITK 2.5 has no image view of an array (``GetImageFromArray`` copies), so writing a
map held a second volume in memory at the moment ``predict`` is at its peak. Here the header
comes from SimpleITK itself (a one-voxel image with the same geometry and voxel type, whose
header differs from the full image's in its size fields only), so the geometry on disk is
exactly what SimpleITK writes; the voxels are streamed from the array a slab at a time (through
gzip for ``.nii.gz``). :func:`same_voxels` checks a written file against the array the same
way, a slab at a time.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

from .geometry import Geometry
from .nifti_raw import open_voxels, parse_header

_VOX_OFFSET = 352  # header + the 4 bytes that say "no extensions"
_DIMS = 40  # byte offset of dim[0..7] (int16)
_SLAB_BYTES = 1 << 22
GZIP_LEVEL = 6  # zlib's default, as SimpleITK's NIfTI writer


def streamable(arr: np.ndarray) -> bool:
    """Whether :func:`write_nifti` can write ``arr`` (2-D or 3-D, C-ordered, native little
    endian, sizes a NIfTI-1 header holds); other arrays go through SimpleITK."""
    return (
        arr.ndim in (2, 3)
        and arr.flags.c_contiguous
        and arr.dtype.byteorder in "=<|"
        and np.little_endian
        and max(arr.shape) <= 32767
    )


def nifti_header(arr: np.ndarray, geometry: Geometry, scratch: Path) -> bytes | None:
    """SimpleITK's NIfTI-1 header and extension bytes for ``arr`` with ``geometry``.

    ``scratch`` is a file name SimpleITK may write (and that is removed). None when the
    header is not the plain single-file NIfTI-1 layout this module patches.
    """
    import SimpleITK as sitk

    probe = sitk.GetImageFromArray(np.zeros((1,) * arr.ndim, arr.dtype))
    geometry.apply_to_sitk(probe)
    try:
        sitk.WriteImage(probe, str(scratch), False)
        head = scratch.read_bytes()
    finally:
        scratch.unlink(missing_ok=True)
    info = parse_header(head)
    if (len(head) != _VOX_OFFSET + arr.dtype.itemsize or info is None or info.version != 1
            or info.endian != "<" or info.offset != _VOX_OFFSET
            or info.dims != (1,) * arr.ndim):
        return None
    header = bytearray(head[:_VOX_OFFSET])
    struct.pack_into(f"<{arr.ndim}h", header, _DIMS + 2, *reversed(arr.shape))  # x first
    return bytes(header)


def _slabs(arr: np.ndarray):
    """The array's bytes, in file order (x fastest), a few MiB at a time without a copy."""
    rows = max(1, _SLAB_BYTES // max(1, arr[0].nbytes))
    for start in range(0, arr.shape[0], rows):
        yield arr[start : start + rows].data.cast("B")


def write_nifti(path: Path, arr: np.ndarray, header: bytes, compress: bool) -> None:
    """Write ``header`` then the voxels of ``arr`` to ``path``, flushed to the device.

    Raises OSError (a full disk: ENOSPC) like any file write."""
    with open(path, "wb") as raw:
        if compress:
            with gzip.GzipFile(filename="", mode="wb", compresslevel=GZIP_LEVEL, fileobj=raw,
                               mtime=0) as gz:
                gz.write(header)
                for slab in _slabs(arr):
                    gz.write(slab)
        else:
            raw.write(header)
            for slab in _slabs(arr):
                raw.write(slab)
        raw.flush()
        os.fsync(raw.fileno())


def same_voxels(path: Path, arr: np.ndarray, offset: int = _VOX_OFFSET) -> bool:
    """Whether the voxel bytes of the NIfTI file ``path`` are exactly those of ``arr``
    (read a slab at a time; nothing beyond them may follow)."""
    with open_voxels(path) as f:
        f.seek(offset)
        for slab in _slabs(arr):
            if f.read(len(slab)) != slab:
                return False
        return f.read(1) == b""
