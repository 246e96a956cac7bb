"""Check a freshly written volume file before it replaces anything.

Why: SimpleITK's NIfTI writer does not raise when the disk fills up (it prints ``NWAD: wrote
only 0 of N bytes`` and returns), so a successful call proves nothing. Every file is checked
for its size, its header is read back and compared with the array, and compressed NIfTI is
checked for completeness (gzip trailer against the header, or a full decompression). Masks and
labels (integer data) are read back whole and compared voxel for voxel.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import AnomalyError, VolumeWriteError
from .dicom import itk_reason

Verify = Literal["auto", "header", "full"]
_NIFTI_HEADER = 348


def verify_written(
    header: Path, produced: list[Path], arr: np.ndarray, mode: Verify = "auto",
    shown: str | None = None,
) -> None:
    """Raise :class:`VolumeWriteError` unless ``header`` (and its data file) hold ``arr``."""
    import SimpleITK as sitk

    from .read import _check_nifti_complete, file_extension

    name = shown or header.name
    full = mode == "full" or (mode == "auto" and arr.dtype.kind in "biu")
    ext = file_extension(header)
    for f in produced:
        if os.path.getsize(f) == 0:
            raise _failed(name, f"{f.name} is empty")
    if ext == ".nii" and os.path.getsize(header) < _NIFTI_HEADER + arr.nbytes:
        raise _failed(name, f"{os.path.getsize(header)} bytes written, at least "
                            f"{_NIFTI_HEADER + arr.nbytes} needed")
    if ext.startswith(".nii"):
        try:
            _check_nifti_complete(header)
        except AnomalyError as exc:
            raise _failed(name, str(exc).split(": ", 1)[-1]) from None
    elif ext in (".nrrd", ".nhdr"):
        _check_nrrd_data(header, produced, arr.nbytes, name)
    elif ext in (".mha", ".mhd"):
        _check_meta_data(header, produced, arr.nbytes, name)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(header))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise _failed(name, f"header unreadable: {itk_reason(exc)}") from None
    size = tuple(int(s) for s in reader.GetSize())
    if size != tuple(reversed(arr.shape)) or reader.GetNumberOfComponents() != 1:
        raise _failed(name, f"header says size {size}, {arr.shape[::-1]} was written")
    if not full:
        return
    if ext.startswith(".nii") and (offset := _plain_nifti_offset(header, arr)) is not None:
        from .nifti_stream import same_voxels

        if not same_voxels(header, arr, offset):  # a slab at a time: no copy of the volume
            raise _failed(name, "the voxels read back differ from those written")
        return
    try:
        back = sitk.GetArrayFromImage(reader.Execute())
    except RuntimeError as exc:
        raise _failed(name, f"voxels unreadable: {itk_reason(exc)}") from None
    if back.shape != arr.shape or not np.array_equal(back, arr, equal_nan=arr.dtype.kind == "f"):
        raise _failed(name, "the voxels read back differ from those written")


def _plain_nifti_offset(header: Path, arr: np.ndarray) -> int | None:
    """Where the voxels start in a NIfTI file that stores ``arr``'s type as it is (native
    little-endian, no scaling), so its bytes can be compared with the array's; else None."""
    from .nifti_raw import DATATYPES, read_header

    code = DATATYPES.get(arr.dtype.str[1:])
    if code is None or arr.dtype.byteorder == ">" or not arr.flags.c_contiguous:
        return None
    info = read_header(header)
    if (info is None or info.endian != "<" or info.datatype != code
            or info.slope not in (0.0, 1.0) or info.inter != 0.0):
        return None
    return info.offset


def _text_header(header: Path, limit: int = 65536) -> tuple[str, int]:
    """The text header of a NRRD/MetaImage file and its length in bytes."""
    with open(header, "rb") as f:
        raw = f.read(limit)
    ends = [i + len(m) for m in (b"\n\n", b"ElementDataFile = LOCAL\n") if (i := raw.find(m)) >= 0]
    end = min(ends) if ends else len(raw)
    return raw[:end].decode("latin-1"), end


def _data_part(header: Path, produced: list[Path], name: str) -> tuple[Path, int]:
    """The file holding the voxels and where they start (detached: another file, at 0).

    A detached header must be complete (its last line ends) and name that file."""
    others = [f for f in produced if f != header]
    if not others:
        return header, _text_header(header)[1]
    text = header.read_bytes()
    if not text.endswith(b"\n") or not any(
        line.rstrip().endswith(f.name.encode()) for f in others for line in text.splitlines()
        if line.startswith((b"ElementDataFile", b"data file"))
    ):
        raise _failed(name, "the header is cut off")
    return others[0], 0


def _check_nrrd_data(header: Path, produced: list[Path], nbytes: int, name: str) -> None:
    """gzip data: its trailer must record ``nbytes`` (a cut-off stream ends elsewhere)."""
    text, _ = _text_header(header)
    if "encoding:" not in text:
        raise _failed(name, "the header is cut off")
    data, start = _data_part(header, produced, name)
    size = os.path.getsize(data) - start
    if "encoding: gzip" in text:
        if size < 18:
            raise _failed(name, f"{size} bytes of compressed data")
        with open(data, "rb") as f:
            f.seek(-4, os.SEEK_END)
            isize = int.from_bytes(f.read(4), "little")
        if isize != nbytes % 2**32:
            raise _failed(name, "the compressed data is cut off")
    elif "encoding: raw" in text and size < nbytes:
        raise _failed(name, f"{size} of {nbytes} bytes of voxel data")


def _check_meta_data(header: Path, produced: list[Path], nbytes: int, name: str) -> None:
    """MetaImage records the compressed size in its header: the data must have exactly it."""
    text, _ = _text_header(header)
    if "ElementDataFile" not in text:
        raise _failed(name, "the header is cut off")
    data, start = _data_part(header, produced, name)
    size = os.path.getsize(data) - start
    want = nbytes
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "CompressedDataSize":
            try:
                want = int(value.strip())
            except ValueError:
                raise _failed(name, "the header is cut off") from None
    if size < want or ("CompressedData = True" in text and size != want):
        raise _failed(name, f"{size} of {want} bytes of voxel data")


def _failed(name: str, why: str) -> VolumeWriteError:
    return VolumeWriteError(f"{name}: writing failed, the written file is incomplete ({why}); "
                            "is the disk full? Nothing was replaced")
