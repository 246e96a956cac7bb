"""``napari-vae-anomaly benchmark``: the whole study (beta sweep x predictors, ensembles,
baselines) as one command, on the built-in phantom or on folders of scans.

Writes results.md / .csv / .json, per_case.csv and PNG plots to ``--out`` (never over earlier
results unless ``--overwrite``); trained models go to ``--out/models`` (``--reuse`` takes them
on a rerun). Progress lines (elapsed seconds, step) go to stdout.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..errors import AnomalyError

PRESET_NOTE = (
    "Default: the phantom smoke study (3 betas, all predictors, about 23 min on 2 shared CPU cores); "
    "--data mni: the realistic study on MNI152 anatomy that sets the defaults (docs/results.md). "
    "--quick: a size-32 model per beta (0.1 and 5), 20 epochs in batches of 16, 3 normal + 2-3 "
    "reference + 2 test volumes, 5 projection steps; measured on 2 CPU cores shared with other "
    "jobs: 1.5 min on the phantom (about 20 s of training per model), 5.5 min with --data mni "
    "(45-70 s of training per model)."
)


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..study.config import ALL_PREDICTORS

    p = subparsers.add_parser(
        "benchmark",
        help="train a beta sweep, run every predictor, ensembles and baselines, tabulate",
        description=(
            "Train one VAE per beta on normal data (or take --model checkpoints), run every "
            "predictor, the predictor and model ensembles and trivial baselines on labelled test "
            "volumes, and write a table (AUROC, AUPRC, Dice at an unsupervised threshold, the "
            "oracle Dice, slice AUROC, time) with ROC/PR, bar and example plots. " + PRESET_NOTE
        ),
    )
    p.add_argument("--out", type=Path, required=True, help="folder for the results and models")
    p.add_argument("--data", choices=("mni", "phantom", "folders"),
                   help="mni (realistic: MNI152 anatomy, needs the 'realistic' extra), phantom "
                        "(the quick smoke study; default without --test) or folders")
    p.add_argument("--normal", type=Path, help="folder of normal volumes (training; the last one is held out as reference)")
    p.add_argument("--test", type=Path, help="folder (BraTS or generic <case>_seg layout) or CSV of labelled test cases")
    p.add_argument("--train", type=Path, help="labelled patient volumes whose lesion-free slices are the normal data (when no --normal)")
    p.add_argument("--modality", default="flair", help="BraTS modality (t1, t1ce, t2, flair; default flair)")
    p.add_argument("--layout", default="auto", choices=("auto", "brats", "generic", "csv"))
    p.add_argument("--betas", type=float, nargs="+", metavar="B", help="KL weights, one model each (default 0.1 1 5)")
    p.add_argument("--model", type=Path, nargs="+", default=[], metavar="MODEL", help="use these checkpoints instead of training")
    p.add_argument("--predictors", nargs="+", choices=ALL_PREDICTORS, metavar="NAME", help=f"default all: {' '.join(ALL_PREDICTORS)}")
    p.add_argument("--energy-steps", type=int, help="projection steps (default 20)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=int, help="training epochs per model (default 30)")
    budget.add_argument("--time-budget", type=float, metavar="S", help="training seconds per model (not bit-reproducible)")
    p.add_argument("--size", type=int, help="model input size (default 64)")
    p.add_argument("--n-normal", type=int, help="phantom: normal training volumes (default 10)")
    p.add_argument("--n-test", type=int, help="phantom: test volumes (default 6)")
    p.add_argument("--shape", type=int, nargs=3, metavar=("Z", "Y", "X"), help="phantom volume shape")
    p.add_argument("--fraction", type=float, help="unsupervised threshold: fraction of normal voxels above it (default 0.01)")
    p.add_argument("--device", default="cpu", help="cpu (default, reproducible), cuda, mps or auto")
    p.add_argument("--seed", type=int, default=0, help="seed of training and prediction (default 0)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: size-32 models for betas 0.1 and 5, 20 epochs, few volumes "
                        "(measured: 1.5 min on the phantom, 5.5 min with --data mni)")
    p.add_argument("--reuse", action="store_true", help="take checkpoints already in --out/models")
    p.add_argument("--overwrite", action="store_true", help="replace earlier results (and models) in --out")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace):
    """A StudyConfig from the parsed options (unset options keep the preset's values)."""
    from ..study.config import StudyConfig

    data = args.data or ("folders" if (args.test or args.normal or args.train) else "phantom")
    if data in ("phantom", "mni") and (args.test or args.normal or args.train):
        raise AnomalyError(f"--data {data}: do not give --normal/--test/--train")
    if data == "mni":
        from ..data.mni_template import INSTALL_HINT, template_available

        if not template_available():
            raise AnomalyError(f"--data mni: {INSTALL_HINT}")
    changes = {
        "data": data,
        "normal_dir": args.normal,
        "test_dir": args.test,
        "train_dir": args.train,
        "modality": args.modality,
        "layout": args.layout,
        "models": tuple(args.model),
        "seed": args.seed,
        "device": args.device,
        "reuse": args.reuse,
        "overwrite": args.overwrite,
        "plots": not args.no_plots,
    }
    optional = {
        "betas": args.betas,
        "predictors": args.predictors,
        "energy_steps": args.energy_steps,
        "size": args.size,
        "n_normal": args.n_normal,
        "n_test": args.n_test,
        "shape": args.shape,
        "normal_fraction": args.fraction,
    }
    changes.update({k: (tuple(v) if isinstance(v, list) else v) for k, v in optional.items() if v is not None})
    if args.epochs is not None:
        changes["epochs"] = args.epochs
    if args.time_budget is not None:
        changes["time_budget"], changes["epochs"] = args.time_budget, None
    try:
        if args.quick:
            return StudyConfig.quick(args.out, **changes)
        if data == "mni":
            return StudyConfig.default_realistic(args.out, **changes)
        return StudyConfig.default_phantom(args.out, **changes)
    except ValueError as exc:
        raise AnomalyError(f"benchmark: {exc}") from exc


def run(args: argparse.Namespace) -> int:
    from ..study.runner import run_study

    config = config_from_args(args)
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f} s] {msg}", flush=True)

    result = run_study(config, log)
    md = result.paths.get("results_md")
    print(f"table: {md}", file=sys.stdout)
    return 0
