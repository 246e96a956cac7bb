"""``napari-vae-anomaly predict``: anomaly maps and masks for a cohort of scans.

For every input it writes ``<case>_<predictor>.nii.gz`` (float32 maps), ``<case>_ensemble.nii.gz``
when several maps are combined, and ``<case>_mask.nii.gz`` (uint8), all with the input's
geometry. The mask comes from the ensemble when there is one, else from the single map.
Before anything is computed, case names are checked for clashes (two inputs that would write
the same files; ``--keep-parent`` adds the folder name) and the output folder for
writability. Outputs of a case are checked before it is computed, then written and verified
in temporary files and moved into place together, so a case is written completely or not at
all. Volume notes (DICOM series chosen, uneven slices, NaN replaced, channel used) are printed
as warnings. A case that fails is reported on one line and skipped; the exit status is 1
when any case failed.

Every detection option is a field of :class:`~..detection.DetectionSettings` (flag, help and
default are generated from it, so the Detect widget and ``predict`` cannot drift apart), and
every case goes through :func:`~..detection.detect`, as in the widget. Cases run through
:mod:`.cohort` (reading ahead and writing behind the model; under ``torchrun``, sharded over
ranks).

``--format dicom-seg`` (inputs read from DICOM; needs the ``dicom`` extra) writes the mask as a
DICOM SEG ``<case>_mask.dcm`` and the maps as DICOM Parametric Maps ``<case>_<predictor>.dcm``,
all referencing the input series, so they can go back to the PACS with it.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from ..detection import DetectionSettings
from ..errors import AnomalyError
from ..predictors.registry import PREDICTORS, describe
from .outputs import check_writable_folder, unique_case_names
from .predict_case import DICOM_SEG, Job


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "predict",
        help="write anomaly maps and masks for scans",
        description="Write anomaly maps (<case>_<predictor>.nii.gz, float32; <case>_ensemble "
                    "when several maps are combined) and a mask (<case>_mask.nii.gz, uint8) with "
                    "each input's geometry.\n\npredictors:\n  "
                    + "\n  ".join(describe(n) for n in PREDICTORS),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="scans (NIfTI, NRRD, MHA, DICOM ...)")
    p.add_argument("--model", action="append", required=True, metavar="MODEL",
                   help="checkpoint (.safetensors); repeat for a model ensemble")
    add_settings_arguments(p)
    p.add_argument("--out-dir", type=Path, default=Path("."), metavar="DIR",
                   help="output folder (default: current folder)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--keep-parent", action="store_true",
                   help="name outputs <folder>_<case>_... after each input's folder too, for "
                        "inputs that share a file name (a/scan.nii.gz, b/scan.nii.gz)")
    p.add_argument("--strict", action="store_true",
                   help="refuse DICOM series with missing or uneven slice positions "
                        "(default: warn)")
    p.add_argument("--format", choices=("nifti", DICOM_SEG), default="nifti",
                   help="nifti (default): .nii.gz files; dicom-seg: for DICOM inputs, the mask as "
                        "a DICOM SEG and the maps as DICOM Parametric Maps (.dcm) referencing "
                        "the input series")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default auto)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--peer-timeout", type=float, default=120.0, metavar="SECONDS",
                   help="under torchrun: how long a rank that has finished its cases waits for "
                        "one that has stopped answering (its process or node died) before "
                        "giving up; ranks that are only slow are waited for however long they "
                        "take (default 120)")
    p.set_defaults(func=run)


def _shown(value: Any) -> str:
    return "+".join(value) if isinstance(value, tuple) else f"{value:g}" if isinstance(
        value, float) else str(value)


def add_settings_arguments(parser: Any) -> None:
    """One option per :class:`DetectionSettings` field: flag, help and default from the field
    (so ``predict --help`` cannot drift from the widget and the core)."""
    groups: dict[str, Any] = {}
    for f in fields(DetectionSettings):
        meta = dict(f.metadata)
        flag, text, group = meta.pop("flag"), meta.pop("help"), meta.pop("group", None)
        if group is not None and group not in groups:
            groups[group] = parser.add_mutually_exclusive_group()
        target = parser if group is None else groups[group]
        if f.default is not None and not isinstance(f.default, bool):
            text += f" (default {_shown(f.default)})"
        if isinstance(f.default, bool):
            if f.default:
                raise TypeError(f"{f.name}: a flag must default to off")
            target.add_argument(flag, dest=f.name, action="store_true", help=text)
        elif meta.get("action") == "append":
            target.add_argument(flag, dest=f.name, default=None, help=text, **meta)
        else:
            kind = float if f.default is None else type(f.default)
            target.add_argument(flag, dest=f.name, type=kind, default=f.default, help=text,
                                **meta)


def settings_from_args(args: argparse.Namespace) -> DetectionSettings:
    """The settings the command line asked for (unset options keep the settings' default)."""
    given = {f.name: getattr(args, f.name) for f in fields(DetectionSettings)}
    if given["predictors"] is None:
        del given["predictors"]
    try:
        return DetectionSettings(**given)
    except ValueError as exc:
        raise AnomalyError(f"invalid option: {exc}") from None


def prepare(args: argparse.Namespace, device: Any, quiet: bool = False,
            calibrate_here: bool = True) -> tuple[Job, list[str]]:
    """Check inputs, names and the output folder, load the models, calibrate the threshold:
    everything refused before any case is computed. Returns the job and the case names.
    ``calibrate_here=False`` (ranks but 0 under torchrun): the job's thresholds are left
    None, for rank 0's (:func:`start`)."""
    from ..detection import calibrate
    from ..models.checkpoint import load_checkpoint

    settings = settings_from_args(args)
    if not args.peer_timeout > 0:
        raise AnomalyError(f"--peer-timeout must be positive (got {args.peer_timeout:g})")
    missing = [str(p) for p in args.inputs if not Path(p).exists()]
    if missing:  # before any folder is made or anything computed (issue 12)
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise AnomalyError(f"input {missing[0]} does not exist{more}; nothing was written")
    cases = unique_case_names(args.inputs, args.keep_parent)  # before any computation
    models = [load_checkpoint(m, device=device) for m in args.model]
    check_writable_folder(args.out_dir)  # before the calibration and the cases are computed
    job = Job(args, settings, models, settings.keys(len(models)), None)
    if not calibrate_here:
        return job, cases
    try:
        job.thresholds = thresholds = calibrate(models, settings)
    except ValueError as exc:
        raise AnomalyError(f"--threshold-fpr: {exc} (model {args.model[0]})") from None
    key = settings.mask_key(len(models))
    if not quiet:
        print(f"mask from '{key}' at threshold {thresholds.values[key]:.6g} "
              f"({thresholds.source})", file=sys.stderr)
    return job, cases


def start(args: argparse.Namespace, ctx: Any) -> tuple[Job, list[str]]:
    """:func:`prepare` on every rank, all of them stopping together when one cannot start
    (none waits for the others), rank 0's thresholds on every rank, and the same cases."""
    from ..distributed import any_rank, first_differing_rank, from_main

    try:
        job, cases = prepare(args, ctx.device, quiet=not ctx.is_main,
                             calibrate_here=ctx.is_main)
        trouble = None
    except (AnomalyError, OSError) as exc:
        job, cases, trouble = None, [], exc
    if any_rank(ctx, trouble is not None):
        if trouble is not None:
            raise trouble
        raise AnomalyError("another rank could not start; see its message")
    assert job is not None  # every rank started
    job.thresholds = from_main(ctx, job.thresholds)
    rank = first_differing_rank(ctx, cases)
    if rank is not None:
        raise AnomalyError(f"rank {rank} was given other inputs than rank 0 (or in another "
                           "order), so the ranks' shares would not add up to the cohort; give "
                           "every node the same list (e.g. sorted); no case was computed")
    return job, cases


def run(args: argparse.Namespace) -> int:
    """Predict every input; under torchrun each rank takes its share of the cases, and rank 0
    prints one summary once every rank is done (:func:`..distributed.gather_when_done`)."""
    from dataclasses import asdict

    from ..distributed import Heartbeat, SharedCounter, gather_when_done, setup, shard
    from .cohort import FINISHED_KEY, Tally, progress_bar, run_cohort, summary_line

    ctx = setup(args.device)
    try:
        job, cases = start(args, ctx)
        work = shard(list(zip(map(str, args.inputs), cases, strict=True)), ctx.rank,
                     ctx.world_size)
        bar, counter = progress_bar(job, ctx, len(cases)), SharedCounter(ctx, FINISHED_KEY)

        def count_others() -> None:  # rank 0's bar goes on while the other ranks finish
            if not bar.disable:
                bar.n = counter.add(0)
                bar.refresh()

        try:
            with Heartbeat(ctx, min(5.0, args.peer_timeout / 4)):
                tally = run_cohort(job, work, ctx, total=len(cases), bar=bar)
                tallies = gather_when_done(ctx, asdict(tally), "napari_vae_anomaly/predict",
                                           args.peer_timeout, poll=count_others)
        finally:
            bar.close()
        line, status = summary_line([Tally(**t) for t in tallies], len(cases), args.out_dir)
        if ctx.is_main:
            print(line, file=sys.stderr)
        return status
    finally:
        ctx.close()
