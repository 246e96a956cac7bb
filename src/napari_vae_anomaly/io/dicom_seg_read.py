"""Reading a DICOM SEG back as a label volume on the grid of its source series.

Why: a mask saved as DICOM SEG must reopen on its scan, voxel for voxel, to be corrected and
saved again. A SEG holds only the frames its segments occupy, so its source series (looked for
beside it) defines the grid; without the series the SEG's own frames do, with a note.
No Qt, no napari; highdicom and pydicom are imported only when used.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import VolumeReadError
from .dicom_source import source_files
from .volume import Volume

SEG_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.66.4"
_SEARCH_FILES = 5000  # files probed when looking for a SEG's source series


def is_dicom_seg(path: str | os.PathLike) -> bool:
    """True when ``path`` is a DICOM Segmentation file (never raises)."""
    try:
        import pydicom

        p = Path(path)
        if not p.is_file():
            return False
        ds = pydicom.dcmread(p, stop_before_pixels=True, specific_tags=["SOPClassUID"])
        return str(ds.get("SOPClassUID", "")) == SEG_SOP_CLASS_UID
    except Exception:  # noqa: BLE001 - a probe: anything unreadable is simply not a SEG
        return False


def read_dicom_seg(path: str | os.PathLike) -> Volume:
    """Read a DICOM SEG as a label :class:`~.volume.Volume` (value = segment number).

    The labels are placed on the source series' grid (found next to the SEG: its folder, the
    folder above, or their sub-folders), so the volume overlays the scan voxel for voxel and can
    be saved as a SEG again. Without the series, the SEG's own frames define the grid and a note
    says so. Raises VolumeReadError.
    """
    from .read import read_volume

    p = Path(path)
    name = p.name
    try:
        import highdicom as hd
    except ImportError:
        raise VolumeReadError(f"{name}: reading DICOM SEG needs highdicom: pip install "
                              "'napari-vae-anomaly[dicom]'") from None
    try:
        seg = hd.seg.segread(p)
    except Exception as exc:  # noqa: BLE001 - pydicom/highdicom raise many types
        raise VolumeReadError(f"{name}: not a readable DICOM SEG ({exc})".splitlines()[0]
                              ) from None
    _check_pixel_data(seg, name)
    series_uid = _referenced_series(seg)
    folder = _find_series_folder(p, series_uid) if series_uid else None
    if folder is not None:
        source = read_volume(folder, series=series_uid)
        files = source_files(source.geometry) or []
        uids = [_sop_instance_uid(f) for f in files]
        try:
            labels = seg.get_pixels_by_source_instance(
                uids, combine_segments=True, assert_missing_frames_are_empty=True,
                dtype=np.uint16,
            )
        except (ValueError, KeyError, RuntimeError) as exc:
            raise VolumeReadError(f"{name}: its frames do not fit the series in {folder} "
                                  f"({exc})".splitlines()[0]) from None
        labels = _smallest(labels)
        return Volume(labels, source.geometry)
    return _on_own_frames(seg, name)


def _smallest(labels: np.ndarray) -> np.ndarray:
    hi = int(labels.max()) if labels.size else 0
    return labels.astype(np.uint8 if hi < 256 else np.uint16, copy=False)


def _check_pixel_data(seg: Any, name: str) -> None:
    """Refuse a SEG whose (uncompressed) pixel data is shorter than its frames need."""
    syntax = getattr(getattr(seg, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None or syntax.is_compressed or "PixelData" not in seg:
        return
    n = int(seg.get("NumberOfFrames", 1) or 1) * int(seg.Rows) * int(seg.Columns)
    need = (n * int(seg.BitsAllocated) + 7) // 8
    have = len(seg.PixelData)
    if have < need:
        raise VolumeReadError(f"{name}: not a readable DICOM SEG (its pixel data is truncated: "
                              f"{have} of {need} bytes)")


def _referenced_series(seg: Any) -> str | None:
    refs = seg.get("ReferencedSeriesSequence") or []
    return str(refs[0].SeriesInstanceUID) if refs else None


def _sop_instance_uid(file: str) -> str:
    import pydicom

    return str(pydicom.dcmread(file, stop_before_pixels=True,
                               specific_tags=["SOPInstanceUID"]).SOPInstanceUID)


def _find_series_folder(seg_path: Path, series_uid: str) -> Path | None:
    """The folder holding series ``series_uid``: the SEG's folder, the one above (not the
    file-system root), or a sub-folder of either. Bounded: at most :data:`_SEARCH_FILES`
    files are probed, by header only."""
    from .dicom import is_dicom_file

    here = seg_path.resolve().parent
    bases = [here] if here.parent == here.parent.parent else [here, here.parent]
    candidates: list[Path] = []
    for base in bases:
        candidates.append(base)
        try:
            candidates.extend(sorted(p for p in base.iterdir() if p.is_dir()))
        except OSError:
            continue
    budget = _SEARCH_FILES
    for folder in dict.fromkeys(candidates):
        try:
            files = sorted(p for p in folder.iterdir() if p.is_file())
        except OSError:
            continue
        for f in files:
            budget -= 1
            if budget < 0:
                return None
            if f.resolve() != seg_path.resolve() and is_dicom_file(f) \
                    and _series_uid(f) == series_uid:
                return folder
    return None


def _series_uid(file: Path) -> str | None:
    import pydicom

    try:
        ds = pydicom.dcmread(file, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
        return str(ds.get("SeriesInstanceUID", "")) or None
    except Exception:  # noqa: BLE001 - a probe
        return None


def _on_own_frames(seg: Any, name: str) -> Volume:
    """Labels on the grid the SEG's frames span (when its source series is not at hand)."""
    from .geometry import Geometry

    try:
        vol = seg.get_volume(combine_segments=True, dtype=np.uint16)
    except (ValueError, RuntimeError) as exc:
        raise VolumeReadError(f"{name}: the source series was not found beside the SEG and its "
                              f"frames do not form a regular volume ({exc})".splitlines()[0]
                              ) from None
    a = np.asarray(vol.affine, dtype=float)
    arr = np.asarray(vol.array)
    if np.dot(np.cross(a[:3, 2], a[:3, 1]), a[:3, 0]) < 0 and arr.shape[0] > 1:
        # slices stored against the normal: flip them, as SimpleITK orders a series
        a[:3, 3] = a[:3, 3] + a[:3, 0] * (arr.shape[0] - 1)
        a[:3, 0] = -a[:3, 0]
        arr = arr[::-1]
    cols = [a[:3, 2], a[:3, 1], a[:3, 0]]  # ITK x (columns), y (rows), z (slices)
    spacing = tuple(float(np.linalg.norm(c)) for c in cols)
    direction = np.stack([c / s for c, s in zip(cols, spacing, strict=True)], axis=1)
    geometry = Geometry(spacing, tuple(a[:3, 3]), tuple(direction.ravel()),
                        source=str(name), extra={"format": "DICOM SEG"})
    note = (f"{name}: its source series was not found beside it; the labels cover only the "
            "slices the SEG holds (open it from the series' folder to place it on the scan)")
    return Volume(_smallest(np.ascontiguousarray(arr)), geometry, notes=[note])
