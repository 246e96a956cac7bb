"""Issue 9's acceptance check, run exactly as a researcher would: the command-line tools.

For each seed: ``train`` on the realistic normal subjects with the package defaults (a time
budget, or ``--steps`` to reproduce a budget's worth of optimizer steps when several seeds
share the CPU), ``predict`` the lesion subjects with no options (the default map and mask),
``predict`` again with every single map, then score everything over brain voxels next to the
trivial baselines. Writes ``check.json`` and ``check.md`` in ``--out``.

    python benchmarks/realistic_check.py --out /tmp/check --seeds 0 --time-budget 900
    python benchmarks/realistic_check.py --out /tmp/check --seeds 0 1 2 --steps 8000 --threads 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from napari_vae_anomaly.cli.main import main as cli
from napari_vae_anomaly.data.realistic import lesion_subjects, normal_subjects
from napari_vae_anomaly.io import read_volume, write_volume
from napari_vae_anomaly.predictors.registry import DEFAULT_PREDICTORS, PREDICTORS
from napari_vae_anomaly.study.realistic_data import baseline_scores, pooled_scores

#: every map but the costly projection, from the registry
SINGLE_MAPS = tuple(n for n, info in PREDICTORS.items() if info.reference)


def write_cohort(root: Path, n_normal: int, n_test: int, contrast: str) -> tuple[list, list, list]:
    """NIfTI files of the cohort (reused when present); returns normal paths, test paths,
    and the test subjects' (truth, brain) arrays."""
    (root / "normal").mkdir(parents=True, exist_ok=True)
    (root / "test").mkdir(parents=True, exist_ok=True)
    normals, tests, truths = [], [], []
    for s in normal_subjects(n_normal, contrast):
        p = root / "normal" / f"normal_{s.seed}.nii.gz"
        if not p.exists():
            write_volume(p, s.image, s.geometry)
        normals.append(p)
    for s in lesion_subjects(n_test, contrast):
        p = root / "test" / f"case_{s.seed:03d}.nii.gz"
        if not p.exists():
            write_volume(p, s.image, s.geometry)
        tests.append(p)
        truths.append((s.lesion_mask > 0, s.brain_mask, s.image))
    return normals, tests, truths


def baselines(normals: list[Path], truths: list) -> dict[str, dict[str, float]]:
    return baseline_scores([img for _, _, img in truths], [t for t, _, _ in truths],
                           [b for _, b, _ in truths], [read_volume(p).data for p in normals])


def dice(masks: list[np.ndarray], truths: list) -> float:
    inter = sum(int((m & t & b).sum()) for m, (t, b, _) in zip(masks, truths, strict=True))
    total = sum(int((m & b).sum() + (t & b).sum()) for m, (t, b, _) in zip(masks, truths, strict=True))
    return 2 * inter / max(total, 1)


def one_seed(seed: int, a: argparse.Namespace, normals, tests, truths, log) -> dict:
    out = a.out / f"seed{seed}"
    out.mkdir(parents=True, exist_ok=True)
    model = out / "model.safetensors"
    t0 = time.perf_counter()
    if not model.exists():
        budget = ["--time-budget", str(a.time_budget)] if a.steps is None else ["--steps", str(a.steps)]
        rc = cli(["train", *map(str, normals), "--out", str(model), "--device", "cpu",
                  "--seed", str(seed), "--quiet", *budget, *a.train_args])
        assert rc == 0, f"train failed ({rc})"
    t_train = time.perf_counter() - t0
    res: dict = {"seed": seed, "train_s": round(t_train, 1)}
    t0 = time.perf_counter()
    d_default = out / "predict_default"
    if not (d_default / "done").exists():
        assert cli(["predict", *map(str, tests), "--model", str(model), "--out-dir", str(d_default),
                    "--no-progress", "--overwrite", *a.predict_args]) == 0
        (d_default / "done").write_text("ok")
    res["predict_default_s"] = round(time.perf_counter() - t0, 1)
    d_all = out / "predict_all"
    if not (d_all / "done").exists():
        args = [x for n in SINGLE_MAPS for x in ("--predictor", n)]
        assert cli(["predict", *map(str, tests), "--model", str(model), "--out-dir", str(d_all),
                    "--no-progress", "--overwrite", *args, *a.predict_args]) == 0
        (d_all / "done").write_text("ok")
    cases = [p.name.removesuffix(".nii.gz") for p in tests]
    tr = [t for t, _, _ in truths]
    br = [b for _, b, _ in truths]

    def load(folder: Path, key: str) -> list[np.ndarray]:
        return [np.asarray(read_volume(folder / f"{c}_{key}.nii.gz").data) for c in cases]

    default_key = "ensemble" if len(DEFAULT_PREDICTORS) > 1 else DEFAULT_PREDICTORS[0]
    res["default map"] = pooled_scores(load(d_default, default_key), tr, br)
    res["default mask dice"] = dice([m > 0 for m in load(d_default, "mask")], truths)
    for n in DEFAULT_PREDICTORS:
        res[f"member {n}"] = pooled_scores(load(d_default, n), tr, br)
    for n in SINGLE_MAPS:
        res[f"map {n}"] = pooled_scores(load(d_all, n), tr, br)
    log(json.dumps(res))
    return res


def summarize(rows: list[dict], base: dict) -> str:
    keys = [k for k in rows[0] if isinstance(rows[0][k], dict)]
    lines = ["| map | AUROC | AUPRC | oracle Dice (best over thresholds) |", "|---|---|---|---|"]
    for k in keys:
        vals = {m: [r[k][m] for r in rows] for m in ("auroc", "auprc", "oracle_dice")}
        cell = lambda v: f"{np.mean(v):.3f} ± {np.std(v):.3f}"  # noqa: E731
        lines.append(f"| {k} | {cell(vals['auroc'])} | {cell(vals['auprc'])} | {cell(vals['oracle_dice'])} |")
    for k, v in base.items():
        lines.append(f"| {k} | {v['auroc']:.3f} | {v['auprc']:.3f} | {v['oracle_dice']:.3f} |")
    d = [r["default mask dice"] for r in rows]
    best = [max(r[k]["auprc"] for k in keys if k.startswith("map ")) for r in rows]
    lines += ["", f"default mask (threshold from normal data only): Dice {np.mean(d):.3f} ± {np.std(d):.3f}",
              f"best single map AUPRC per seed: {', '.join(f'{b:.3f}' for b in best)}",
              f"seeds: {[r['seed'] for r in rows]}; training seconds: {[r['train_s'] for r in rows]}"]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    budget = ap.add_mutually_exclusive_group()
    budget.add_argument("--time-budget", type=float, default=900.0)
    budget.add_argument("--steps", type=int, default=None)
    ap.add_argument("--n-normal", type=int, default=24)
    ap.add_argument("--n-test", type=int, default=12)
    ap.add_argument("--contrast", default="flair")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--train-args", nargs=argparse.REMAINDER, default=[])
    ap.add_argument("--predict-args", nargs="*", default=[])
    a = ap.parse_args(argv)
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    log = lambda s: print(s, flush=True)  # noqa: E731
    normals, tests, truths = write_cohort(a.out / "data", a.n_normal, a.n_test, a.contrast)
    base = baselines(normals, truths)
    rows = [one_seed(s, a, normals, tests, truths, log) for s in a.seeds]
    (a.out / f"check_{'_'.join(map(str, a.seeds))}.json").write_text(
        json.dumps({"rows": rows, "baselines": base}, indent=1))
    md = summarize(rows, base)
    (a.out / f"check_{'_'.join(map(str, a.seeds))}.md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
