"""Training in a napari thread worker around ``training.train_iter``.

The generator yields every batch's ``TrainProgress`` (so napari's worker can quit between
batches) and returns the core's ``TrainResult``. File inputs are read by the core inside the
worker thread, so a large DICOM folder never freezes the viewer; layer data is copied in the
main thread by the widget before the job starts (layers must only be touched there).
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Sequence
from typing import Any


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

