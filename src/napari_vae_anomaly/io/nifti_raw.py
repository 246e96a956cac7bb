"""Count NaN/Inf voxels in a NIfTI file's raw data.

Why: ITK's NIfTI reader replaces non-finite voxels by 0 before the caller sees them, so a
check on the array read can never find them and ``nonfinite="error"`` would accept the file.
The raw voxels are streamed (bounded memory) for floating-point NIfTI files only.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

_FLOAT_TYPES = {16: "f4", 64: "f8"}  # NIfTI datatype codes: FLOAT32, FLOAT64
_CHUNK = 1 << 22


def _header(head: bytes) -> tuple[str, int, int] | None:
    """(numpy dtype, voxel offset, voxel count) of a float NIfTI-1/2 header, else None."""
    if len(head) < 348:
        return None
    for endian in "<>":
        (sizeof_hdr,) = struct.unpack(endian + "i", head[:4])
        if sizeof_hdr == 348:
            (datatype,) = struct.unpack(endian + "h", head[70:72])
            dims = struct.unpack(endian + "8h", head[40:56])
            offset = int(struct.unpack(endian + "f", head[108:112])[0])
            break
        if sizeof_hdr == 540 and len(head) >= 540:
            (datatype,) = struct.unpack(endian + "h", head[12:14])
            dims = struct.unpack(endian + "8q", head[16:80])
            (offset,) = struct.unpack(endian + "q", head[168:176])
            break
    else:
        return None
    if datatype not in _FLOAT_TYPES or not 1 <= dims[0] <= 7:
        return None
    count = int(np.prod([max(int(d), 1) for d in dims[1 : dims[0] + 1]]))
    return endian + _FLOAT_TYPES[datatype], max(offset, 348), count


def count_nonfinite(path: str | Path) -> tuple[int, int]:
    """(NaN/Inf voxels, all voxels) of a float NIfTI file; (0, 0) for other types."""
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    opener = gzip.open if gz else open
    with opener(path, "rb") as f:
        head = f.read(544)
        info = _header(head)
        if info is None:
            return 0, 0
        dtype, offset, count = info
        f.seek(offset)
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
