"""The model card: a JSON-able dict stored in every checkpoint, and its readable summary.

Keys written by training (all optional for :func:`summarize_card`, so hand-made cards work):
``name``, ``created``, ``architecture`` (``VAEConfig.to_dict()``), ``beta``, ``likelihood``,
``preprocessing`` (``PreprocessConfig.to_dict()``), ``training`` (config, data summary,
``history`` of per-epoch losses, best epoch/value, stop reason, device, seed),
``normal_stats`` (score statistics of the held-out normal slices) and ``environment``.
"""

from __future__ import annotations

import datetime as _dt
import platform
import sys
from typing import Any


def environment_info() -> dict[str, str]:
    """Package, torch and Python versions: what is needed to reproduce or debug a model."""
    import torch

    from .. import __version__

    return {
        "package": f"napari-vae-anomaly {__version__}",
        "torch": str(torch.__version__),
        "python": sys.version.split()[0],
        "platform": platform.platform(terse=True),
    }


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _profile_line(profile: dict[str, Any]) -> str:
    """Size and spacing of the training volumes (z, y, x): what a scan should resemble."""
    def span(pair: list[Any], unit: str = "") -> str:
        lo, hi = (" x ".join(f"{v:.3g}" for v in side) for side in pair)
        return f"{lo}{unit}" if lo == hi else f"{lo} to {hi}{unit}"

    try:
        return (f"Training volumes: {span(profile['shape'])} voxels, spacing "
                f"{span(profile['spacing'], ' mm')}")
    except (TypeError, ValueError, KeyError, IndexError):
        return "Training volumes: profile unreadable"


def summarize_card(card: dict[str, Any]) -> str:
    """A few readable lines (for the GUI's model card view and ``--verbose`` CLI output)."""
    lines: list[str] = []
    arch = card.get("architecture", {}) or {}
    pre = card.get("preprocessing", {}) or {}
    tr = card.get("training", {}) or {}
    data = tr.get("data", {}) or {}
    if card.get("name"):
        lines.append(f"Model: {card['name']}")
    if arch:
        lines.append(
            f"VAE {arch.get('size')}x{arch.get('size')}, features {arch.get('features')}, "
            f"latent {arch.get('latent')}, {card.get('likelihood', arch.get('likelihood'))} "
            f"likelihood, beta {_fmt(card.get('beta', arch.get('beta')))}"
        )
    if pre:
        lines.append(
            "Preprocessing: "
            + ", ".join(f"{k}={_fmt(v)}" for k, v in pre.items() if not isinstance(v, dict))
        )
    if data:
        lines.append(
            f"Trained on {data.get('volumes', '?')} volume(s), {data.get('train_slices', '?')} "
            f"training + {data.get('val_slices', '?')} validation slices "
            f"(split by {data.get('split', '?')})"
        )
    profile = data.get("profile") or {}
    if isinstance(profile, dict) and profile.get("shape") and profile.get("spacing"):
        lines.append(_profile_line(profile))
    hist = tr.get("history") or []
    if hist:
        last = hist[-1]
        lines.append(
            f"Epochs: {len(hist)}, best validation loss {_fmt(tr.get('best_val'))} "
            f"at epoch {tr.get('best_epoch')}, last train loss {_fmt(last.get('train_loss'))}"
        )
    if tr.get("stopped_reason"):
        lines.append(f"Ended by: {tr['stopped_reason']} on {tr.get('device', '?')}")
    env = card.get("environment", {}) or {}
    if env:
        lines.append(f"Made with {env.get('package')}, torch {env.get('torch')}")
    if card.get("created"):
        lines.append(f"Created: {card['created']}")
    return "\n".join(lines)
