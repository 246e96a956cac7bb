"""The training loop: a generator that yields progress every batch, used by CLI and widget.

All slices sit in one tensor on the training device and are augmented there in batches, so
the loop never waits for a data loader. Validation runs on held-out normal slices at the end
of every epoch (z = mu, so it is deterministic); whenever it improves, the checkpoint is
rewritten atomically, which is why stopping at any batch keeps the best model so far.

Resuming takes the weights, architecture, preprocessing and loss history of a checkpoint;
the optimizer and schedule start fresh (checkpoints are model files to share and hold no
optimizer state), and ``epochs`` counts the *additional* epochs.

The run itself (setup, step, validation, end of epoch, finish, best-model keeper) is
:class:`~.run.TrainingRun`; the progress items are in :mod:`.progress`.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import torch

from .. import distributed
from .config import TrainConfig
from .progress import TrainProgress, TrainResult
from .run import TrainingRun

__all__ = ["TrainProgress", "TrainResult", "train", "train_iter"]


def train_iter(
    config: TrainConfig,
    inputs: Sequence[Any],
    masks: Sequence[Any] | None = None,
    stop: threading.Event | Any | None = None,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    overwrite: bool | None = None,
) -> Generator[TrainProgress, None, TrainResult]:
    """Train, yielding :class:`TrainProgress` every batch; the last item has ``done`` and
    ``result`` set, and the generator also *returns* the :class:`TrainResult`.

    ``inputs``: paths, folders, globs and/or :class:`~napari_vae_anomaly.io.Volume` objects of
    normal scans; ``masks``: one lesion mask (path/array/Volume/None) per volume - only
    lesion-free slices are used. ``stop`` is checked before every batch. ``out`` (or
    ``config.out``) is where the best checkpoint goes. Under ``torchrun`` this runs DDP.
    """
    ctx = distributed.setup(config.device)
    try:
        result = yield from TrainingRun(ctx, config, inputs, masks, stop, out, resume, overwrite).run()
    finally:
        ctx.close()
        if ctx.device.type == "cuda":  # hand the training buffers back to the driver
            gc.collect()
            torch.cuda.empty_cache()
    return result


def train(config: TrainConfig, inputs: Sequence[Any], masks: Sequence[Any] | None = None,
          stop: Any = None, out: str | Path | None = None, resume: str | Path | None = None,
          overwrite: bool | None = None) -> TrainResult:
    """Run :func:`train_iter` to the end and return its result."""
    result = None
    for progress in train_iter(config, inputs, masks, stop, out, resume, overwrite):
        result = progress.result or result
    assert result is not None
    return result
