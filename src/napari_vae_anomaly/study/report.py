"""Writing a study's outputs: results.md / .csv / .json, per_case.csv and the PNG plots."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import plots
from .table import ALL, BASELINE, ENSEMBLE, TABLE_COLUMNS, curves_of

HEADERS = {
    "model": "model",
    "beta": "beta",
    "predictor": "predictor",
    "auroc": "AUROC",
    "auprc": "AUPRC",
    "threshold": "threshold",
    "dice": "Dice (unsup. thr.)",
    "oracle_dice": "oracle Dice",
    "slice_auroc_mean": "slice AUROC (mean)",
    "slice_auroc_max": "slice AUROC (max)",
    "seconds_per_volume": "s / volume",
}


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _cell(key: str, v: Any) -> str:
    if _missing(v):
        return "" if key == "beta" else "n/a"
    if key == "threshold":
        return f"{v:.4g}"
    if key == "seconds_per_volume":
        return f"{v:.2f}"
    if key == "beta":
        return f"{v:g}"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The results table in Markdown (best value of each metric column in bold)."""
    cols = list(TABLE_COLUMNS)
    best = {}
    for c in ("auroc", "auprc", "dice", "oracle_dice", "slice_auroc_mean", "slice_auroc_max"):
        vals = [r[c] for r in rows if not _missing(r.get(c))]
        best[c] = max(vals) if vals else None
    lines = ["| " + " | ".join(HEADERS[c] for c in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        cells = []
        for c in cols:
            s = _cell(c, r.get(c))
            if c in best and best[c] is not None and r.get(c) == best[c]:
                s = f"**{s}**"
            cells.append(s)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(TABLE_COLUMNS), lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({c: "" if _missing(r.get(c)) else r.get(c) for c in TABLE_COLUMNS})
    return buf.getvalue()


def _json(result: Any) -> str:
    rows = [{k: None if _missing(v) else v for k, v in r.items()} for r in result.rows]
    d = {
        "rows": rows,
        "notes": result.notes,
        "seconds": result.seconds,
        "config": result.config.to_dict() if result.config is not None else None,
    }
    return json.dumps(d, indent=2, allow_nan=False) + "\n"


def _plots(result: Any, evals: dict, example: dict, mapper: Any, out: Path) -> dict[str, Path]:
    keys = list(evals)
    multi = any(k[0] == ALL for k in keys)
    main = ALL if multi else mapper.models[0].label
    chosen = [k for k in keys if k[0] in (main, BASELINE)]
    curves = {f"{k[1]}" if k[0] != BASELINE else f"baseline {k[1]}": curves_of(evals[k]) for k in chosen}
    first = evals[chosen[0]].pool
    prevalence = first.n_positive / max(first.n_voxels, 1)
    who = "model ensemble across betas" if multi else main
    paths = {
        "roc_pr": plots.save_roc_pr(curves, out / "roc_pr.png", f"pooled test voxels ({who})", prevalence)
    }
    bar_rows = [{**r, "label": f"{r['model']} / {r['predictor']}"} for r in result.rows]
    paths["bars"] = plots.save_bar_chart(bar_rows, out / "bars.png", title="pooled over test volumes")
    if example:
        case = example["case"]
        best_model = max(
            (m.label for m in mapper.models),
            key=lambda lab: _nan0(result.row(lab, ENSEMBLE if len(mapper.names) > 1 else mapper.names[0])["auprc"]),
        )
        shown = {p: example["maps"][(best_model, p)] for p in mapper.names}
        if (ALL, ENSEMBLE) in example["maps"]:
            shown["ensemble (all)"] = example["maps"][(ALL, ENSEMBLE)]
        shown["intensity_bright"] = example["maps"][(BASELINE, "intensity_bright")]
        shown["mean_deviation"] = example["maps"][(BASELINE, "mean_deviation")]
        img = np.asarray(case.volume.data)
        paths["examples"] = plots.save_examples(
            img, case.truth, shown, out / "examples.png", axis=mapper.axis,
            title=f"{case.name}, maps of {best_model} (ground truth in cyan)",
        )
    return paths


def _nan0(v: Any) -> float:
    return -1.0 if _missing(v) else float(v)


def write_outputs(
    result: Any, evals: dict, example: dict, mapper: Any, log: Callable[[str], None] = print
) -> dict[str, Path]:
    """Write every output into ``result.config.out``; returns name -> path."""
    cfg = result.config
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    if cfg.plots:
        log("writing plots ...")
        paths.update(_plots(result, evals, example, mapper, out))
    md = [
        "# Study results",
        "",
        f"Data: {cfg.data}. Models: {', '.join(m.label for m in mapper.models)}. "
        f"Predictors: {', '.join(mapper.names)} (energy steps {cfg.energy_steps}). "
        f"Seed {cfg.seed}. Run time {result.seconds:.0f} s.",
        "",
        markdown_table(result.rows),
        *[f"- {n}" for n in result.notes],
        "",
        *[f"![{k}]({p.name})" for k, p in paths.items()],
        "",
    ]
    files = {
        "results.md": "\n".join(md),
        "results.csv": _csv(result.rows),
        "results.json": _json(result),
        "per_case.csv": result.per_case.to_csv(),
    }
    from ..io.atomic import atomic_write_text

    for name, text in files.items():
        atomic_write_text(out / name, text)
        paths[name.replace(".", "_")] = out / name
    return paths
