"""The raw layout of a NIfTI file: its header's fields, and its voxels read a chunk at a time.

Why: ITK's NIfTI reader replaces non-finite voxels by 0 before the caller sees them, so a
check on the array read can never find them and ``nonfinite="error"`` would accept the file;
:func:`count_nonfinite` streams the raw voxels instead (bounded memory). The header parser is
shared with the writer's verification (:mod:`.verify`) and the streaming writer
(:mod:`.nifti_stream`), so NIfTI-1/2 and both byte orders are read in one place.
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

import numpy as np

_FLOAT_TYPES = {16: "f4", 64: "f8"}  # NIfTI datatype codes: FLOAT32, FLOAT64
#: NIfTI datatype code of each numpy type (``dtype.str`` without its byte order)
DATATYPES = {"u1": 2, "i2": 4, "i4": 8, "f4": 16, "f8": 64, "i1": 256, "u2": 512,
             "u4": 768, "i8": 1024, "u8": 1280}
HEADER_BYTES = 544  # enough for a NIfTI-2 header (540) and a NIfTI-1 one (348)
_CHUNK = 1 << 22


@dataclass(frozen=True)
class NiftiHeader:
    """The fields of a NIfTI-1 or NIfTI-2 header that say where and how the voxels lie."""

    version: int  # 1 or 2
    endian: str  # "<" or ">"
    datatype: int
    dims: tuple[int, ...]  # dim[1..dim[0]], x first
    offset: int  # vox_offset: where the voxels start
    slope: float
    inter: float

    @property
    def count(self) -> int:
        return int(np.prod([max(int(d), 1) for d in self.dims]))


def parse_header(head: bytes) -> NiftiHeader | None:
    """The header at the start of ``head`` (decompressed bytes), or None if it is none."""
    for endian in "<>":
        if len(head) < 348:
            return None
        (sizeof_hdr,) = struct.unpack_from(endian + "i", head, 0)
        if sizeof_hdr == 348:
            (datatype,) = struct.unpack_from(endian + "h", head, 70)
            dims = struct.unpack_from(endian + "8h", head, 40)
            offset, slope, inter = struct.unpack_from(endian + "3f", head, 108)
            version = 1
            break
        if sizeof_hdr == 540 and len(head) >= 540:
            (datatype,) = struct.unpack_from(endian + "h", head, 12)
            dims = struct.unpack_from(endian + "8q", head, 16)
            (offset,) = struct.unpack_from(endian + "q", head, 168)
            slope, inter = struct.unpack_from(endian + "2d", head, 176)
            version = 2
            break
    else:
        return None
    if not 1 <= dims[0] <= 7:
        return None
    return NiftiHeader(version, endian, int(datatype), tuple(int(d) for d in dims[1 : dims[0] + 1]),
                       max(int(offset), 348), float(slope), float(inter))


@contextmanager
def open_voxels(path: str | Path) -> Iterator[IO[bytes]]:
    """The file's decompressed bytes (``.nii`` or gzip, told by its first two bytes)."""
    with open(path, "rb") as f:
        compressed = f.read(2) == b"\x1f\x8b"
    with (gzip.open if compressed else open)(path, "rb") as f:
        yield cast(IO[bytes], f)


def read_header(path: str | Path) -> NiftiHeader | None:
    """The header of the NIfTI file ``path``, or None if it has none."""
    with open_voxels(path) as f:
        return parse_header(f.read(HEADER_BYTES))


def count_nonfinite(path: str | Path) -> tuple[int, int]:
    """(NaN/Inf voxels, all voxels) of a float NIfTI file; (0, 0) for other types."""
    with open_voxels(path) as f:
        info = parse_header(f.read(HEADER_BYTES))
        if info is None or info.datatype not in _FLOAT_TYPES:
            return 0, 0
        dtype, count = info.endian + _FLOAT_TYPES[info.datatype], info.count
        f.seek(info.offset)
        item = np.dtype(dtype).itemsize
        bad = seen = 0
        rest = b""
        while seen < count and (chunk := f.read(_CHUNK)):
            chunk = rest + chunk
            n = min(len(chunk) // item, count - seen)
            values = np.frombuffer(chunk, dtype=dtype, count=n)
            bad += int(n - np.count_nonzero(np.isfinite(values)))
            seen += n
            rest = chunk[n * item :]
    return bad, count
