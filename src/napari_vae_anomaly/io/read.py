"""Read medical volumes (NIfTI, NRRD, MetaImage, DICOM, 2-D images) with their geometry.

Every failure becomes a :class:`VolumeReadError` with one line naming the file, because the
same message is shown by the CLI and as a napari notification. Reading never writes anything.

Non-finite voxels (NaN/Inf) are replaced by 0 by default and reported in ``Volume.notes``:
scanners and converters do emit a few, and refusing the whole scan for them helps nobody. Pass
``nonfinite="error"`` to refuse such files instead.
"""

from __future__ import annotations

import errno
import gzip
import os
import struct
import zlib
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import VolumeReadError
from .dicom import DICOM_EXTENSIONS, is_dicom_file, itk_reason, read_dicom_series
from .dicom_source import SOURCE_FILES_KEY
from .geometry import Geometry
from .volume import Volume

FORMATS: dict[str, str] = {
    ".nii.gz": "NIfTI",
    ".nii": "NIfTI",
    ".nrrd": "NRRD",
    ".nhdr": "NRRD",
    ".mha": "MetaImage",
    ".mhd": "MetaImage",
    **{ext: "DICOM" for ext in DICOM_EXTENSIONS},
    ".png": "PNG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}
_DETACHED = (".nhdr", ".mhd")  # headers whose voxels live in another file

NonFinite = Literal["zero", "error"]


def supported_extensions() -> tuple[str, ...]:
    """File extensions :func:`read_volume` accepts (DICOM folders are accepted too)."""
    return tuple(FORMATS)


def file_extension(path: str | os.PathLike) -> str:
    """Lower-case extension including a compression suffix: 'scan.nii.gz' -> '.nii.gz'."""
    name = Path(path).name.lower()
    suffixes = Path(name).suffixes
    if len(suffixes) >= 2 and suffixes[-1] == ".gz":
        return "".join(suffixes[-2:])
    return suffixes[-1] if suffixes else ""


def case_name(path: str | os.PathLike) -> str:
    """File name without its extension ('sub-01_T1w.nii.gz' -> 'sub-01_T1w'); folders as named."""
    p = Path(path)
    if p.is_dir():
        return p.name or str(p)
    ext = file_extension(p)
    return p.name[: len(p.name) - len(ext)] if ext else p.name


def read_volume(
    path: str | os.PathLike,
    channel: int | None = None,
    *,
    series: str | None = None,
    nonfinite: NonFinite = "zero",
    strict: bool = False,
) -> Volume:
    """Read one volume in (z, y, x) order; for 4-D files the chosen ``channel`` (default 0).

    ``series`` picks a DICOM series by UID when ``path`` is a folder (default: the largest).
    ``strict`` refuses DICOM series with uneven slice positions (else they are a note).
    """
    return _read(path, channel=0 if channel is None else channel, series=series,
                 nonfinite=nonfinite, strict=strict)[0]


def read_channels(
    path: str | os.PathLike, *, series: str | None = None, nonfinite: NonFinite = "zero",
    strict: bool = False,
) -> list[Volume]:
    """Read every channel of a file (one volume for 2-D/3-D files), decoding it only once."""
    return _read(path, channel=None, series=series, nonfinite=nonfinite, strict=strict)


# ---------------------------------------------------------------------------- internals
def _read(
    path: str | os.PathLike, channel: int | None, series: str | None, nonfinite: NonFinite,
    strict: bool = False,
) -> list[Volume]:
    name = Path(path).name or str(path)
    try:
        return _read_checked(path, channel, series, nonfinite, strict)
    except PermissionError:
        raise VolumeReadError(f"{name}: permission denied (cannot read it)") from None
    except OSError as exc:  # vanished files, I/O errors
        raise VolumeReadError(f"{name}: cannot be read ({exc.strerror or exc})") from None


def _check_access(p: Path) -> None:
    """Say "permission denied" rather than "does not exist" or "damaged"."""
    try:
        exists = p.exists()
    except PermissionError:
        exists = False
    if not exists:
        parent = p.parent
        if parent.is_dir() and not os.access(parent, os.X_OK):
            raise PermissionError(errno.EACCES, "Permission denied")
        raise VolumeReadError(f"{p}: no such file or folder")
    need = os.R_OK | (os.X_OK if p.is_dir() else 0)
    if not os.access(p, need):
        raise PermissionError(errno.EACCES, "Permission denied")


def _read_checked(
    path: str | os.PathLike, channel: int | None, series: str | None, nonfinite: NonFinite,
    strict: bool = False,
) -> list[Volume]:
    import SimpleITK as sitk

    p = Path(path)
    name = p.name or str(p)
    _check_access(p)
    notes: list[str] = []
    extra: dict[str, Any] = {}
    if p.is_dir():
        image, chosen, notes = read_dicom_series(p, series, strict=strict)
        extra = {"format": "DICOM series", "series_uid": chosen.uid,
                 SOURCE_FILES_KEY: [str(Path(f).resolve()) for f in chosen.files]}
    else:
        fmt = _format_of(p)
        extra = {"format": fmt}
        image = _read_file(p, fmt)
        if fmt == "DICOM":  # kept so a mask can be saved as a DICOM SEG referencing it
            extra[SOURCE_FILES_KEY] = [str(p.resolve())]
        if fmt == "NIfTI":  # ITK turns NaN/Inf into 0 before we see them: count the raw ones
            notes += _nifti_nonfinite_note(p, name, nonfinite)
    _check_pixels(image.GetPixelID(), image.GetNumberOfComponentsPerPixel(), name)
    _check_size(image.GetSize(), name)
    arr = sitk.GetArrayFromImage(image)
    try:
        geometry = Geometry.from_sitk(image, source=str(p.resolve()))
        geometry = Geometry(geometry.spacing, geometry.origin, geometry.direction,
                            geometry.pixel_type, geometry.source, extra)
    except ValueError as exc:
        raise VolumeReadError(f"{name}: invalid geometry in the header ({exc})") from None
    del image

    if arr.ndim == 4 and arr.shape[0] == 1:  # a 4-D file holding a single channel
        arr, geometry = arr[0], geometry.with_ndim(3)
    if arr.ndim == 4:
        n = arr.shape[0]
        labels = [f"channel {i}" for i in range(n)]
        wanted = range(n) if channel is None else [channel]
        if channel is not None and not 0 <= channel < n:
            raise VolumeReadError(f"{name}: channel {channel} does not exist (the file has "
                                  f"{n} channels, 0 to {n - 1})")
        g3 = geometry.with_ndim(3)
        out = []
        for c in wanted:
            data, vol_notes = _finite(np.ascontiguousarray(arr[c]), name, nonfinite, notes)
            out.append(Volume(data, g3, channel=c, channels=list(labels), notes=vol_notes))
        return out
    if channel not in (None, 0):
        raise VolumeReadError(f"{name}: channel {channel} does not exist (the file has one)")
    data, vol_notes = _finite(arr, name, nonfinite, notes)
    return [Volume(data, geometry, notes=vol_notes)]


def _format_of(p: Path) -> str:
    """Format name for a file, refusing empty files and extensions we do not read."""
    name = p.name
    size = p.stat().st_size
    if size == 0:
        raise VolumeReadError(f"{name}: the file is empty (0 bytes)")
    ext = file_extension(p)
    if ext in FORMATS:
        return FORMATS[ext]
    if is_dicom_file(p):
        return "DICOM"
    shown = ext or "no extension"
    raise VolumeReadError(
        f"{name}: unsupported file type ({shown}); readable: "
        f"{', '.join(supported_extensions())} and DICOM folders"
    )


def _read_file(p: Path, fmt: str) -> Any:
    """Read a file with SimpleITK, checking the header before decoding the voxels."""
    import SimpleITK as sitk

    name = p.name
    if fmt == "NIfTI":
        _check_nifti_complete(p)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(p))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise VolumeReadError(
            f"{name}: not a valid {fmt} file (unreadable header: {_reason(exc, p)})"
        ) from None
    _check_pixels(reader.GetPixelID(), reader.GetNumberOfComponents(), name)
    _check_size(reader.GetSize(), name)
    try:
        return reader.Execute()
    except RuntimeError as exc:
        raise VolumeReadError(
            f"{name}: the voxel data is truncated or damaged ({_reason(exc, p)})"
        ) from None


def _reason(exc: BaseException, p: Path) -> str:
    reason = itk_reason(exc)
    if "Unable to determine ImageIO reader" in reason:
        return "no reader recognises its content"
    if "No such file or directory" in reason and p.suffix.lower() not in _DETACHED:
        return "the reader gave up"  # ITK's errno text is stale and misleading here
    if "No such file or directory" in reason:
        return "its data file is missing or unreadable"
    return reason


_SCALAR_TYPES: frozenset[int] | None = None


def _scalar_types() -> frozenset[int]:
    global _SCALAR_TYPES
    if _SCALAR_TYPES is None:
        import SimpleITK as sitk

        _SCALAR_TYPES = frozenset(
            getattr(sitk, n) for n in (
                "sitkUInt8", "sitkInt8", "sitkUInt16", "sitkInt16", "sitkUInt32", "sitkInt32",
                "sitkUInt64", "sitkInt64", "sitkFloat32", "sitkFloat64",
            )
        )
    return _SCALAR_TYPES


def _check_pixels(pixel_id: int, components: int, name: str) -> None:
    import SimpleITK as sitk

    if pixel_id in _scalar_types() and components == 1:
        return
    kind = sitk.GetPixelIDValueAsString(pixel_id)
    if "complex" in kind:
        raise VolumeReadError(f"{name}: complex-valued voxels ({kind}) are not supported; "
                              "save the magnitude image instead")
    if components in (3, 4) and "8-bit" in kind:
        raise VolumeReadError(f"{name}: colour (RGB) image; convert it to a grayscale "
                              "scan first")
    raise VolumeReadError(f"{name}: voxels of type '{kind}' ({components} components) are not "
                          "supported; a single numeric value per voxel is needed")


def _check_size(size: tuple[int, ...], name: str) -> None:
    dims = len(size)
    if dims not in (2, 3, 4):
        raise VolumeReadError(f"{name}: {dims}-D images are not supported (2-D to 4-D only)")
    shown = " x ".join(str(s) for s in size)
    if any(s == 0 for s in size):
        raise VolumeReadError(f"{name}: the image is empty (size {shown})")
    if int(np.prod(size[:3])) == 1:  # per channel for 4-D files
        raise VolumeReadError(f"{name}: the image holds a single voxel (size {shown})")


def _finite(
    arr: np.ndarray, name: str, nonfinite: NonFinite, notes: list[str]
) -> tuple[np.ndarray, list[str]]:
    """Replace NaN/Inf voxels by 0 (with a note) or refuse them; returns (data, notes)."""
    notes = list(notes)
    if not np.issubdtype(arr.dtype, np.floating):
        return arr, notes
    bad = ~np.isfinite(arr)
    n_bad = int(bad.sum())
    if n_bad == 0:
        return arr, notes
    if n_bad == arr.size:
        raise VolumeReadError(f"{name}: every voxel is NaN or infinite")
    if nonfinite == "error":
        raise VolumeReadError(f"{name}: {n_bad} voxels are NaN or infinite")
    arr = arr.copy()
    arr[bad] = 0
    notes.append(f"{name}: {n_bad} NaN/infinite voxels were set to 0")
    return arr, notes


def _nifti_nonfinite_note(p: Path, name: str, nonfinite: NonFinite) -> list[str]:
    from .nifti_raw import count_nonfinite

    try:
        n_bad, n_all = count_nonfinite(p)
    except (OSError, EOFError, zlib.error, ValueError):
        return []  # the voxels were read by ITK; a raw scan that fails is not a new problem
    if n_bad == 0:
        return []
    if n_bad == n_all:
        raise VolumeReadError(f"{name}: every voxel is NaN or infinite")
    if nonfinite == "error":
        raise VolumeReadError(f"{name}: {n_bad} voxels are NaN or infinite")
    return [f"{name}: {n_bad} NaN/infinite voxels were set to 0"]


# ---------------------------------------------------------------------------- NIfTI guard
def _check_nifti_complete(p: Path) -> None:
    """Refuse truncated NIfTI files, which ITK would read silently with missing voxels."""
    name = p.name
    try:
        with open(p, "rb") as f:
            gz = f.read(2) == b"\x1f\x8b"  # by content: ITK reads plain files named .nii.gz
        if gz:
            with gzip.open(p, "rb") as f:
                head = f.read(544)
            need = _nifti_bytes_needed(head)
            if need is None or _gzip_isize(p) == need % 2**32:
                return  # the gzip trailer agrees with the header: complete (fast path)
            head, total = _gunzip_head_and_size(p, 544)
        else:
            with open(p, "rb") as f:
                head = f.read(544)
            need = _nifti_bytes_needed(head)
            total = p.stat().st_size
    except (OSError, EOFError, zlib.error) as exc:
        raise VolumeReadError(f"{name}: the compressed data is truncated or damaged ({exc})"
                              ) from None
    if need is None:
        return  # not a recognisable NIfTI header: let ITK produce the message
    if total < need:
        raise VolumeReadError(f"{name}: the file is truncated ({total} of {need} bytes "
                              f"{'after decompression ' if gz else ''}present)")


def _gzip_isize(p: Path) -> int:
    """Uncompressed size modulo 2**32 recorded in the gzip trailer (last member)."""
    with open(p, "rb") as f:
        f.seek(-4, os.SEEK_END)
        return struct.unpack("<I", f.read(4))[0]


def _gunzip_head_and_size(p: Path, n_head: int) -> tuple[bytes, int]:
    """First ``n_head`` decompressed bytes and the full decompressed size (streamed)."""
    head = b""
    total = 0
    with gzip.open(p, "rb") as f:
        while chunk := f.read(1 << 22):
            if len(head) < n_head:
                head += chunk[: n_head - len(head)]
            total += len(chunk)
    return head, total


def _nifti_bytes_needed(head: bytes) -> int | None:
    """vox_offset + voxel bytes from a NIfTI-1/2 header, or None when it is not one."""
    if len(head) < 348:
        return None
    for endian in "<>":
        (sizeof_hdr,) = struct.unpack(endian + "i", head[:4])
        if sizeof_hdr == 348:
            dims = struct.unpack(endian + "8h", head[40:56])
            (bitpix,) = struct.unpack(endian + "h", head[72:74])
            (offset,) = struct.unpack(endian + "f", head[108:112])
            break
        if sizeof_hdr == 540 and len(head) >= 540:
            (bitpix,) = struct.unpack(endian + "h", head[14:16])
            dims = struct.unpack(endian + "8q", head[16:80])
            (offset,) = struct.unpack(endian + "q", head[168:176])
            break
    else:
        return None
    ndim = dims[0]
    if not 1 <= ndim <= 7 or bitpix <= 0 or not np.isfinite(offset) or offset < 0:
        return None
    nvox = 1
    for d in dims[1 : ndim + 1]:
        nvox *= max(int(d), 0)
    return int(offset) + nvox * bitpix // 8
