"""One case of ``predict``: where its outputs go, reading it, writing it all or none.

Shared by :mod:`.predict` (options, preparation, the run) and :mod:`.cohort` (the reading and
writing threads), so neither imports the other.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..detection import DetectionSettings, Thresholds
from .outputs import volume_notes, write_case

DICOM_SEG = "dicom-seg"


def output_paths(case: str, out_dir: Path, keys: list[str]) -> dict[str, Path]:
    """Map key (predictor name, 'ensemble') and 'mask' -> output file."""
    return {k: out_dir / f"{case}_{k}.nii.gz" for k in [*keys, "mask"]}


@dataclass
class Job:
    """What every case of one ``predict`` run shares."""

    args: argparse.Namespace
    settings: DetectionSettings
    models: list[Any]
    keys: list[str]
    thresholds: Thresholds


def load_case(job: Job, src: str, case: str, emit: Any) -> tuple[Any, dict[str, Path], str]:
    """Read one input (volume, output paths, ''), or say why it is kept as it is."""
    from ..io.read import read_volume

    args = job.args
    paths = output_paths(case, args.out_dir, job.keys)
    if args.format == DICOM_SEG:
        paths = dicom_paths(paths)
    existing = [p for p in paths.values() if p.exists()]
    if existing and not args.overwrite:  # a rerun: keep what is there, not a failure
        return None, paths, (f"kept, {existing[0].name} exists ({len(existing)} output(s) of "
                             "this case; --overwrite replaces them)")
    vol = read_volume(src, strict=args.strict)
    for note in volume_notes(vol, src, job.models):
        emit(f"predict: warning: {note}")
    if args.format == DICOM_SEG:  # refuse before the expensive part
        check_dicom_input(vol, paths["mask"].name)
    return vol, paths, ""


def write_outputs(job: Job, paths: dict[str, Path], vol: Any, res: Any) -> None:
    """Write one case's maps and mask, all or none."""
    args = job.args
    if args.format == DICOM_SEG:
        about = {"models": ", ".join(m.name for m in job.models), "predictor": res.mask_key,
                 "threshold": f"{res.threshold:.6g}"}
        write_dicom_case(paths, res.maps, res.mask, vol, about, args.overwrite)
        return
    outputs = {paths[k]: res.maps[k] for k in job.keys}
    outputs[paths["mask"]] = res.mask
    write_case(outputs, vol.geometry, overwrite=args.overwrite)


def dicom_paths(paths: dict[str, Path]) -> dict[str, Path]:
    """The same outputs named ``.dcm`` (DICOM SEG for the mask, Parametric Maps for maps)."""
    return {k: p.with_name(p.name.removesuffix(".nii.gz") + ".dcm") for k, p in paths.items()}


def check_dicom_input(vol: Any, name: str) -> None:
    """Refuse, before predicting, an input that cannot be referenced by a DICOM SEG."""
    from ..io.dicom_seg import check_dicom_source

    check_dicom_source(vol.geometry, vol.shape, name)


def write_dicom_case(paths: dict[str, Path], maps: dict[str, Any], mask: Any, vol: Any,
                     about: dict[str, str], overwrite: bool) -> None:
    """Write a case's mask (SEG) and maps (Parametric Maps) all or none: each is staged and
    verified first, then they are moved into place together (as ``write_case`` does)."""
    from ..io import dicom_seg

    about = dict(about)
    model = about.pop("models")
    staged = []
    try:
        staged.append(dicom_seg.stage_dicom_seg(paths["mask"], mask, vol.geometry,
                                                model_name=model, parameters=about,
                                                overwrite=overwrite))
        for k in (k for k in paths if k != "mask"):
            staged.append(dicom_seg.stage_dicom_parametric_map(
                paths[k], maps[k], vol.geometry, map_label=k, model_name=model,
                overwrite=overwrite))
        for s in staged:
            s.commit()
    finally:
        for s in staged:
            s.discard()
