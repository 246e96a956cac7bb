"""Sweep training/preprocessing/predictor settings on the realistic (MNI152) benchmark.

Each configuration is the project's defaults plus dotted overrides (``vae.features``,
``preprocess.size``, ``augment.enabled``, ``schedule`` ...), trained on the normal subjects
for a fixed number of optimizer steps (``--steps``, so a GPU run reproduces what a CPU run
reaches in its time budget) or for ``--budget-s`` seconds, then scored on the lesion subjects
with every predictor, post-processing variants and the trivial baselines beside them.

    python benchmarks/realistic_sweep.py --config base '{}' --config wide \
        '{"vae.features": [32, 64, 128, 256]}' --seeds 0 1 2 --steps 3000 --out sweep.json
    python benchmarks/realistic_sweep.py --throughput --config base '{}'   # CPU steps/s

Results: one JSON row per (config, seed, map, variant) with AUROC / AUPRC / oracle Dice and the
Dice at thresholds from held-out normal subjects.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from napari_vae_anomaly.data.realistic import normal_subjects
from napari_vae_anomaly.models.vae import VAEConfig
from napari_vae_anomaly.predictors.pipeline import predict_volume
from napari_vae_anomaly.predictors.registry import PredictorOptions
from napari_vae_anomaly.preprocessing import PreprocessConfig
from napari_vae_anomaly.study.realistic_data import baseline_scores, pooled_scores, realistic_cohort
from napari_vae_anomaly.training.config import AugmentConfig, TrainConfig
from napari_vae_anomaly.training.trainer import train

MAPS = ("rec", "rec_grad", "kl_grad", "elbo_grad", "combi")
ENSEMBLES = ("elbo_grad+rec+combi", "elbo_grad+rec", "elbo_grad+combi", "rec+combi", "elbo_grad+rec_grad+rec+combi")


def _no_post() -> dict:
    """Turn the pipeline's own map post-processing off: the sweep applies its variants itself."""
    fields = PredictorOptions.__dataclass_fields__
    return {k: 0 for k in ("median", "erode") if k in fields}


NO_POST = _no_post()


def build_config(over: dict, seed: int, steps: int | None, budget: float | None, device: str) -> TrainConfig:
    parts: dict[str, dict] = {"vae": {}, "preprocess": {}, "augment": {}, "train": {}}
    for k, v in over.items():
        head, _, tail = k.partition(".")
        if tail:
            parts[head][tail] = v
        else:
            parts["train"][k] = v
    vae = VAEConfig(**parts["vae"])
    pre = PreprocessConfig(**{"size": vae.size, **parts["preprocess"]})
    aug = AugmentConfig(**parts["augment"])
    tr = {"epochs": None, "time_budget_s": budget, "max_steps": steps, **parts["train"]}
    return TrainConfig(vae=vae, preprocess=pre, augment=aug, seed=seed, device=device,
                       amp=False, max_reference=64, **tr)


def median3d(a: np.ndarray, size: int) -> np.ndarray:
    """3-D median filter; on a GPU when one is present (scipy's is slow on large pools)."""
    import torch

    if not torch.cuda.is_available():
        return ndi.median_filter(a, size)
    t = torch.as_tensor(a, device="cuda")
    r = size // 2
    p = torch.nn.functional.pad(t[None, None], (r,) * 6, mode="replicate")[0, 0]
    u = p.unfold(0, size, 1).unfold(1, size, 1).unfold(2, size, 1)
    return u.reshape(*a.shape, -1).median(dim=-1).values.cpu().numpy()


def erode(mask: np.ndarray, n: int) -> np.ndarray:
    if n <= 0:
        return mask
    st = ndi.generate_binary_structure(3, 1)
    return ndi.binary_erosion(mask, st, iterations=n)


def evaluate(loaded, cohort, normals_ref, names, options, log) -> list[dict]:
    rows = []
    per = {n: [] for n in names}
    truths, brains = [], []
    t = time.perf_counter()
    for s in cohort.test:
        res = predict_volume(s.volume, [loaded], names, options)
        for n in names:
            per[n].append(res.maps[n])
        truths.append(s.lesion_mask)
        brains.append(s.brain_mask)
    ref = {n: [] for n in names}
    ref_fg = []
    for s in normals_ref:
        res = predict_volume(s.volume, [loaded], names, options)
        for n in names:
            ref[n].append(res.maps[n])
        ref_fg.append(s.brain_mask)
    log(f"  maps in {time.perf_counter() - t:.1f}s")
    processed: dict[tuple, tuple] = {}
    for n in names:
        for er in (0, 1):
            for med in (0, 5):
                maps = [np.where(erode(b, er), m, 0.0) for m, b in zip(per[n], brains, strict=True)]
                rmaps = [np.where(erode(b, er), m, 0.0) for m, b in zip(ref[n], ref_fg, strict=True)]
                if med:
                    maps = [median3d(m, med) for m in maps]
                    rmaps = [median3d(m, med) for m in rmaps]
                processed[(n, er, med)] = (maps, rmaps)
    ensembles = [tuple(e.split("+")) for e in ENSEMBLES if all(x in names for x in e.split("+"))]
    for members in ensembles:
        for er, med in ((1, 5),):
            ens, rens = None, None
            for n in members:
                maps, rmaps = processed[(n, er, med)]
                refv = np.concatenate([m[b] for m, b in zip(rmaps, ref_fg, strict=True)])
                mu, sd = float(refv.mean()), float(refv.std()) or 1.0
                z = [(m - mu) / sd for m in maps]
                rz = [(m - mu) / sd for m in rmaps]
                ens = z if ens is None else [a + b for a, b in zip(ens, z, strict=True)]
                rens = rz if rens is None else [a + b for a, b in zip(rens, rz, strict=True)]
            processed[("+".join(members), er, med)] = (ens, rens)
    for (n, er, med), (maps, rmaps) in processed.items():
        sc = pooled_scores(maps, truths, brains)
        refv = np.concatenate([m[b] for m, b in zip(rmaps, ref_fg, strict=True)])
        for frac in (0.005, 0.01, 0.02):
            thr = float(np.quantile(refv, 1 - frac))
            inter = sum(int(((m > thr) & (t > 0) & b).sum()) for m, t, b in zip(maps, truths, brains, strict=True))
            tot = sum(int(((m > thr) & b).sum() + ((t > 0) & b).sum()) for m, t, b in zip(maps, truths, brains, strict=True))
            sc[f"dice@{frac}"] = 2 * inter / max(tot, 1)
        rows.append({"map": n, "erode": er, "median": med, **sc})
    return rows


def baselines(cohort) -> list[dict]:
    scores = baseline_scores([s.image for s in cohort.test], [s.lesion_mask for s in cohort.test],
                             [s.brain_mask for s in cohort.test], [s.image for s in cohort.normal])
    return [{"map": name, "erode": 0, **v} for name, v in scores.items()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", nargs=2, action="append", metavar=("NAME", "JSON"), required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--budget-s", type=float, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n-normal", type=int, default=24)
    ap.add_argument("--n-test", type=int, default=12)
    ap.add_argument("--n-ref", type=int, default=3)
    ap.add_argument("--contrast", default="flair")
    ap.add_argument("--maps", nargs="+", default=list(MAPS))
    ap.add_argument("--throughput", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--no-baselines", action="store_true")
    ap.add_argument("--cohort-cache", default=None, help="pickle of the generated cohort")
    ap.add_argument("--only-cache", action="store_true", help="generate the cohort cache and stop")
    a = ap.parse_args(argv)
    log = lambda s: print(s, flush=True)  # noqa: E731
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    import pickle

    cache = Path(a.cohort_cache) if a.cohort_cache else None
    if cache is not None and cache.exists():
        cohort, refs = pickle.loads(cache.read_bytes())
    else:
        cohort = realistic_cohort(a.n_normal, a.n_test, a.contrast)
        refs = list(normal_subjects(a.n_ref, a.contrast, seed0=2000))
        if cache is not None:
            cache.write_bytes(pickle.dumps((cohort, refs)))
    if a.only_cache:
        return 0
    log(f"data {time.perf_counter() - t0:.1f}s")
    vols = [s.volume for s in cohort.normal]
    rows: list[dict] = []
    if not a.throughput and not a.no_baselines:
        rows += [{"config": "baseline", "seed": 0, **r} for r in baselines(cohort)]
        for r in rows:
            log(json.dumps(r))
    for name, js in a.config:
        over = json.loads(js)
        opt_over = over.pop("predict", {})
        for seed in a.seeds:
            if a.throughput:
                cfg = build_config(over, seed, None, 20.0, a.device)
                res = train(cfg, vols)
                h = res.history
                log(json.dumps({"config": name, "steps": res.steps, "elapsed": res.elapsed_s,
                                "steps_per_s": res.steps / max(1e-9, sum(x["time_s"] for x in h))}))
                break
            cfg = build_config(over, seed, a.steps, a.budget_s, a.device)
            t = time.perf_counter()
            res = train(cfg, vols)
            tt = time.perf_counter() - t
            log(f"{name} seed {seed}: {res.steps} steps, {res.epochs_run} epochs, {tt:.0f}s, "
                f"best val {res.best_val:.1f} at {res.best_epoch}, {res.stopped_reason}")
            options = PredictorOptions(**{**NO_POST, **opt_over})
            for r in evaluate(res.loaded, cohort, refs, a.maps, options, log):
                row = {"config": name, "seed": seed, "steps": res.steps, "train_s": round(tt, 1),
                       "best_val": res.best_val, **r}
                rows.append(row)
                if r["erode"] in (0, 1) and r["median"] in (0, 5):
                    log(json.dumps(row))
            if a.out:
                Path(a.out).write_text(json.dumps(rows, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
