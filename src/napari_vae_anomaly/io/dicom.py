"""DICOM: recognise files, list the series of a folder, read one series as a volume.

A scanner export folder often holds several series (localizer, T1, T2, ...). Reading "the
folder" therefore means choosing one: the largest, unless the caller names a series UID, and
telling the user which others were left out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import VolumeReadError

DICOM_EXTENSIONS = (".dcm", ".ima", ".dicom")
_MAX_FOLDERS = 500  # sub-folders searched when the top level holds no series


@dataclass(frozen=True)
class DicomSeries:
    """One series of a folder: its UID, its files (sorted by slice position) and a label."""

    uid: str
    files: tuple[str, ...]
    description: str = ""
    modality: str = ""

    @property
    def n_files(self) -> int:
        return len(self.files)

    def label(self) -> str:
        """Short human description, e.g. "'T1 axial' (MR, 24 slices, UID 1.2.3)"."""
        parts = [p for p in (self.modality, f"{self.n_files} slices") if p]
        name = f"'{self.description}' " if self.description else ""
        return f"{name}({', '.join(parts)}, UID {self.uid})"


def is_dicom_file(path: str | os.PathLike) -> bool:
    """True when the file carries the DICOM Part 10 preamble ('DICM' at byte 128)."""
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _series_in(folder: str) -> list[DicomSeries]:
    import SimpleITK as sitk

    out = []
    for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder) or ():
        files = tuple(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, uid))
        if files:
            desc, modality = _describe(files[0])
            out.append(DicomSeries(uid, files, desc, modality))
    return out


def _describe(file: str) -> tuple[str, str]:
    """Series description and modality from one file's header (empty when absent)."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(file)
    reader.LoadPrivateTagsOff()
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return "", ""

    def tag(key: str) -> str:
        return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""

    return tag("0008|103e"), tag("0008|0060")


def find_dicom_series(folder: str | os.PathLike) -> list[DicomSeries]:
    """All series in ``folder`` (or, when it holds none, in its sub-folders), largest first."""
    folder = str(folder)
    found = _series_in(folder)
    if not found:
        for n, (root, dirs, _files) in enumerate(os.walk(folder)):
            dirs.sort()
            if n == 0:
                continue
            if n > _MAX_FOLDERS:
                break
            found.extend(_series_in(root))
    return sorted(found, key=lambda s: (-s.n_files, s.uid))


def read_dicom_series(
    folder: str | os.PathLike, series_uid: str | None = None, strict: bool = False
) -> tuple[Any, DicomSeries, list[str]]:
    """Read one series of ``folder`` as a SimpleITK image.

    Returns the image, the series read and notes for the user (the series chosen and those
    left out, uneven slice positions). ``strict`` refuses uneven slice positions.
    """
    import SimpleITK as sitk

    folder = Path(folder)
    name = folder.name or str(folder)
    series = find_dicom_series(folder)
    if not series:
        raise VolumeReadError(f"{name}: no DICOM series found in this folder")
    if series_uid is None:
        chosen = series[0]
    else:
        matches = [s for s in series if s.uid == series_uid]
        if not matches:
            uids = ", ".join(s.uid for s in series)
            raise VolumeReadError(f"{name}: no DICOM series with UID {series_uid} (found {uids})")
        chosen = matches[0]
    notes = []
    others = [s for s in series if s is not chosen]
    if others:
        notes.append(
            f"{name} holds {len(series)} DICOM series; read {chosen.label()}, "
            f"left out {'; '.join(s.label() for s in others)}"
        )
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(chosen.files))
    reader.MetaDataDictionaryArrayUpdateOn()
    reader.LoadPrivateTagsOff()
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise VolumeReadError(
            f"{name}: DICOM series {chosen.uid} could not be read as one volume "
            f"(slices differ in size or type, or a file is damaged): {itk_reason(exc)}"
        ) from None
    problem = _slice_problem(reader, chosen.n_files)
    if problem:
        message = f"{name}: DICOM series {chosen.label()}: {problem}"
        if strict:
            raise VolumeReadError(message + " (refused in strict mode)")
        notes.append(message)
    return image, chosen, notes


def _slice_problem(reader: Any, n: int) -> str | None:
    """Uneven slice positions of a series just read (see :mod:`.dicom_slices`)."""
    from .dicom_slices import ORIENTATION, POSITION, slice_problem

    def tag(i: int, key: str) -> str | None:
        try:
            return reader.GetMetaData(i, key) if reader.HasMetaDataKey(i, key) else None
        except RuntimeError:
            return None

    return slice_problem([tag(i, POSITION) for i in range(n)], tag(0, ORIENTATION))


def itk_reason(exc: BaseException, limit: int = 160) -> str:
    """The informative last line of a (multi-line) ITK/SimpleITK error message."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    line = lines[-1]
    for marker in ("sitk::ERROR:", "itk::ERROR:", "ITK ERROR:"):
        if marker in line:
            line = line.split(marker, 1)[1].strip()
    if line.startswith("[") and "] " in line:  # "[nrrd] _nrrdFoo_read: expected ..."
        line = line.split("] ", 1)[1]
        if ": " in line:
            line = line.split(": ", 1)[1]
    return line[:limit]
