"""``napari-vae-anomaly evaluate``: metrics of anomaly maps against ground-truth masks.

Matching (files or folders, any mix): a mask's case name is its file name without the
extension and without a trailing ``_seg`` (``<case>_seg.nii.gz`` or ``<case>.nii.gz``). A map
named ``<case>_<predictor>.nii.gz`` belongs to the case with the longest matching name, and
``<predictor>`` names its rows (a map named exactly ``<case>`` gets predictor ``map``). When
some map matches no mask by name and ``--maps``/``--masks`` list equally many files, they are
paired in the order given (noted in the output); otherwise the unmatched maps are an error.

Foreground (the voxels that count): ``--foreground`` masks (nonzero, matched to cases like
maps: ``<case>`` or ``<case>_<anything>``), or the nonzero voxels of ``--images`` (the
convention of skull-stripped scans), or else the whole volume, with a note: background voxels
are easy negatives and inflate AUROC, so give one of the two where possible. Thresholding
``map > 0`` is deliberately not used as a foreground: it would drop lesion voxels a predictor
scored 0 and so change the truth from one predictor to the next.

Prints a Markdown table (rows per case, ``pooled`` and ``mean`` per predictor); ``--out DIR``
also writes metrics.md, metrics.csv and metrics.json (never overwritten without
``--overwrite``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ..data.datasets import MASK_TAG, VOLUME_SUFFIXES, case_name
from ..errors import AnomalyError
from ..metrics import DatasetEvaluator, MetricsResult
from ..metrics.report import FORMATS


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="metrics of anomaly maps against ground-truth masks",
        description=(
            "Voxel AUROC/AUPRC, Dice at --threshold, the oracle best Dice (an upper bound: "
            "its threshold is picked on the test labels) and slice-level detection AUROC, "
            "per case and pooled. Maps <case>_<predictor>.nii.gz are matched to masks "
            "<case>_seg.nii.gz or <case>.nii.gz by case name."
        ),
    )
    p.add_argument("--maps", nargs="+", required=True, metavar="MAP", help="map files or folders")
    p.add_argument(
        "--masks", nargs="+", required=True, metavar="MASK", help="ground-truth files or folders"
    )
    fg = p.add_mutually_exclusive_group()
    fg.add_argument(
        "--foreground", nargs="+", metavar="MASK", help="foreground masks (nonzero counts)"
    )
    fg.add_argument(
        "--images", nargs="+", metavar="IMAGE", help="scans whose nonzero voxels are foreground"
    )
    p.add_argument("--threshold", type=float, help="report Dice of map > THRESHOLD")
    p.add_argument("--axis", type=int, default=0, help="array axis of slices (default 0)")
    p.add_argument(
        "--min-lesion-voxels",
        type=int,
        default=10,
        help="a slice with more lesion voxels is abnormal (default 10)",
    )
    p.add_argument(
        "--max-voxels",
        type=int,
        default=5_000_000,
        help="normal voxels kept for pooled metrics, seeded subsample beyond (0 = all)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the pooled subsample")
    p.add_argument("--out", type=Path, help="folder for metrics.md/.csv/.json")
    p.add_argument("--overwrite", action="store_true", help="replace existing metrics files")
    p.set_defaults(func=run)


# ---------------------------------------------------------------------- files and matching
def _is_volume(p: Path) -> bool:
    return p.is_file() and p.name.lower().endswith(VOLUME_SUFFIXES)


def _expand(items: list[str], option: str) -> tuple[list[Path], bool]:
    """Files named or inside the folders named; True when only files were named."""
    out: list[Path] = []
    only_files = True
    for item in items:
        p = Path(item)
        if p.is_dir():
            only_files = False
            found = sorted(q for q in p.iterdir() if _is_volume(q))
            if not found:
                raise AnomalyError(f"{option} {p}: the folder holds no volume files")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise AnomalyError(f"{option} {p}: no such file or folder")
    return out, only_files


def mask_case(path: Path) -> str:
    """Case name of a ground-truth file: ``<case>_seg.ext`` or ``<case>.ext``."""
    name = case_name(path)
    return name[: -len(MASK_TAG)] if name.lower().endswith(MASK_TAG) else name


def match_case(path: Path, cases: list[str]) -> tuple[str, str] | None:
    """(case, rest) for a file named ``<case>`` or ``<case>_<rest>``; longest case wins."""
    stem = case_name(path)
    hits = [c for c in cases if stem == c or stem.startswith(c + "_")]
    if not hits:
        return None
    case = max(hits, key=len)
    return case, stem[len(case) + 1 :]


def pair_maps(
    maps: list[Path], masks: list[Path], positional_ok: bool
) -> tuple[dict[str, Path], list[tuple[str, str, Path]], list[str]]:
    """Masks by case, (case, predictor, map) triples, and notes on the matching."""
    by_case: dict[str, Path] = {}
    for m in masks:
        c = mask_case(m)
        if c in by_case:
            raise AnomalyError(f"--masks: {by_case[c]} and {m} are both masks of case {c}")
        by_case[c] = m
    notes: list[str] = []
    triples = []
    unmatched = []
    skipped_masks = 0
    for mp in maps:
        hit = match_case(mp, list(by_case))
        if hit is None:
            unmatched.append(mp)
        elif hit[1] == "mask":  # predict's binary <case>_mask beside its maps: not a score map
            skipped_masks += 1
        else:
            triples.append((hit[0], hit[1] or "map", mp))
    if skipped_masks:
        notes.append(f"{skipped_masks} <case>_mask file(s) in --maps skipped: masks are not maps")
    if unmatched:
        if not (positional_ok and len(maps) == len(masks)):
            names = ", ".join(str(p) for p in unmatched[:10])
            raise AnomalyError(
                f"--maps: {len(unmatched)} maps match no mask by case name: {names} "
                "(expected <case>_<predictor> beside masks <case>_seg or <case>)"
            )
        triples = [(mask_case(mk), "map", mp) for mp, mk in zip(maps, masks, strict=True)]
        notes.append("maps and masks paired in the order given (names did not match)")
    seen = {(c, p) for c, p, _ in triples}
    if len(seen) != len(triples):
        raise AnomalyError("--maps: several maps have the same case and predictor name")
    unused = sorted(set(by_case) - {c for c, _, _ in triples})
    if unused:
        notes.append(f"masks without a map (not evaluated): {', '.join(unused[:10])}")
    return by_case, triples, notes


def match_foreground(files: list[Path], cases: list[str], option: str) -> dict[str, Path]:
    """One foreground (or image) file per case, matched by name (``<case>`` or ``<case>_*``)."""
    out: dict[str, Path] = {}
    for f in files:
        hit = match_case(f, cases)
        if hit is not None and hit[0] not in out:
            out[hit[0]] = f
    missing = [c for c in cases if c not in out]
    if missing:
        raise AnomalyError(f"{option}: no file for case {', '.join(missing[:10])}")
    return out


def read_array(path: Path) -> np.ndarray:
    """Voxels of a volume file in (z, y, x) order."""
    from ..io.read import read_volume

    return np.asarray(read_volume(path).data)


def _same_shape(a: np.ndarray, pa: Path, b: np.ndarray, pb: Path, what: str) -> None:
    if a.shape != b.shape:
        raise AnomalyError(f"{pa} has shape {a.shape} but {what} {pb} has shape {b.shape}")


# ---------------------------------------------------------------------- command
def evaluate_files(args: argparse.Namespace) -> MetricsResult:
    """Match the files named in ``args``, evaluate every map, and return the table."""
    maps, maps_files = _expand(args.maps, "--maps")
    masks, masks_files = _expand(args.masks, "--masks")
    others = set(masks)  # a folder given to several options: its masks/images are no maps
    for option in ("foreground", "images"):
        if getattr(args, option):
            others.update(_expand(getattr(args, option), f"--{option}")[0])
    maps = [m for m in maps if m not in others]
    if not maps:
        raise AnomalyError("--maps: every file named is also a mask, foreground or image")
    by_case, triples, notes = pair_maps(maps, masks, maps_files and masks_files)
    cases = sorted({c for c, _, _ in triples})
    fg_files: dict[str, Path] = {}
    if args.foreground:
        fg_files = match_foreground(
            _expand(args.foreground, "--foreground")[0], cases, "--foreground"
        )
    elif args.images:
        fg_files = match_foreground(_expand(args.images, "--images")[0], cases, "--images")
    else:
        notes.append(
            "foreground: the whole volume (give --foreground or --images to exclude background)"
        )
    predictors = sorted({p for _, p, _ in triples})
    cap = args.max_voxels if args.max_voxels and args.max_voxels > 0 else None
    evaluators = {
        p: DatasetEvaluator(p, args.threshold, args.axis, args.min_lesion_voxels, cap, args.seed)
        for p in predictors
    }
    for case in cases:
        truth = read_array(by_case[case])
        fg = None
        if case in fg_files:
            fg = read_array(fg_files[case]) != 0
            _same_shape(fg, fg_files[case], truth, by_case[case], "mask")
        for c, predictor, path in triples:
            if c != case:
                continue
            scores = read_array(path)
            _same_shape(scores, path, truth, by_case[case], "mask")
            if not np.all(np.isfinite(scores if fg is None else scores[fg])):
                raise AnomalyError(f"{path}: the map holds NaN or infinite values")
            evaluators[predictor].add(case, scores.astype(np.float32, copy=False), truth, fg)
    result = MetricsResult(notes=notes)
    for p in predictors:
        result.extend(evaluators[p].result())
    return result


def run(args: argparse.Namespace) -> int:
    if args.out is not None and not args.overwrite:  # refuse before the work, not after
        existing = [str(args.out / f"metrics.{f}") for f in FORMATS]
        existing = [p for p in existing if Path(p).exists()]
        if existing:
            raise AnomalyError(f"refusing to overwrite {', '.join(existing)} (use --overwrite)")
    result = evaluate_files(args)
    if args.out is not None:
        paths = result.write(args.out, overwrite=args.overwrite)
        print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    print(result.to_markdown(), end="")
    return 0
