"""DICOM out: masks as DICOM Segmentations (SEG) and maps as Parametric Maps, and SEGs read back.

Why: scans come from a PACS as DICOM series, and what goes back must be DICOM that references
that series (study, series and instance UIDs, frame of reference, per-frame positions) so the
PACS files it with the scan and viewers overlay it. The encoding is highdicom's (the optional
``dicom`` extra); this module picks the source datasets, checks that the mask lies on their grid
and that the series is a regular volume, describes the segments, and writes atomically.

Only a scan read from DICOM can be referenced: the reader keeps its files, in slice order, in
``geometry.extra["dicom_files"]`` (:data:`SOURCE_FILES_KEY`), which derived layers inherit.
No Qt, no napari; highdicom and pydicom are imported only when used.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import VolumeReadError, VolumeWriteError

SOURCE_FILES_KEY = "dicom_files"
SEG_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.66.4"
DICOM_OUT_EXTENSIONS = (".dcm",)
MANUFACTURER = "napari-vae-anomaly"
_ORIENTATION_TOL = 1e-4  # direction cosines
_SPACING_RTOL = 1e-3  # relative difference allowed between slice gaps
_POSITION_TOL_MM = 1e-2  # mask grid vs. series positions
_SEARCH_FILES = 5000  # files probed when looking for a SEG's source series


# ------------------------------------------------------------------------------- public
def source_files(geometry: Any) -> list[str] | None:
    """The DICOM files (slice order) a volume was read from, or None when not from DICOM."""
    files = getattr(geometry, "extra", {}).get(SOURCE_FILES_KEY)
    return [str(f) for f in files] if files else None


def not_from_dicom_message(name: str, what: str = "mask", as_what: str = "DICOM SEG") -> str:
    """One line telling the user why a non-DICOM scan cannot be saved as DICOM, and what can."""
    from .write import WRITE_EXTENSIONS

    return (f"{name}: the {what} cannot be saved as a {as_what} because it does not come from "
            f"a scan read from DICOM (there is no series to reference); save it as "
            f"{', '.join(WRITE_EXTENSIONS)}")


def check_dicom_source(geometry: Any, shape: tuple[int, ...], name: str) -> None:
    """Raise VolumeWriteError unless an array of ``shape`` on ``geometry`` can be saved as
    DICOM referencing its series (read from DICOM, regular series, same grid, highdicom)."""
    files = source_files(geometry)
    if not files:
        raise VolumeWriteError(not_from_dicom_message(name))
    _highdicom(name)
    _on_grid(check_series(_load_datasets(files, name), name), geometry, shape, name)


def write_dicom_seg(
    path: str | os.PathLike,
    labels: np.ndarray,
    geometry: Any,
    *,
    segment_label: str = "anomaly",
    model_name: str = "",
    parameters: dict[str, str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write integer ``labels`` (z, y, x) as a binary DICOM SEG referencing the source series.

    Each label value v >= 1 becomes segment number v (values absent from the mask give empty
    segments), so reading the SEG back gives the same label image. Raises VolumeWriteError.
    """
    path = Path(path)
    name = path.name
    arr = _check_labels(labels, name)
    datasets = _prepare(path, arr.shape, geometry, "mask", "DICOM SEG", overwrite)
    hd, codes = _highdicom(name)
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
    _save_atomic(seg, path, overwrite)
    return path


def write_dicom_parametric_map(
    path: str | os.PathLike,
    values: np.ndarray,
    geometry: Any,
    *,
    map_label: str = "anomaly score",
    model_name: str = "",
    overwrite: bool = False,
) -> Path:
    """Write a float map (z, y, x) as a DICOM Parametric Map referencing the source series.

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
    hd, codes = _highdicom(name)
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
    _save_atomic(pm, path, overwrite)
    return path


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


def read_dicom_seg(path: str | os.PathLike) -> Any:
    """Read a DICOM SEG as a label :class:`~.volume.Volume` (value = segment number).

    The labels are placed on the source series' grid (found next to the SEG: its folder, the
    folder above, or their sub-folders), so the volume overlays the scan voxel for voxel and can
    be saved as a SEG again. Without the series, the SEG's own frames define the grid and a note
    says so. Raises VolumeReadError.
    """
    from .read import read_volume
    from .volume import Volume

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


# ------------------------------------------------------------------------------- checks
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
    files = source_files(geometry)
    if not files:
        raise VolumeWriteError(not_from_dicom_message(name, what, as_what))
    datasets = check_series(_load_datasets(files, name), name)
    return _on_grid(datasets, geometry, shape, name)


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


# ------------------------------------------------------------------------------- helpers
def _highdicom(name: str) -> tuple[Any, Any]:
    try:
        import highdicom as hd
        from pydicom.sr.codedict import codes
    except ImportError:
        raise VolumeWriteError(f"{name}: saving DICOM needs highdicom: pip install "
                               "'napari-vae-anomaly[dicom]'") from None
    return hd, codes


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


def _save_atomic(ds: Any, path: Path, overwrite: bool) -> None:
    """Write into a hidden temporary folder beside ``path``, then move the file in place: a
    failed write never leaves half a file nor destroys an existing one. (A folder, not
    ``mkstemp``, so the file gets the usual permissions from the umask, not 0600.)"""
    name = path.name
    try:
        tmp_dir = tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise VolumeWriteError(f"{name}: cannot write into {path.parent} ({exc.strerror})"
                               ) from None
    tmp = os.path.join(tmp_dir, name)
    try:
        ds.save_as(tmp, enforce_file_format=True)
        if path.exists() and not overwrite:
            raise VolumeWriteError(f"{path}: already exists; use overwrite (--overwrite) to "
                                   "replace it")
        os.replace(tmp, path)
    except OSError as exc:
        raise VolumeWriteError(f"{name}: writing failed ({exc.strerror or exc})") from None
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


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


def _on_own_frames(seg: Any, name: str) -> Any:
    """Labels on the grid the SEG's frames span (when its source series is not at hand)."""
    from .geometry import Geometry
    from .volume import Volume

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
