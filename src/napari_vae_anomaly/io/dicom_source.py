"""The DICOM series behind a volume: its files, and whether a derived object can reference it.

Why: a DICOM SEG or Parametric Map must reference the exact series a mask was computed on, frame
by frame. The reader keeps a series' files, in slice order, in ``geometry.extra["dicom_files"]``
(:data:`SOURCE_FILES_KEY`), which every derived layer inherits with the geometry. Before
anything is written, the series must be one regular volume (parallel, equally spaced slices of
one size) and the array must lie on its grid; otherwise the user gets the reason.
No Qt, no napari; pydicom and highdicom are imported only when used.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import VolumeWriteError

SOURCE_FILES_KEY = "dicom_files"
_ORIENTATION_TOL = 1e-4  # direction cosines
_SPACING_RTOL = 1e-3  # relative difference allowed between slice gaps
_POSITION_TOL_MM = 1e-2  # array grid vs. series positions


def source_files(geometry: Any) -> list[str] | None:
    """The DICOM files (slice order) a volume was read from, or None when not from DICOM."""
    files = getattr(geometry, "extra", {}).get(SOURCE_FILES_KEY)
    return [str(f) for f in files] if files else None


def not_from_dicom_message(name: str, what: str = "mask", as_what: str = "DICOM SEG") -> str:
    """One line telling the user why a non-DICOM scan cannot be saved as DICOM, and what can."""
    from .formats import WRITE_EXTENSIONS

    return (f"{name}: the {what} cannot be saved as a {as_what} because it does not come from "
            f"a scan read from DICOM (there is no series to reference); save it as "
            f"{', '.join(WRITE_EXTENSIONS)}")


def check_dicom_source(geometry: Any, shape: tuple[int, ...], name: str) -> None:
    """Raise VolumeWriteError unless an array of ``shape`` on ``geometry`` can be saved as
    DICOM referencing its series (read from DICOM, regular series, same grid, highdicom)."""
    source_datasets(geometry, shape, name)


def source_datasets(geometry: Any, shape: tuple[int, ...], name: str, what: str = "mask",
                    as_what: str = "DICOM SEG") -> list[Any]:
    """The source series' datasets (no pixels) in the array's slice order, after the checks of
    :func:`check_dicom_source`. Raises VolumeWriteError."""
    files = source_files(geometry)
    if not files:
        raise VolumeWriteError(not_from_dicom_message(name, what, as_what))
    require_highdicom(name)  # pydicom comes with it
    return _on_grid(check_series(_load_datasets(files, name), name), geometry, shape, name)


def _load_datasets(files: Sequence[str], name: str) -> list[Any]:
    import pydicom

    out = []
    for f in files:
        try:
            out.append(pydicom.dcmread(f, stop_before_pixels=True))
        except FileNotFoundError:
            raise VolumeWriteError(f"{name}: the source DICOM file {f} no longer exists; "
                                   "reopen the series") from None
        except Exception as exc:  # noqa: BLE001 - pydicom raises many types
            raise VolumeWriteError(f"{name}: the source DICOM file {Path(f).name} cannot be "
                                   f"read ({exc})".splitlines()[0]) from None
    return out


def check_series(datasets: Sequence[Any], name: str = "series") -> list[Any]:
    """The datasets sorted along the slice normal, refusing series that are not one regular
    volume: mixed sizes or frames of reference, non-parallel or unequally spaced slices."""
    if not datasets:
        raise VolumeWriteError(f"{name}: the source series holds no slices")
    first = datasets[0]
    for ds in datasets:
        for key in ("ImageOrientationPatient", "ImagePositionPatient", "Rows", "Columns"):
            if key not in ds:
                raise VolumeWriteError(f"{name}: the source slice {ds.get('SOPInstanceUID')} "
                                       f"has no {key}")
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise VolumeWriteError(f"{name}: multi-frame source images are not supported")
        if (ds.Rows, ds.Columns) != (first.Rows, first.Columns):
            raise VolumeWriteError(f"{name}: the source slices differ in size "
                                   f"({first.Rows}x{first.Columns} and {ds.Rows}x{ds.Columns})")
        if ds.get("FrameOfReferenceUID") != first.get("FrameOfReferenceUID"):
            raise VolumeWriteError(f"{name}: the source slices have different frames of "
                                   "reference")
    iops = np.array([[float(v) for v in ds.ImageOrientationPatient] for ds in datasets])
    if np.abs(iops - iops[0]).max() > _ORIENTATION_TOL:
        raise VolumeWriteError(f"{name}: the source slices are not parallel (their orientations "
                               "differ), so they do not form one volume a SEG can reference")
    normal = np.cross(iops[0, :3], iops[0, 3:])
    pos = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in datasets])
    order = np.argsort(pos @ normal, kind="stable")
    pos = pos[order]
    if len(pos) > 1:
        steps = np.diff(pos, axis=0)
        gaps = np.linalg.norm(steps, axis=1)
        if gaps.min() <= 1e-6:
            raise VolumeWriteError(f"{name}: two source slices lie at the same position")
        ref = np.median(gaps)
        if np.abs(gaps - ref).max() > _SPACING_RTOL * ref + 1e-4:
            raise VolumeWriteError(
                f"{name}: the source slices are not equally spaced (gaps from "
                f"{gaps.min():.4g} to {gaps.max():.4g} mm; a slice may be missing)")
        if np.abs(steps - steps[0]).max() > _SPACING_RTOL * ref + 1e-4:
            raise VolumeWriteError(f"{name}: the source slices do not lie on one line (the "
                                   "series is sheared or tilted), so they do not form a "
                                   "regular volume")
    return [datasets[i] for i in order]


def _on_grid(datasets: list[Any], geometry: Any, shape: tuple[int, ...], name: str) -> list[Any]:
    """``datasets`` in the order of the array's slices, checking the array lies on their grid."""
    rows, cols = int(datasets[0].Rows), int(datasets[0].Columns)
    want = (len(datasets), rows, cols)
    if tuple(shape) != want:
        raise VolumeWriteError(f"{name}: the array (shape {tuple(shape)}) does not match the "
                               f"DICOM series ({want[0]} slices of {rows} x {cols})")
    d = geometry.direction_matrix
    iop = np.array([float(v) for v in datasets[0].ImageOrientationPatient])
    if (np.abs(iop[:3] - d[:, 0]).max() > 1e-3 or np.abs(iop[3:] - d[:, 1]).max() > 1e-3):
        raise VolumeWriteError(f"{name}: the array's orientation does not match the DICOM "
                               "series it was read from")
    origin = np.asarray(geometry.origin)
    if len(datasets) > 1 and np.dot(
            np.array([float(v) for v in datasets[-1].ImagePositionPatient]) - origin,
            d[:, 2]) < 0:
        datasets = datasets[::-1]
    tol = max(_POSITION_TOL_MM, 0.01 * min(geometry.spacing))
    for k, ds in enumerate(datasets):
        expected = origin + d[:, 2] * geometry.spacing[2] * k
        actual = np.array([float(v) for v in ds.ImagePositionPatient])
        if np.linalg.norm(actual - expected) > tol:
            raise VolumeWriteError(f"{name}: slice {k} of the array is not at the position of "
                                   "the DICOM slice it should cover (the grid differs from the "
                                   "series)")
    return datasets


def require_highdicom(name: str) -> tuple[Any, Any]:
    """highdicom and pydicom's code dictionary, or a one-line error naming the extra."""
    try:
        import highdicom as hd
        from pydicom.sr.codedict import codes
    except ImportError:
        raise VolumeWriteError(f"{name}: saving DICOM needs highdicom: pip install "
                               "'napari-vae-anomaly[dicom]'") from None
    return hd, codes
