"""Synthetic DICOM series for tests, written with pydicom (any orientation, any spacing)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

STUDY_UID = "1.2.826.0.1.3680043.10.511.1.1"
FRAME_OF_REFERENCE_UID = "1.2.826.0.1.3680043.10.511.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def oblique_direction() -> np.ndarray:
    """ITK-ordered direction (columns: x, y, z axes) rotated about z then x."""
    a, b = np.deg2rad(25.0), np.deg2rad(-15.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


def write_series(
    folder: Path,
    data: np.ndarray,
    *,
    spacing: tuple[float, float, float] = (0.7, 0.9, 3.0),
    origin: tuple[float, float, float] = (-60.5, 20.25, 35.0),
    direction: np.ndarray | None = None,
    series_uid: str = "1.2.826.0.1.3680043.10.511.1.3",
    positions: list[np.ndarray] | None = None,
    orientations: list[np.ndarray] | None = None,
) -> list[Path]:
    """Write ``data`` (z, y, x) as one MR file per slice; returns the files in slice order.

    ``spacing`` and ``origin`` are ITK-ordered (x, y, z); ``positions``/``orientations``
    override the per-slice Image Position / Orientation (to make broken series).
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    d = oblique_direction() if direction is None else np.asarray(direction, float)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for k in range(data.shape[0]):
        pos = np.asarray(origin) + d @ np.array([0.0, 0.0, k * spacing[2]])
        if positions is not None:
            pos = positions[k]
        iop = np.concatenate([d[:, 0], d[:, 1]]) if orientations is None else orientations[k]
        sop_uid = f"{series_uid}.{k + 1}"
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = MR_IMAGE_STORAGE
        ds.SOPInstanceUID = sop_uid
        ds.StudyInstanceUID = STUDY_UID
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = FRAME_OF_REFERENCE_UID
        ds.PatientName = "Phantom^Test"
        ds.PatientID = "PHANTOM-01"
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.StudyDate = "20260101"
        ds.StudyTime = "120000"
        ds.StudyID = "1"
        ds.AccessionNumber = "A1"
        ds.ReferringPhysicianName = ""
        ds.Modality = "MR"
        ds.SeriesNumber = 3
        ds.SeriesDescription = "T1 oblique"
        ds.InstanceNumber = k + 1
        ds.Manufacturer = "test"
        ds.ImagePositionPatient = [float(v) for v in pos]
        ds.ImageOrientationPatient = [float(v) for v in iop]
        ds.PixelSpacing = [spacing[1], spacing[0]]  # row spacing (y), column spacing (x)
        ds.SliceThickness = spacing[2]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = data.shape[1], data.shape[2]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.PixelData = np.ascontiguousarray(data[k], dtype="<i2").tobytes()
        path = folder / f"IM{k:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files
