"""The learning-rate schedule of a training run."""

from __future__ import annotations

import math

from .config import TrainConfig


class LRSchedule:
    """Learning rate per step: linear warm-up, then cosine / plateau-halving / constant."""

    def __init__(self, config: TrainConfig, total_steps: int | None) -> None:
        self.c = config
        self.total = total_steps
        self.warmup = min(config.warmup_steps, max(1, (total_steps or 10**9) // 10))
        self.factor = 1.0
        self.bad_epochs = 0

    def lr(self, step: int, elapsed: float) -> float:
        c = self.c
        base = c.lr * min(1.0, step / self.warmup) if self.warmup > 0 else c.lr
        if c.schedule == "cosine":
            fracs = []
            if self.total:
                fracs.append(step / self.total)
            if c.time_budget_s:
                fracs.append(elapsed / c.time_budget_s)
            frac = min(1.0, max(fracs)) if fracs else 0.0
            lo = c.min_lr_factor
            return base * (lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * frac)))
        if c.schedule == "plateau":
            return base * self.factor
        return base

    def epoch_end(self, improved: bool) -> None:
        if self.c.schedule != "plateau":
            return
        self.bad_epochs = 0 if improved else self.bad_epochs + 1
        if self.bad_epochs >= self.c.plateau_patience:
            self.factor = max(self.c.min_lr_factor, self.factor * 0.5)
            self.bad_epochs = 0
