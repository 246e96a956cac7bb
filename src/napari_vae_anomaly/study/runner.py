"""``run_study``: train a beta sweep, run every predictor, ensembles and baselines, tabulate.

For every model (one per beta, or given checkpoints) and every predictor, each test volume is
run through the same volume pipeline a user gets (``predict_volume``), one predictor at a time
so the time column is that predictor's own cost. On top come

* per model, the **predictor ensemble** (mean of the per-volume z-scored maps of its
  predictors; ``predictors.ensemble``),
* per predictor, the **model ensemble** across betas (row model ``all``), and the ensemble of
  everything (``all`` / ``ensemble``), each timed as the sum of its members,
* the **baselines** (bright and dark intensity, deviation from the mean normal slice).

Thresholds are unsupervised: the score exceeded by ``normal_fraction`` of the foreground voxels
of the *reference* normal volumes, which go through exactly the same code as test volumes (so
the per-volume normalization of ensembles matches). Metrics are pooled over the test volumes
(``metrics.DatasetEvaluator``): AUROC, AUPRC, Dice at that threshold, the oracle Dice (best
threshold picked on the test labels: an upper bound, labelled as such) and slice AUROC.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import AnomalyError
from ..metrics import DatasetEvaluator, MetricsResult
from .baselines import MeanSliceDeviation, intensity_map, relative_positions
from .config import StudyConfig
from .phantom_data import Case, StudyData, load_study_data
from .report import write_outputs
from .table import ALL, BASELINE, BASELINES, ENSEMBLE, OUTPUTS, TABLE_COLUMNS, Key

if TYPE_CHECKING:
    from ..models.checkpoint import LoadedModel


@dataclass
class Model:
    label: str
    beta: float
    loaded: LoadedModel


@dataclass
class StudyResult:
    """The table (one pooled row per model x predictor, ensembles and baselines) and files."""

    rows: list[dict[str, Any]]
    per_case: MetricsResult
    notes: list[str]
    paths: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0
    config: StudyConfig | None = None

    def row(self, model: str, predictor: str) -> dict[str, Any]:
        for r in self.rows:
            if r["model"] == model and r["predictor"] == predictor:
                return r
        raise KeyError(f"no row for model {model!r} predictor {predictor!r}")

    def numbers(self) -> list[dict[str, Any]]:
        """The rows without the time column (what a rerun with the same seed must reproduce)."""
        return [{k: v for k, v in r.items() if k != "seconds_per_volume"} for r in self.rows]


# --------------------------------------------------------------------------- set-up
def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - third-party code may use the global state
    torch.manual_seed(seed)


def _check_out(config: StudyConfig) -> None:
    out = config.out
    if out.exists() and not out.is_dir():
        raise AnomalyError(f"--out {out}: exists and is not a folder")
    existing = [str(out / f) for f in OUTPUTS if (out / f).exists()]
    if existing and not config.overwrite:
        raise AnomalyError(f"--out {out}: holds results already ({existing[0]}); use --overwrite")


def _beta_label(beta: float) -> str:
    return f"beta={beta:g}"


def _train_config(config: StudyConfig, beta: float, path: Path) -> Any:
    from ..models.vae import VAEConfig
    from ..training.config import TrainConfig

    vae = VAEConfig(size=config.size, features=config.features, latent=config.latent, beta=beta)
    return TrainConfig(
        vae=vae,
        epochs=config.epochs,
        time_budget_s=config.time_budget,
        batch_size=config.batch_size,
        seed=config.seed,
        device=config.device,
        out=path,
        overwrite=True,
    )


def obtain_models(config: StudyConfig, data: StudyData, log: Callable[[str], None]) -> list[Model]:
    """Given checkpoints, or one trained (or reused) per beta under ``out/models``."""
    from ..models.checkpoint import load_checkpoint

    if config.models:
        models = []
        for p in config.models:
            loaded = load_checkpoint(p, config.device)
            models.append(Model(loaded.name, float(loaded.config.beta), loaded))
        labels = [m.label for m in models]
        for i, m in enumerate(models):
            if labels.count(m.label) > 1:
                m.label = f"{m.label}_{i}"
        return models
    from ..training.trainer import train

    folder = config.out / "models"
    models = []
    for beta in config.betas:
        path = folder / f"beta_{beta:g}.safetensors"
        if path.exists() and config.reuse:
            log(f"[{_beta_label(beta)}] reusing {path}")
        elif path.exists() and not config.overwrite:
            raise AnomalyError(f"{path}: exists; use --reuse to take it or --overwrite to retrain")
        else:
            folder.mkdir(parents=True, exist_ok=True)
            log(f"[{_beta_label(beta)}] training on {len(data.train)} normal volumes ...")
            t0 = time.perf_counter()
            _seed_everything(config.seed)
            result = train(_train_config(config, beta, path), data.train, masks=data.train_masks)
            path = Path(getattr(result, "path", path) or path)
            log(f"[{_beta_label(beta)}] trained in {time.perf_counter() - t0:.0f} s -> {path}")
        loaded = load_checkpoint(path, config.device)
        if abs(float(loaded.config.beta) - beta) > 1e-12:
            raise AnomalyError(f"{path}: holds beta {loaded.config.beta}, expected {beta}")
        models.append(Model(_beta_label(beta), beta, loaded))
    return models


def fit_mean_slice(models: list[Model], data: StudyData, axis: int, bands: int = 4) -> MeanSliceDeviation:
    """The mean-deviation baseline fitted on the training slices in the model's layout.

    ``bands`` mean images, one per quarter of the brain's extent along the slicing axis.
    """
    from ..preprocessing import foreground_mask, preprocess_volume

    cfg = models[0].loaded.preprocess
    images, masks, positions = [], [], []
    for i, v in enumerate(data.train):
        arr = np.asarray(v.data)
        fg = foreground_mask(arr, getattr(cfg, "foreground", "auto"))
        exclude = None if data.train_masks is None else data.train_masks[i]
        b = preprocess_volume(arr, cfg, mask=fg, training=True, exclude_mask=exclude)
        images.append(b.images)
        masks.append(b.masks)
        positions.append(relative_positions(b.indices, fg, axis))
    return MeanSliceDeviation(bands).fit(
        np.concatenate(images), np.concatenate(masks), np.concatenate(positions)
    )


# --------------------------------------------------------------------------- maps of one case
class CaseMapper:
    """All maps (model x predictor, ensembles, baselines) of one volume, with timings."""

    def __init__(self, config: StudyConfig, models: list[Model], mean_slice: MeanSliceDeviation):
        from ..predictors.registry import PredictorOptions

        self.config = config
        self.models = models
        self.mean_slice = mean_slice
        self.names = list(config.predictors)
        from ..predictors.registry import DEFAULT_PREDICTORS

        self.options = PredictorOptions(energy_steps=config.energy_steps, seed=config.seed)
        # the ensemble has the default membership (maps that only dilute, kl_grad and the
        # projection on the realistic benchmark, stay out); all names when none is default
        self.ensemble_names = [p for p in self.names if p in DEFAULT_PREDICTORS] or list(self.names)
        self.preprocess = models[0].loaded.preprocess
        self.axis = int(getattr(self.preprocess, "axis", 0))

    def keys(self) -> list[Key]:
        keys: list[Key] = []
        for m in self.models:
            keys += [(m.label, p) for p in self.names]
            if len(self.names) > 1:
                keys.append((m.label, ENSEMBLE))
        if len(self.models) > 1:
            keys += [(ALL, p) for p in self.names]
            keys.append((ALL, ENSEMBLE))
        keys += [(BASELINE, b) for b in BASELINES]
        return keys

    def __call__(self, case: Case) -> tuple[dict[Key, np.ndarray], np.ndarray, dict[Key, float]]:
        from ..predictors.ensemble import ensemble_maps
        from ..predictors.pipeline import predict_volume
        from ..preprocessing import foreground_mask

        data = np.asarray(case.volume.data)
        fg = foreground_mask(data, getattr(self.preprocess, "foreground", "auto"))
        maps: dict[Key, np.ndarray] = {}
        secs: dict[Key, float] = {}
        for m in self.models:
            for p in self.names:
                _seed_everything(self.config.seed)
                t0 = time.perf_counter()
                res = predict_volume(case.volume, [m.loaded], [p], self.options, ensemble="zscore")
                secs[(m.label, p)] = time.perf_counter() - t0
                maps[(m.label, p)] = res.maps[p]
        groups: dict[Key, list[Key]] = {}
        members_p = self.ensemble_names
        for m in self.models:
            if len(self.names) > 1:
                groups[(m.label, ENSEMBLE)] = [(m.label, p) for p in members_p]
        if len(self.models) > 1:
            for p in self.names:
                groups[(ALL, p)] = [(m.label, p) for m in self.models]
            groups[(ALL, ENSEMBLE)] = [(m.label, p) for m in self.models for p in members_p]
        by_label = {m.label: m.loaded for m in self.models}
        for key, members in groups.items():
            t0 = time.perf_counter()
            refs: list[Any] = [getattr(by_label[k[0]], "normal_reference", None) for k in members]
            if all(r is not None and r.matches(self.options, [k[1]]) for r, k in zip(refs, members, strict=True)):
                stats = [r.stats(k[1]) for r, k in zip(refs, members, strict=True)]
                maps[key] = ensemble_maps([maps[k] for k in members], fg, "reference", stats)
            else:
                maps[key] = ensemble_maps([maps[k] for k in members], fg, "zscore")
            secs[key] = sum(secs[k] for k in members) + time.perf_counter() - t0
        maps.update(self._baselines(data, fg, secs))
        return maps, fg, secs

    def _baselines(self, data: np.ndarray, fg: np.ndarray, secs: dict[Key, float]):
        from ..preprocessing import from_slices, normalize_intensity, preprocess_volume

        out: dict[Key, np.ndarray] = {}
        t0 = time.perf_counter()
        norm = normalize_intensity(data, fg, self.preprocess)
        t_norm = time.perf_counter() - t0
        for pol, name in (("bright", BASELINES[0]), ("dark", BASELINES[1])):
            t0 = time.perf_counter()
            out[(BASELINE, name)] = intensity_map(norm, fg, pol)
            secs[(BASELINE, name)] = t_norm + time.perf_counter() - t0
        t0 = time.perf_counter()
        batch = preprocess_volume(data, self.preprocess, mask=fg, training=False)
        pos = relative_positions(batch.indices, fg, self.axis)
        d = self.mean_slice.score(batch.images, batch.masks, pos)
        vol = np.asarray(from_slices(d, batch, fill=0.0), np.float32)
        out[(BASELINE, BASELINES[2])] = np.where(fg, vol, 0.0).astype(np.float32)
        secs[(BASELINE, BASELINES[2])] = time.perf_counter() - t0
        return out


# --------------------------------------------------------------------------- the study
def reference_thresholds(
    mapper: CaseMapper, cases: list[Case], fraction: float, log: Callable[[str], None]
) -> dict[Key, float]:
    """Per key, the score exceeded by ``fraction`` of the reference normal foreground voxels."""
    from ..postprocessing.threshold import threshold_at_fraction

    pooled: dict[Key, list[np.ndarray]] = {}
    for i, case in enumerate(cases):
        log(f"reference {i + 1}/{len(cases)}: {case.name}")
        maps, fg, _ = mapper(case)
        use = fg if case.exclude is None else fg & ~case.exclude
        for k, m in maps.items():
            pooled.setdefault(k, []).append(m[use])
    if not pooled:
        raise AnomalyError("no normal reference volume to set the unsupervised thresholds on")
    return {k: threshold_at_fraction(np.concatenate(v), fraction) for k, v in pooled.items()}


def _row(model: str, beta: float | None, predictor: str, pooled: dict[str, Any], sec: float):
    row = {"model": model, "beta": beta, "predictor": predictor}
    for c in TABLE_COLUMNS[3:-1]:
        row[c] = pooled.get(c, math.nan)
    row["seconds_per_volume"] = sec
    return row


def run_study(config: StudyConfig, log: Callable[[str], None] = print) -> StudyResult:
    """Run the whole study described by ``config``; write the table and plots to ``config.out``."""
    t_start = time.perf_counter()
    _check_out(config)
    _seed_everything(config.seed)
    data = load_study_data(config, log)
    log(data.description)
    models = obtain_models(config, data, log)
    mapper = CaseMapper(config, models, MeanSliceDeviation())
    mapper.mean_slice = fit_mean_slice(models, data, mapper.axis)
    thresholds = reference_thresholds(mapper, data.reference, config.normal_fraction, log)
    keys = mapper.keys()
    evals = {
        k: DatasetEvaluator(f"{k[0]} / {k[1]}", thresholds[k], mapper.axis, seed=config.seed)
        for k in keys
    }
    secs: dict[Key, list[float]] = {k: [] for k in keys}
    example: dict[str, Any] = {}
    for i, case in enumerate(data.test):
        t0 = time.perf_counter()
        maps, fg, sec = mapper(case)
        assert case.truth is not None  # test cases are labelled
        for k in keys:
            evals[k].add(case.name, maps[k], case.truth, fg)
            secs[k].append(sec[k])
        if not example:
            example = {"case": case, "maps": maps, "fg": fg}
        log(f"test {i + 1}/{len(data.test)}: {case.name} ({time.perf_counter() - t0:.1f} s)")
    betas = {m.label: m.beta for m in models}
    rows, per_case, notes = [], MetricsResult(), list(data.notes)
    for k in keys:
        res = evals[k].result()
        per_case.extend(MetricsResult([r for r in res.rows if r["case"] not in ("pooled", "mean")], res.notes))
        rows.append(_row(k[0], betas.get(k[0]), k[1], res.row("pooled"), float(np.mean(secs[k]))))
    notes += _standard_notes(config)
    result = StudyResult(rows, per_case, notes, config=config)
    result.seconds = time.perf_counter() - t_start
    result.paths = write_outputs(result, evals, example, mapper, log)
    log(f"done in {result.seconds:.0f} s; results in {config.out}")
    return result


def _standard_notes(config: StudyConfig) -> list[str]:
    return [
        f"threshold: unsupervised, exceeded by {100 * config.normal_fraction:g}% of the normal "
        "reference foreground voxels; dice is at that threshold, pooled over the test volumes",
        "oracle_dice: best Dice over all thresholds picked on the test labels themselves; an "
        "upper bound, not a result a method can claim",
        "ensembles: mean of the default members' maps (all predictors when none is a "
        "default), each normalized with its model's normal-reference statistics (per-volume "
        "z-score for models without them); model 'all' = across the betas; their time is the "
        "sum of their members'",
        "slice_auroc_*: slice-level detection from each slice's mean / max score (slices with "
        "> 10 lesion voxels abnormal, none normal)",
    ]


def load_rows(path: str | Path) -> list[dict[str, Any]]:
    """The table rows of a results.json written by a study."""
    return json.loads(Path(path).read_text(encoding="utf-8"))["rows"]
