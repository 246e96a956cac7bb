"""Output safety for ``predict``: case names that cannot clash, a writable folder, one case
written all at once, and the notes of each volume as warnings.

Why: two inputs named alike (``a/scan.nii.gz`` and ``b/scan.nii.gz``, or ``scan.nii.gz``
and ``scan.nrrd``) would write the same output files, the second silently replacing the
first with ``--overwrite``. Such clashes, and an output folder that cannot be written, are
found before any computation.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import AnomalyError, VolumeWriteError
from ..io.atomic import TEMP_SUFFIX, clean_stale_temps, temp_prefix
from ..io.read import case_name


def unique_case_names(inputs: Sequence[str | os.PathLike], keep_parent: bool = False) -> list[str]:
    """The case name of each input (``<folder>_<name>`` with ``keep_parent``); refuses clashes
    naming both inputs and a way out."""
    names: list[str] = []
    seen: dict[str, str] = {}
    for src in inputs:
        case = case_name(src)
        if keep_parent:
            parent = Path(os.path.abspath(src)).parent.name
            case = f"{parent}_{case}" if parent else case
        key = os.path.normcase(case)
        if key in seen:
            first = seen[key]
            if os.path.abspath(first) == os.path.abspath(src):
                raise AnomalyError(f"{src} is given twice; each input is predicted once")
            way_out = ("rename one of them or predict them into different --out-dir folders"
                       if keep_parent else
                       "use --keep-parent to add each input's folder to the output names, "
                       "rename one of them, or predict them into different --out-dir folders")
            raise AnomalyError(f"inputs {first} and {src} would both write {case}_*.nii.gz; "
                               f"{way_out}")
        seen[key] = str(src)
        names.append(case)
    return names


def check_writable_folder(folder: Path) -> None:
    """Create ``folder`` if needed and prove a file can be created in it (and removed)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except PermissionError:
        raise VolumeWriteError(f"--out-dir {folder}: permission denied (cannot create it)"
                               ) from None
    except OSError as exc:
        raise VolumeWriteError(f"--out-dir {folder}: cannot create it ({exc.strerror})"
                               ) from None
    clean_stale_temps(folder)
    try:
        fd, probe = tempfile.mkstemp(prefix=temp_prefix("probe"), suffix=TEMP_SUFFIX,
                                     dir=folder)
    except PermissionError:
        raise VolumeWriteError(f"--out-dir {folder}: permission denied (cannot write into "
                               "it)") from None
    except OSError as exc:
        raise VolumeWriteError(f"--out-dir {folder}: cannot write into it ({exc.strerror})"
                               ) from None
    os.close(fd)
    os.unlink(probe)


def write_case(outputs: dict[Path, np.ndarray], geometry: Any, overwrite: bool) -> None:
    """Write every output of one case, or none: all are staged and verified first, then
    moved into place together."""
    from ..io.write import stage_volume

    staged = []
    try:
        for path, data in outputs.items():
            staged.append(stage_volume(path, data, geometry, overwrite=overwrite))
        for s in staged:
            s.commit()
    finally:
        for s in staged:
            s.discard()


def volume_notes(volume: Any, source: str | os.PathLike, models: Sequence[Any] = ()) -> list[str]:
    """What the reader noted (series chosen, uneven slices, NaN replaced), for files with
    several channels which one is used, and how the scan differs from each model's training
    data (:mod:`..models.domain`)."""
    from ..models.domain import domain_warnings

    notes = list(volume.notes)
    if len(volume.channels) > 1:
        notes.append(f"{Path(source).name}: {len(volume.channels)} channels; used channel "
                     f"{volume.channel}")
    return notes + domain_warnings(volume.data, volume.geometry.scale, models)
