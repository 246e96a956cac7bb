"""Training in a napari thread worker around ``training.train_iter``.

The generator yields every batch's ``TrainProgress`` (so napari's worker can quit between
batches) and returns the core's ``TrainResult``. File inputs are read by the core inside the
worker thread, so a large DICOM folder never freezes the viewer; layer data is copied in the
main thread by the widget before the job starts (layers must only be touched there).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Sequence
from typing import Any

from ._base import Job, start_job


def training_job(
    config: Any,
    inputs: Sequence[Any],
    masks: Sequence[Any] | None = None,
    *,
    stop: threading.Event,
) -> Generator[Any, None, Any]:
    """Train on ``inputs`` (paths and/or ``Volume`` objects); yields every batch."""
    from ..training.trainer import train_iter

    result = yield from train_iter(config, list(inputs), masks=masks, stop=stop)
    return result


def start_training(
    config: Any,
    inputs: Sequence[Any],
    masks: Sequence[Any] | None = None,
    *,
    on_progress: Callable[[Any], None] | None = None,
    on_done: Callable[[Any], None] | None = None,
    on_error: Callable[[BaseException], None] | None = None,
    on_finish: Callable[[], None] | None = None,
) -> Job:
    """Start :func:`training_job` in a napari thread worker and return its :class:`Job`."""
    return start_job(
        training_job,
        config,
        list(inputs),
        masks,
        on_yield=on_progress,
        on_return=on_done,
        on_error=on_error,
        on_finish=on_finish,
        description="Training VAE",
    )
