"""Plain-text rendering of a checkpoint's model card (no Qt here, so it is easy to test).

The card is a JSON-like dict written by training. The summary at the top pulls out what a
user checks first (architecture, beta, likelihood, preprocessing, training data, best
validation loss, versions) wherever the card keeps it; every other entry follows, with long
lists (loss curves, per-volume tables) shortened.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

# section title -> candidate top-level keys of the card, in order of preference
SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Architecture", ("architecture", "model", "vae", "config")),
    ("Preprocessing", ("preprocessing", "preprocess")),
    ("Training data", ("training_data", "data", "train_data")),
    ("Training", ("training", "train", "train_config")),
    ("Results", ("results", "best", "metrics")),
    ("Versions", ("versions", "environment", "software")),
)
SUMMARY_KEYS = (
    "beta", "likelihood", "size", "features", "latent", "best_val", "best_val_loss",
    "best_epoch", "stopped_reason", "seed",
)
# long entries shown as a count only (anywhere in the card)
HIDDEN_KEYS = ("history", "loss_curves", "curves", "normal_stats", "score_stats")
MAX_LIST = 6


def find_value(card: Mapping[str, Any], key: str) -> Any:
    """The first value stored under ``key`` in the card, searched breadth-first."""
    queue: list[Any] = [card]
    while queue:
        node = queue.pop(0)
        if isinstance(node, Mapping):
            if key in node:
                return node[key]
            queue.extend(v for v in node.values() if isinstance(v, Mapping))
    return None


def _fmt_scalar(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _fmt_list(values: list[Any]) -> str:
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        if len(values) <= MAX_LIST:
            return "[" + ", ".join(_fmt_scalar(v) for v in values) + "]"
        return (
            f"{len(values)} values, first {_fmt_scalar(values[0])}, last {_fmt_scalar(values[-1])}, "
            f"min {_fmt_scalar(min(values))}"
        )
    if len(values) <= MAX_LIST and all(not isinstance(v, Mapping | list) for v in values):
        return ", ".join(_fmt_scalar(v) for v in values)
    return ""


def _lines(value: Any, indent: int) -> Iterable[str]:
    pad = "  " * indent
    if isinstance(value, Mapping):
        for k, v in value.items():
            if k in HIDDEN_KEYS and isinstance(v, Mapping | list | tuple):
                yield f"{pad}{k}: ({len(v)} entries)"
            elif isinstance(v, Mapping):
                yield f"{pad}{k}:"
                yield from _lines(v, indent + 1)
            elif isinstance(v, list | tuple):
                short = _fmt_list(list(v))
                if short or not v:
                    yield f"{pad}{k}: {short}"
                else:
                    yield f"{pad}{k}: ({len(v)} entries)"
                    for item in list(v)[:MAX_LIST]:
                        yield from _lines(item, indent + 1) if isinstance(item, Mapping) else [
                            f"{pad}  - {_fmt_scalar(item)}"
                        ]
                        if isinstance(item, Mapping):
                            yield f"{pad}  -"
                    if len(v) > MAX_LIST:
                        yield f"{pad}  ... {len(v) - MAX_LIST} more"
            else:
                yield f"{pad}{k}: {_fmt_scalar(v)}"
    else:
        yield f"{pad}{_fmt_scalar(value)}"


def format_model_card(card: Mapping[str, Any], path: str | None = None) -> str:
    """Human-readable text of a model card: a summary line block, then every section."""
    out: list[str] = []
    if path:
        out.append(f"model: {path}")
    try:
        from ..models.card import summarize_card

        summary = summarize_card(dict(card))
    except Exception:  # noqa: BLE001 - a foreign card still gets the generic view below
        summary = ""
    if summary:
        out.extend(summary.splitlines())
        out.append("")
    for key in SUMMARY_KEYS:
        value = find_value(card, key)
        if value is not None:
            shown = _fmt_list(list(value)) if isinstance(value, list | tuple) else _fmt_scalar(value)
            out.append(f"{key}: {shown}")
    used: set[str] = set()
    for title, keys in SECTIONS:
        for key in keys:
            if key in card and key not in used:
                used.add(key)
                out.append("")
                out.append(f"[{title}]")
                out.extend(_lines(card[key], 1))
                break
    rest = {k: v for k, v in card.items() if k not in used and k not in SUMMARY_KEYS}
    if rest:
        out.append("")
        out.append("[Other]")
        out.extend(_lines(rest, 1))
    return "\n".join(out)
