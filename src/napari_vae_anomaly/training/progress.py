"""What the training loop reports: one :class:`TrainProgress` per batch, a :class:`TrainResult`
at the end (the CLI's progress bar and the Train widget's loss plot read the same items)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..models.checkpoint import LoadedModel


@dataclass
class TrainResult:
    """What a finished (or stopped) run produced."""

    path: Path | None  # best checkpoint (None when no ``out`` was given, or on ranks > 0)
    history: list[dict[str, Any]]  # one dict per epoch, see TrainProgress / card
    best_val: float | None
    best_epoch: int | None
    epochs_run: int  # epochs of this run (a partial last epoch counts)
    steps: int
    stopped_reason: str  # completed | early_stopping | time_budget | stopped
    elapsed_s: float
    device: str
    world_size: int = 1
    card: dict[str, Any] = field(default_factory=dict)
    loaded: LoadedModel | None = None  # the best model, eval mode, on the training device


@dataclass
class TrainProgress:
    """One batch of training. Validation fields are set on the batch that ends an epoch.

    ``kl`` values are the raw KL (nats per slice); the loss adds ``beta * kl``.
    """

    epoch: int  # 1-based, continues a resumed checkpoint's numbering
    step: int  # 1-based global batch counter of this run
    total_steps: int | None  # None when only a time budget bounds the run
    loss: float  # batch mean of rec + beta * kl
    rec: float
    kl: float
    beta: float
    lr: float
    slices_per_s: float  # training throughput of the current epoch (all ranks)
    elapsed_s: float
    epochs: int | None = None  # last epoch number this run aims for
    time_budget_s: float | None = None
    epoch_end: bool = False
    val_loss: float | None = None
    val_rec: float | None = None
    val_kl: float | None = None
    best_val: float | None = None
    improved: bool = False  # the checkpoint was rewritten at this step
    done: bool = False  # last item: carries ``result``
    message: str = ""
    result: TrainResult | None = None

    @property
    def train_loss(self) -> float:
        return self.loss

    @property
    def train_rec(self) -> float:
        return self.rec

    @property
    def train_kl(self) -> float:
        return self.kl

    @property
    def fraction(self) -> float | None:
        """Progress 0..1 (steps, or elapsed time against the budget); None if unknown."""
        parts = []
        if self.total_steps:
            parts.append(self.step / self.total_steps)
        if self.time_budget_s:
            parts.append(self.elapsed_s / self.time_budget_s)
        return min(1.0, max(parts)) if parts else None
