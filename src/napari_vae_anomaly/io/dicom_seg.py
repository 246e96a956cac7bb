"""DICOM out: masks as DICOM Segmentations (SEG) and maps as Parametric Maps.

Why: scans come from a PACS as DICOM series, and what goes back must be DICOM that references
that series (study, series and instance UIDs, frame of reference, per-frame positions) so the
PACS files it with the scan and viewers overlay it. The encoding is highdicom's (the optional
``dicom`` extra); this module describes the segments and writes atomically, after
:mod:`.dicom_source` has checked the series and the grid. Reading back: :mod:`.dicom_seg_read`.
No Qt, no napari; highdicom and pydicom are imported only when used.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import VolumeWriteError
from .atomic import fsync_path
from .dicom_seg_read import SEG_SOP_CLASS_UID, is_dicom_seg, read_dicom_seg
from .dicom_source import (
    SOURCE_FILES_KEY,
    check_dicom_source,
    not_from_dicom_message,
    require_highdicom,
    source_datasets,
    source_files,
)
from .write import StagedWrite, staging_folder

__all__ = [
    "DICOM_OUT_EXTENSIONS", "SEG_SOP_CLASS_UID", "SOURCE_FILES_KEY", "check_dicom_source",
    "is_dicom_seg", "not_from_dicom_message", "read_dicom_seg", "source_files",
    "stage_dicom_parametric_map", "stage_dicom_seg", "write_dicom_parametric_map",
    "write_dicom_seg",
]

DICOM_OUT_EXTENSIONS = (".dcm",)
MANUFACTURER = "napari-vae-anomaly"


# ------------------------------------------------------------------------------- public
def write_dicom_seg(path: str | os.PathLike, labels: np.ndarray, geometry: Any,
                    **options: Any) -> Path:
    """Write ``labels`` as a DICOM SEG (see :func:`stage_dicom_seg` for the options)."""
    return _commit(stage_dicom_seg(path, labels, geometry, **options))


def write_dicom_parametric_map(path: str | os.PathLike, values: np.ndarray, geometry: Any,
                               **options: Any) -> Path:
    """Write ``values`` as a Parametric Map (see :func:`stage_dicom_parametric_map`)."""
    return _commit(stage_dicom_parametric_map(path, values, geometry, **options))


def stage_dicom_seg(
    path: str | os.PathLike,
    labels: np.ndarray,
    geometry: Any,
    *,
    segment_label: str = "anomaly",
    model_name: str = "",
    parameters: dict[str, str] | None = None,
    overwrite: bool = False,
) -> StagedWrite:
    """Build integer ``labels`` (z, y, x) as a binary DICOM SEG referencing the source series,
    written and verified beside ``path``; ``.commit()`` moves it in (``predict`` commits a
    case's files together).

    Each label value v >= 1 becomes segment number v (values absent from the mask give empty
    segments), so reading the SEG back gives the same label image. Raises VolumeWriteError.
    """
    path = Path(path)
    name = path.name
    arr = _check_labels(labels, name)
    datasets = _prepare(path, arr.shape, geometry, "mask", "DICOM SEG", overwrite)
    hd, codes = require_highdicom(name)
    from pydicom.uid import generate_uid

    version = _version()
    n_segments = max(int(arr.max()), 1)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=MANUFACTURER, family=codes.cid7162.ArtificialIntelligence, version=version,
        parameters=_parameters(model_name, parameters),
    )
    descriptions = []
    for number in range(1, n_segments + 1):
        label = segment_label if n_segments == 1 else f"{segment_label} {number}"
        d = hd.seg.SegmentDescription(
            segment_number=number, segment_label=label[:64],
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Lesion,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        d.SegmentDescription = _description(label, model_name)[:1024]
        descriptions.append(d)
    pixels = arr.astype(np.uint8 if n_segments < 256 else np.uint16, copy=False)
    try:
        seg = hd.seg.Segmentation(
            source_images=datasets, pixel_array=pixels,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions, series_instance_uid=generate_uid(),
            series_number=_series_number(datasets), sop_instance_uid=generate_uid(),
            instance_number=1, manufacturer=MANUFACTURER,
            manufacturer_model_name=(model_name or "VAE anomaly detection")[:64],
            software_versions=version, device_serial_number="0",
            content_label="ANOMALY", content_description=_description(segment_label,
                                                                       model_name)[:64],
            omit_empty_frames=bool(arr.any()),
        )
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise VolumeWriteError(f"{name}: the DICOM SEG could not be built ({exc})") from None
    seg.SeriesDescription = _description(segment_label, model_name)[:64]
    return _stage(seg, path, overwrite)


def stage_dicom_parametric_map(
    path: str | os.PathLike,
    values: np.ndarray,
    geometry: Any,
    *,
    map_label: str = "anomaly score",
    model_name: str = "",
    overwrite: bool = False,
) -> StagedWrite:
    """Build a float map (z, y, x) as a DICOM Parametric Map referencing the source series,
    written and verified beside ``path`` (commit with ``.commit()``).

    Non-finite values are stored as 0 (the format holds plain floats). Raises VolumeWriteError.
    """
    path = Path(path)
    name = path.name
    arr = np.asarray(values)
    if arr.dtype.kind not in "biuf":
        raise VolumeWriteError(f"{name}: a map must hold numbers, got {arr.dtype}")
    arr = np.nan_to_num(arr.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if arr.ndim != 3:
        raise VolumeWriteError(f"{name}: a 3-D map is needed, got shape {arr.shape}")
    datasets = _prepare(path, arr.shape, geometry, "map", "DICOM Parametric Map", overwrite)
    hd, codes = require_highdicom(name)
    from pydicom.uid import generate_uid

    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    mapping = hd.pm.RealWorldValueMapping(
        lut_label=map_label[:16], lut_explanation=_description(map_label, model_name)[:64],
        unit=codes.UCUM.NoUnits, value_range=(lo, hi), slope=1, intercept=0,
    )
    width = max(hi - lo, 1e-6)
    try:
        pm = hd.pm.ParametricMap(
            source_images=datasets, pixel_array=np.ascontiguousarray(arr),
            series_instance_uid=generate_uid(), series_number=_series_number(datasets),
            sop_instance_uid=generate_uid(), instance_number=1, manufacturer=MANUFACTURER,
            manufacturer_model_name=(model_name or "VAE anomaly detection")[:64],
            software_versions=_version(), device_serial_number="0",
            contains_recognizable_visual_features=False, real_world_value_mappings=[mapping],
            voi_lut_transformations=[
                hd.VOILUTTransformation(window_center=lo + width / 2, window_width=width)],
            content_label="ANOMALYMAP", content_description=_description(map_label,
                                                                           model_name)[:64],
        )
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise VolumeWriteError(f"{name}: the Parametric Map could not be built ({exc})") from None
    pm.SeriesDescription = _description(map_label, model_name)[:64]
    return _stage(pm, path, overwrite)


# ------------------------------------------------------------------------------- helpers
def _check_labels(labels: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    if arr.dtype.kind not in "iu":
        raise VolumeWriteError(f"{name}: labels must be integers, got {arr.dtype}")
    if arr.ndim != 3:
        raise VolumeWriteError(f"{name}: a 3-D mask is needed for a DICOM SEG, got shape "
                               f"{arr.shape}")
    if arr.size and int(arr.min()) < 0:
        raise VolumeWriteError(f"{name}: negative label values cannot be stored in a DICOM SEG")
    if arr.size and int(arr.max()) > 65535:
        raise VolumeWriteError(f"{name}: at most 65535 segments fit in a DICOM SEG")
    return arr


def _prepare(path: Path, shape: tuple[int, ...], geometry: Any, what: str, as_what: str,
             overwrite: bool) -> list[Any]:
    """Check the target and the source; return the source datasets in the array's slice order."""
    name = path.name
    if not name.lower().endswith(DICOM_OUT_EXTENSIONS):
        raise VolumeWriteError(f"{name}: a {as_what} is saved as a .dcm file")
    if not path.parent.is_dir():
        raise VolumeWriteError(f"{name}: the folder {path.parent} does not exist")
    if path.is_dir():
        raise VolumeWriteError(f"{path}: is a folder, not a file name")
    if path.exists() and not overwrite:
        raise VolumeWriteError(f"{path}: already exists; use overwrite (--overwrite) to "
                               "replace it")
    return source_datasets(geometry, shape, name, what, as_what)


def _version() -> str:
    from .. import __version__

    return str(__version__)


def _description(label: str, model_name: str) -> str:
    return f"{label} (VAE anomaly, model {model_name})" if model_name else f"{label} (VAE anomaly)"


def _parameters(model_name: str, parameters: dict[str, str] | None) -> dict[str, str] | None:
    out = {"model": model_name} if model_name else {}
    out.update({str(k): str(v) for k, v in (parameters or {}).items()})
    return out or None


def _series_number(datasets: list[Any]) -> int:
    """The source series number + 1000, so the derived series sorts after its source."""
    try:
        return int(datasets[0].get("SeriesNumber", 0) or 0) % 1000 + 1000
    except (TypeError, ValueError):
        return 1000


def _stage(ds: Any, path: Path, overwrite: bool) -> StagedWrite:
    """Save ``ds`` into a hidden temporary folder beside ``path``, flush it and read it back
    (the pixel data must be the bytes we meant to write) before anything may replace the
    target: a full disk or a cut-off file never reaches ``path``. Commit with ``.commit()``."""
    name = path.name
    tmp = staging_folder(path)
    staged = StagedWrite(path, tmp, [name], overwrite)
    try:
        ds.save_as(tmp / name, enforce_file_format=True)
        fsync_path(tmp / name)
        _verify(tmp / name, ds, name)
    except OSError as exc:
        staged.discard()
        raise VolumeWriteError(f"{name}: writing failed ({exc.strerror or exc})") from None
    except BaseException:
        staged.discard()
        raise
    return staged


def _verify(file: Path, ds: Any, name: str) -> None:
    import pydicom

    try:
        back = pydicom.dcmread(file)
        same = (back.SOPInstanceUID == ds.SOPInstanceUID
                and bytes(back.get(_pixel_keyword(ds), b"")) == bytes(ds.get(_pixel_keyword(ds))))
    except OSError:
        raise
    except Exception:  # noqa: BLE001 - a file pydicom cannot parse is a failed write
        same = False
    if not same:
        raise VolumeWriteError(f"{name}: writing failed (the file read back differs from what "
                               "was written; is the disk full?)")


def _pixel_keyword(ds: Any) -> str:
    for key in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        if key in ds:
            return key
    return "PixelData"


def _commit(staged: StagedWrite) -> Path:
    try:
        return staged.commit()
    finally:
        staged.discard()
