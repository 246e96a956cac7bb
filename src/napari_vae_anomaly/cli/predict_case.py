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
from .outputs import volume_notes

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
    thresholds: Thresholds | None  # None only until rank 0's arrive (torchrun)


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


class CaseWriter:
    """One case's outputs written all or none, each map staged as soon as it is made.

    Why: holding every map of a case until the end cost one volume per map. Each map is
    written and verified in a temporary folder beside its target (:func:`..io.write.stage_volume`,
    or a DICOM Parametric Map) when it arrives and can then be released; :meth:`finish` stages
    the mask and moves every file into place together, and :meth:`discard` (always called)
    removes whatever was staged but not committed, so a failed or interrupted case leaves
    nothing behind.
    """

    def __init__(self, job: Job, paths: dict[str, Path], vol: Any):
        self.job, self.paths, self.vol = job, paths, vol
        self.staged: dict[str, Any] = {}

    def add(self, key: str, data: Any) -> None:
        """Stage the map ``key`` (a predictor or 'ensemble') of this case."""
        args = self.job.args
        if key not in self.paths or key == "mask":
            return  # not an output of this run
        if args.format == DICOM_SEG:
            from ..io import dicom_seg

            self.staged[key] = dicom_seg.stage_dicom_parametric_map(
                self.paths[key], data, self.vol.geometry, map_label=key,
                model_name=self.model_names(), overwrite=args.overwrite)
        else:
            from ..io.write import stage_volume

            self.staged[key] = stage_volume(self.paths[key], data, self.vol.geometry,
                                            overwrite=args.overwrite)

    def model_names(self) -> str:
        return ", ".join(m.name for m in self.job.models)

    def finish(self, res: Any) -> None:
        """Stage the mask (and any map not handed on before), then commit every file."""
        args = self.job.args
        for k in self.job.keys:
            if k not in self.staged:
                self.add(k, res.maps[k])
        if args.format == DICOM_SEG:
            from ..io import dicom_seg

            about = {"predictor": res.mask_key, "threshold": f"{res.threshold:.6g}"}
            mask = dicom_seg.stage_dicom_seg(self.paths["mask"], res.mask, self.vol.geometry,
                                             model_name=self.model_names(), parameters=about,
                                             overwrite=args.overwrite)
            order = [mask, *(self.staged[k] for k in self.job.keys)]  # SEG first
        else:
            from ..io.write import stage_volume

            mask = stage_volume(self.paths["mask"], res.mask, self.vol.geometry,
                                overwrite=args.overwrite)
            order = [*(self.staged[k] for k in self.job.keys), mask]
        self.staged["mask"] = mask
        for s in order:
            s.commit()

    def discard(self) -> None:
        for s in self.staged.values():
            s.discard()
        self.staged.clear()


def write_outputs(job: Job, paths: dict[str, Path], vol: Any, res: Any) -> None:
    """Write one case's maps and mask, all or none (every map of ``res`` at once)."""
    case = CaseWriter(job, paths, vol)
    try:
        case.finish(res)
    finally:
        case.discard()


def dicom_paths(paths: dict[str, Path]) -> dict[str, Path]:
    """The same outputs named ``.dcm`` (DICOM SEG for the mask, Parametric Maps for maps)."""
    return {k: p.with_name(p.name.removesuffix(".nii.gz") + ".dcm") for k, p in paths.items()}


def check_dicom_input(vol: Any, name: str) -> None:
    """Refuse, before predicting, an input that cannot be referenced by a DICOM SEG."""
    from ..io.dicom_seg import check_dicom_source

    check_dicom_source(vol.geometry, vol.shape, name)
