"""Finding the cases (image + ground-truth mask) of a labelled data set on disk.

Layouts understood:

- **BraTS**: one folder per case, ``<case>/<case>_{t1,t1ce,t2,flair}.nii.gz`` with
  ``<case>/<case>_seg.nii.gz``, or the same files flat in one folder. The modality is chosen
  by the caller (``modality="flair"``); any label > 0 counts as anomalous downstream.
- **generic**: volumes in one folder, each mask beside its image as ``<case>_seg.<ext>``
  (any volume extension).
- **CSV**: a table with ``image`` and ``mask`` columns (optional ``case``); relative paths are
  taken from the CSV's folder. A header-less two-column table is read as image, mask.

Only paths are collected here; reading happens later, one case at a time.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import AnomalyError
from ..io.read import case_name  # one naming of cases for the whole package

#: volume file endings, multi-part ones first so ".nii.gz" wins over ".gz"
VOLUME_SUFFIXES: tuple[str, ...] = (
    ".nii.gz",
    ".nii",
    ".nrrd",
    ".nhdr",
    ".mha",
    ".mhd",
    ".tiff",
    ".tif",
    ".png",
)
BRATS_MODALITIES: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")
MASK_TAG = "_seg"
LAYOUTS: tuple[str, ...] = ("auto", "brats", "generic", "csv")
_MAX_LISTED = 10


def _volume_suffix(path: Path) -> str | None:
    low = path.name.lower()
    return next((s for s in VOLUME_SUFFIXES if low.endswith(s)), None)


@dataclass(frozen=True)
class Case:
    """One labelled (or unlabelled, ``mask_path=None``) volume of a data set."""

    name: str
    image_path: Path
    mask_path: Path | None = None


def _listed(names: Iterable[str]) -> str:
    names = list(names)
    more = f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else ""
    return ", ".join(names[:_MAX_LISTED]) + more


def _check(cases: list[Case], where: Path, require_masks: bool, expected: str) -> list[Case]:
    if not cases:
        raise AnomalyError(f"{where}: no cases found (expected {expected})")
    names = [c.name for c in cases]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise AnomalyError(f"{where}: several images share the case name {_listed(dupes)}")
    missing = [c.name for c in cases if c.mask_path is None]
    if require_masks and missing:
        raise AnomalyError(
            f"{where}: {len(missing)} of {len(cases)} cases have no mask: {_listed(missing)} "
            f"(expected <case>{MASK_TAG} beside each image)"
        )
    return sorted(cases, key=lambda c: c.name)


def _mask_beside(image: Path, case: str) -> Path | None:
    """``<case>_seg`` with the image's extension, else with any volume extension."""
    own = _volume_suffix(image) or ""
    for suffix in (own, *VOLUME_SUFFIXES):
        p = image.parent / f"{case}{MASK_TAG}{suffix}"
        if suffix and p.is_file():
            return p
    return None


def _require_dir(root: str | Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise AnomalyError(f"{root}: not a folder")
    return root


def _brats_images(folder: Path, modality: str) -> list[Path]:
    tag = f"_{modality}"
    return [
        p
        for p in folder.iterdir()
        if p.is_file() and p.name.lower().endswith((f"{tag}.nii.gz", f"{tag}.nii"))
    ]


def find_brats_cases(
    root: str | Path, modality: str = "flair", require_masks: bool = True
) -> list[Case]:
    """Cases of a BraTS-style folder (case folders or flat files) for one ``modality``."""
    root = _require_dir(root)
    modality = modality.lower()
    if modality not in BRATS_MODALITIES:
        raise AnomalyError(
            f"--modality {modality}: unknown, choose one of {', '.join(BRATS_MODALITIES)}"
        )
    folders = [root, *sorted(p for p in root.iterdir() if p.is_dir())]
    cases = []
    for folder in folders:
        for image in _brats_images(folder, modality):
            name = case_name(image)[: -len(modality) - 1]
            cases.append(Case(name, image, _mask_beside(image, name)))
    if not cases:
        found = [m for m in BRATS_MODALITIES if any(_brats_images(f, m) for f in folders)]
        hint = f"; modalities present: {', '.join(found)}" if found else ""
        raise AnomalyError(
            f"{root}: no BraTS cases for modality {modality} (expected <case>/<case>_"
            f"{modality}.nii.gz or flat <case>_{modality}.nii.gz){hint}"
        )
    return _check(cases, root, require_masks, f"<case>_{modality}.nii.gz")


def find_generic_cases(root: str | Path, require_masks: bool = True) -> list[Case]:
    """Volumes in ``root`` with their ``<case>_seg.<ext>`` masks beside them."""
    root = _require_dir(root)
    cases = []
    for p in sorted(root.iterdir()):
        if not p.is_file() or _volume_suffix(p) is None:
            continue
        name = case_name(p)
        if name.lower().endswith(MASK_TAG):
            continue
        cases.append(Case(name, p, _mask_beside(p, name)))
    return _check(cases, root, require_masks, "volume files with <case>_seg masks beside them")


def read_cases_csv(path: str | Path, require_masks: bool = True) -> list[Case]:
    """Cases listed in a CSV of image,mask pairs (optional ``case`` column)."""
    path = Path(path)
    if not path.is_file():
        raise AnomalyError(f"{path}: no such CSV file")
    with path.open(newline="", encoding="utf-8-sig") as f:
        rows = [r for r in csv.reader(f) if any(c.strip() for c in r)]
    if not rows:
        raise AnomalyError(f"{path}: the CSV is empty (expected image,mask columns)")
    header = [c.strip().lower() for c in rows[0]]
    if "image" in header:
        col: dict[str, int] = {k: header.index(k) for k in ("image", "mask", "case") if k in header}
        rows = rows[1:]
    else:
        col = {"image": 0, "mask": 1}

    def cell(row: list[str], key: str) -> str:
        i = col.get(key)
        return row[i].strip() if i is not None and i < len(row) else ""

    cases, absent = [], []
    for row in rows:
        image = (path.parent / cell(row, "image")).resolve()
        mask_text = cell(row, "mask")
        mask = (path.parent / mask_text).resolve() if mask_text else None
        absent += [str(p) for p in (image, mask) if p is not None and not p.is_file()]
        cases.append(Case(cell(row, "case") or case_name(image), image, mask))
    if absent:
        raise AnomalyError(f"{path}: {len(absent)} listed files do not exist: {_listed(absent)}")
    return _check(cases, path, require_masks, "rows of image,mask")


def _looks_like_brats(root: Path) -> bool:
    folders = [root, *(p for p in root.iterdir() if p.is_dir())]
    return any(_brats_images(f, m) for f in folders for m in BRATS_MODALITIES)


def discover_cases(
    source: str | Path,
    layout: str = "auto",
    modality: str = "flair",
    require_masks: bool = True,
) -> list[Case]:
    """The cases of a data set, sorted by name.

    ``layout="auto"``: a ``.csv`` file is a CSV table; a folder holding ``*_{t1,t1ce,t2,flair}
    .nii(.gz)`` files (flat or one level down) is BraTS; any other folder is generic.
    Raises :class:`AnomalyError` when nothing is found or (``require_masks``) a mask is missing.
    """
    if layout not in LAYOUTS:
        raise AnomalyError(f"--layout {layout}: unknown, choose one of {', '.join(LAYOUTS)}")
    source = Path(source)
    if layout == "auto":
        if source.is_file() and source.suffix.lower() == ".csv":
            layout = "csv"
        else:
            layout = "brats" if _looks_like_brats(_require_dir(source)) else "generic"
    if layout == "csv":
        return read_cases_csv(source, require_masks)
    if layout == "brats":
        return find_brats_cases(source, modality, require_masks)
    return find_generic_cases(source, require_masks)
