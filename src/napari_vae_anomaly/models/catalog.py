"""The models a user can pick without a file dialog: bundled, in the model folder, recent,
just trained.

Qt-free so the list is testable on its own; the Detect widget's model menu
(:mod:`napari_vae_anomaly.widgets.model_menu`) shows it. Training (the GUI's Train VAE dock)
calls :func:`remember_trained` when a model is saved, so Detect offers it at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SUFFIX = ".safetensors"
MAX_RECENT = 8
MAX_FOLDER = 30  # a folder of hundreds of checkpoints would make an unusable menu

_trained: list[Path] = []  # this session's trained models, newest first


@dataclass(frozen=True)
class ModelEntry:
    """One menu entry: its group ("bundled", "trained", "recent", "folder"), label and file."""

    group: str
    label: str
    path: Path


def remember_trained(path: str | Path) -> None:
    """Record a model training just saved (newest first, no duplicates)."""
    p = Path(path).expanduser().resolve()
    if p in _trained:
        _trained.remove(p)
    _trained.insert(0, p)


def trained_models() -> list[Path]:
    return [p for p in _trained if p.is_file()]


def push_recent(recent: list[str], path: str | Path) -> list[str]:
    """``recent`` with ``path`` first (resolved, no duplicates, at most :data:`MAX_RECENT`)."""
    p = str(Path(path).expanduser().resolve())
    return [p] + [r for r in recent if r != p][: MAX_RECENT - 1]


def folder_models(folder: str | Path | None) -> list[Path]:
    """Checkpoints directly in ``folder`` (sorted by name); none if it is empty or missing."""
    if not folder:
        return []
    f = Path(folder).expanduser()
    if not f.is_dir():
        return []
    return sorted(p for p in f.iterdir() if p.suffix == SUFFIX and p.is_file())[:MAX_FOLDER]


def model_entries(model_folder: str = "", recent: list[str] | None = None) -> list[ModelEntry]:
    """Every model to offer, grouped: bundled demo, just trained, recent, model folder.

    A file appears once, in the first group that lists it; missing files are left out.
    """
    from ..errors import CheckpointError
    from .bundled import bundled_model_path

    entries: list[ModelEntry] = []
    seen: set[Path] = set()

    def add(group: str, path: Path, label: str | None = None) -> None:
        p = path.expanduser().resolve()
        if p in seen or not p.is_file():
            return
        seen.add(p)
        entries.append(ModelEntry(group, label or p.name, p))

    try:
        add("bundled", bundled_model_path(), "Demo model (bundled; brain FLAIR, 2 mm)")
    except CheckpointError:
        pass
    for p in trained_models():
        add("trained", p)
    for r in recent or []:
        add("recent", Path(r))
    for p in folder_models(model_folder):
        add("folder", p)
    return entries


def card_tooltip(path: str | Path) -> str:
    """The path and the model card's summary, for a tooltip (a reason when it is unreadable)."""
    from ..errors import AnomalyError
    from .card import summarize_card
    from .checkpoint import read_card

    try:
        summary = summarize_card(read_card(path))
    except (AnomalyError, OSError, ValueError) as exc:
        summary = f"cannot read its model card: {exc}"
    return f"{path}\n{summary}"
