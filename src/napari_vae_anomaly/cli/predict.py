"""``napari-vae-anomaly predict``: anomaly maps and masks for a cohort of scans.

For every input it writes ``<case>_<predictor>.nii.gz`` (float32 maps), ``<case>_ensemble.nii.gz``
when several maps are combined, and ``<case>_mask.nii.gz`` (uint8), all with the input's
geometry. The mask comes from the ensemble when there is one, else from the single map.
Before anything is computed, case names are checked for clashes (two inputs that would write
the same files; ``--keep-parent`` adds the folder name) and the output folder for
writability. Outputs of a case are checked before it is computed, then written and verified
in temporary files and moved into place together, so a case is written completely or not at
all. Volume notes (DICOM series chosen, uneven slices, NaN replaced, channel used) are printed
as warnings. A case that fails is reported
on one line and skipped; the exit status is 1 when any case failed.

``--format dicom-seg`` (inputs read from DICOM; needs the ``dicom`` extra) writes the mask as a
DICOM SEG ``<case>_mask.dcm`` and the maps as DICOM Parametric Maps ``<case>_<predictor>.dcm``,
all referencing the input series, so they can go back to the PACS with it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import AnomalyError
from ..postprocessing.threshold import DEFAULT_NORMAL_FRACTION
from ..predictors.ensemble import NORMALIZATIONS
from ..predictors.registry import DEFAULT_PREDICTORS, PREDICTORS, PredictorOptions, describe
from .outputs import check_writable_folder, unique_case_names, volume_notes, write_case

_D = PredictorOptions()
DICOM_SEG = "dicom-seg"


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
    p.add_argument("--predictor", action="append", choices=list(PREDICTORS), metavar="NAME",
                   help=f"map to compute; repeat for several (default: {'+'.join(DEFAULT_PREDICTORS)}, "
                        "their ensemble makes the mask); "
                        f"one of {', '.join(PREDICTORS)}")
    p.add_argument("--energy-steps", type=int, default=None, metavar="T",
                   help=f"steps of the energy projection (default {_D.energy_steps})")
    p.add_argument("--energy-alpha", type=float, default=None, metavar="A",
                   help=f"step size of the energy projection (default {_D.energy_alpha:g})")
    p.add_argument("--energy-lambda", type=float, default=None, metavar="L",
                   help=f"weight of the L1 distance to the input in the energy (default {_D.energy_lambda:g})")
    p.add_argument("--sigma", type=float, default=None,
                   help=f"Gaussian smoothing of gradient maps (default {_D.sigma:g}, 0 = off)")
    p.add_argument("--median", type=int, default=None, metavar="K",
                   help=f"3-D median filter of K voxels a side on every map (default {_D.median}, 0 = off)")
    p.add_argument("--erode", type=int, default=None, metavar="N",
                   help=f"keep maps inside the brain mask eroded by N voxels (default {_D.erode}, 0 = off)")
    p.add_argument("--normalize", choices=NORMALIZATIONS, default="reference",
                   help="normalization of ensemble members: reference (normal statistics stored "
                        "in the checkpoint; per-volume zscore for checkpoints without them), "
                        "zscore or rank of each volume (default reference)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--threshold", type=float, default=None, metavar="VALUE",
                   help="fixed threshold on the mask's map")
    g.add_argument("--threshold-fpr", type=float, default=None, metavar="F",
                   help="threshold exceeded by a fraction F of normal voxels: the checkpoint's "
                        "held-out normal volumes (its reference slices for older checkpoints) "
                        f"(default {DEFAULT_NORMAL_FRACTION:g})")
    p.add_argument("--min-size", type=int, default=0, metavar="N",
                   help="remove mask components smaller than N voxels")
    p.add_argument("--min-volume", type=float, default=0.0, metavar="MM3",
                   help="remove mask components smaller than MM3 cubic millimetres")
    p.add_argument("--fill-holes", action="store_true", help="fill holes in the mask")
    p.add_argument("--chunk", type=int, default=32, help="slices per batch (default 32)")
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
    p.set_defaults(func=run)


def options_from_args(args: argparse.Namespace) -> PredictorOptions:
    o = PredictorOptions(chunk=max(1, args.chunk))
    changes = {
        "energy_steps": args.energy_steps, "energy_alpha": args.energy_alpha,
        "energy_lambda": args.energy_lambda, "sigma": args.sigma,
        "median": args.median, "erode": args.erode,
    }
    try:
        return o.replace(**{k: v for k, v in changes.items() if v is not None})
    except ValueError as exc:
        raise AnomalyError(f"invalid predictor option: {exc}") from None


def output_paths(case: str, out_dir: Path, keys: list[str]) -> dict[str, Path]:
    """Map key (predictor name, 'ensemble') and 'mask' -> output file."""
    return {k: out_dir / f"{case}_{k}.nii.gz" for k in [*keys, "mask"]}


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..io.read import read_volume
    from ..models.checkpoint import load_checkpoint
    from ..postprocessing.mask import MaskOptions, postprocess
    from ..predictors.calibration import normal_thresholds
    from ..predictors.pipeline import ENSEMBLE_KEY, predict_volume
    from ..training.devices import resolve_device

    names = list(dict.fromkeys(args.predictor or DEFAULT_PREDICTORS))
    options = options_from_args(args)
    missing = [str(p) for p in args.inputs if not Path(p).exists()]
    if missing:  # before any folder is made or anything computed (issue 12)
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise AnomalyError(f"input {missing[0]} does not exist{more}; nothing was written")
    cases = unique_case_names(args.inputs, args.keep_parent)  # before any computation
    device = resolve_device(args.device)
    models = [load_checkpoint(m, device=device) for m in args.model]
    out_dir: Path = args.out_dir
    check_writable_folder(out_dir)  # before the calibration and the cases are computed
    keys = list(names)
    if len(names) * len(models) > 1:
        keys.append(ENSEMBLE_KEY)
    mask_key = ENSEMBLE_KEY if ENSEMBLE_KEY in keys else names[0]
    if args.min_size < 0 or args.min_volume < 0:
        raise AnomalyError("--min-size and --min-volume must be >= 0")

    if args.threshold is not None:
        threshold = float(args.threshold)
        how = "fixed"
    else:
        fpr = DEFAULT_NORMAL_FRACTION if args.threshold_fpr is None else args.threshold_fpr
        if not 0 < fpr < 1:
            raise AnomalyError(f"--threshold-fpr must be between 0 and 1, got {fpr}")
        try:
            found, source = normal_thresholds(models, names, options, args.normalize, fpr)
        except ValueError as exc:
            raise AnomalyError(f"--threshold-fpr: {exc} (model {args.model[0]})") from None
        threshold = found[mask_key]
        how = f"{fpr:g} of normal voxels above it, from the {source}"
    print(f"mask from '{mask_key}' at threshold {threshold:.6g} ({how})", file=sys.stderr)
    mask_opts = MaskOptions(min_voxels=args.min_size,
                            min_mm3=args.min_volume, fill_holes=args.fill_holes)

    failed: list[str] = []
    kept: list[str] = []
    bar = tqdm(args.inputs, desc="predict", unit="case", disable=args.no_progress, file=sys.stderr)
    for src, case in zip(bar, cases, strict=True):
        try:
            paths = output_paths(case, out_dir, keys)
            if args.format == DICOM_SEG:
                paths = dicom_paths(paths)
            existing = [p for p in paths.values() if p.exists()]
            if existing and not args.overwrite:  # a rerun: keep what is there, not a failure
                kept.append(str(src))
                tqdm.write(f"predict: {src}: kept, {existing[0].name} exists "
                           f"({len(existing)} output(s) of this case; --overwrite replaces them)",
                           file=sys.stderr)
                continue
            vol = read_volume(src, strict=args.strict)
            for note in volume_notes(vol, src, models):
                tqdm.write(f"predict: warning: {note}", file=sys.stderr)
            if args.format == DICOM_SEG:  # refuse before the expensive part
                check_dicom_input(vol, paths["mask"].name)
            res = predict_volume(vol, models, names, options, ensemble=args.normalize)
            maps = res.all_maps()
            spacing = vol.geometry.spacing
            mask = postprocess(maps[mask_key], threshold, mask_opts, res.foreground, spacing)
            if args.format == DICOM_SEG:
                about = {"models": ", ".join(m.name for m in models), "predictor": mask_key,
                         "threshold": f"{threshold:.6g}"}
                write_dicom_case(paths, maps, mask, vol, about, args.overwrite)
                bar.set_postfix_str(f"{case}: {int(mask.sum())} voxels flagged")
                continue
            outputs = {paths[k]: maps[k] for k in keys}
            outputs[paths["mask"]] = mask
            write_case(outputs, vol.geometry, overwrite=args.overwrite)
            bar.set_postfix_str(f"{case}: {int(mask.sum())} voxels flagged")
        except AnomalyError as exc:
            failed.append(str(src))
            tqdm.write(f"predict: {src}: {exc}", file=sys.stderr)
        except Exception as exc:  # keep the cohort going; report the unexpected briefly
            failed.append(str(src))
            tqdm.write(f"predict: {src}: {type(exc).__name__}: {exc}", file=sys.stderr)
    n = len(args.inputs)
    done = n - len(failed) - len(kept)
    print(f"predict: {done} of {n} case(s) done, written to {out_dir}"
          + (f"; {len(kept)} kept (outputs exist)" if kept else "")
          + (f"; failed: {', '.join(failed)}" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


# ------------------------------------------------------------------------------ DICOM output
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
