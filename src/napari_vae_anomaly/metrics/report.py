"""A table of metrics (rows of named values plus notes) and its Markdown, CSV and JSON forms.

Writers never overwrite an existing file unless ``overwrite=True``; they check every target
before writing any, so a refused run leaves no half-written report behind. Undefined values
(NaN) are written as empty CSV cells, ``null`` in JSON and ``n/a`` in Markdown.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import AnomalyError

#: preferred column order; other keys follow in the order first seen
COLUMNS: tuple[str, ...] = (
    "predictor",
    "case",
    "voxels",
    "lesion_voxels",
    "auroc",
    "auprc",
    "threshold",
    "dice",
    "oracle_dice",
    "oracle_threshold",
    "slice_auroc_mean",
    "slice_auroc_max",
    "abnormal_slices",
    "normal_slices",
)
FORMATS: tuple[str, ...] = ("md", "csv", "json")


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _fmt(v: Any, digits: int) -> str:
    if _missing(v):
        return "n/a"
    if isinstance(v, float):
        return (
            f"{v:.{digits}g}" if abs(v) >= 1e4 or (v != 0 and abs(v) < 1e-3) else f"{v:.{digits}f}"
        )
    return str(v)


@dataclass
class MetricsResult:
    """Rows of metrics (one per case, plus ``pooled`` and ``mean`` rows) and notes on them."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def columns(self) -> list[str]:
        seen = {k for row in self.rows for k in row}
        extra = [k for row in self.rows for k in row if k not in COLUMNS]
        return [c for c in COLUMNS if c in seen] + list(dict.fromkeys(extra))

    def extend(self, other: MetricsResult) -> None:
        self.rows.extend(other.rows)
        self.notes.extend(n for n in other.notes if n not in self.notes)

    def row(self, case: str, predictor: str | None = None) -> dict[str, Any]:
        """The row of ``case`` (e.g. "pooled"), for ``predictor`` when several are tabulated."""
        for r in self.rows:
            if r.get("case") == case and (predictor is None or r.get("predictor") == predictor):
                return r
        raise KeyError(f"no row for case {case!r} predictor {predictor!r}")

    # ------------------------------------------------------------------ text forms
    def to_markdown(self, digits: int = 4) -> str:
        cols = self.columns
        lines = [
            "| " + " | ".join(cols) + " |",
            "|" + "|".join("---" for _ in cols) + "|",
        ]
        for r in self.rows:
            lines.append("| " + " | ".join(_fmt(r.get(c), digits) for c in cols) + " |")
        if self.notes:
            lines.append("")
            lines.extend(f"- {n}" for n in self.notes)
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.columns, lineterminator="\n")
        w.writeheader()
        for r in self.rows:
            w.writerow({c: "" if _missing(r.get(c)) else r.get(c) for c in self.columns})
        return buf.getvalue()

    def to_dict(self) -> dict[str, Any]:
        rows = [{k: None if _missing(v) else v for k, v in r.items()} for r in self.rows]
        return {"columns": self.columns, "rows": rows, "notes": list(self.notes)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MetricsResult:
        rows = [{k: math.nan if v is None else v for k, v in r.items()} for r in d["rows"]]
        return cls(rows, list(d.get("notes", [])))

    # ------------------------------------------------------------------ files
    def write(
        self,
        out_dir: str | Path,
        stem: str = "metrics",
        overwrite: bool = False,
        formats: tuple[str, ...] = FORMATS,
    ) -> dict[str, Path]:
        """Write ``<stem>.md/.csv/.json`` into ``out_dir`` (created); returns format -> path."""
        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise AnomalyError(f"--out {out}: exists and is not a folder")
        paths = {f: out / f"{stem}.{f}" for f in formats}
        if not overwrite:
            existing = [str(p) for p in paths.values() if p.exists()]
            if existing:
                raise AnomalyError(f"refusing to overwrite {', '.join(existing)} (use --overwrite)")
        from ..io.atomic import atomic_write_text

        text = {"md": self.to_markdown, "csv": self.to_csv, "json": self.to_json}
        try:
            out.mkdir(parents=True, exist_ok=True)
            for f, p in paths.items():
                atomic_write_text(p, text[f]())
        except OSError as exc:
            raise AnomalyError(f"cannot write metrics to {out}: {exc.strerror or exc}") from exc
        return paths
