"""All requested maps of one batch of slices, and chunked execution that survives OOM.

``compute_maps`` shares work between predictors: it computes the union of the requested
registry entries' shared terms once (``rec`` and the five gradient predictors come from a single
forward pass and at most two backward passes; ``energy``'s projection runs only when asked
for) and then calls each entry's map function; it knows no predictor by name. ``run_chunked`` splits a long stack of slices into chunks that bound memory
and halves the chunk when the device runs out of memory.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np
import torch

from ..models.vae import VAE
from .gradients import frozen
from .precision import exact_float32
from .registry import PredictorOptions, check_names, precision_for, precision_note, terms_needed
from .terms import compute_terms

T = TypeVar("T")


def model_device(model: torch.nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def compute_maps(
    model: VAE,
    x: torch.Tensor | np.ndarray,
    names: Sequence[str],
    options: PredictorOptions | None = None,
    mask: torch.Tensor | np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Maps ``name -> float32 array (N, S, S)`` for a batch ``x`` (N, C, S, S).

    ``mask`` (N, 1, S, S), optional, marks foreground pixels: the energy projection moves only
    those. Model parameters are frozen during the call and restored afterwards.
    ``options.precision`` is used only when every one of ``names`` allows it (the registry's
    ``reduced_precision``); otherwise the batch runs in float32 (:func:`precision_for`), with
    a warning. float32 is IEEE float32 on CUDA too (:func:`~.precision.exact_float32`).
    """
    names = check_names(list(names))
    o = options or PredictorOptions()
    used, _ = precision_for(names, o.precision)
    if used != o.precision:
        warnings.warn(str(precision_note(names, o.precision)), stacklevel=2)
        o = o.replace(precision=used)
    dev = model_device(model)
    dtype = next(model.parameters()).dtype
    xt = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x).to(dev, dtype)
    m = None if mask is None else torch.as_tensor(np.asarray(mask) if not torch.is_tensor(mask) else mask).to(dev)
    with frozen(model), exact_float32(dev):
        terms = compute_terms(model, xt, terms_needed(names), o, mask=m)
        out = {n: terms.map(n) for n in names}
    return {n: out[n].detach().to("cpu", torch.float32).numpy() for n in names}


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA (and MPS) out-of-memory errors, which a smaller chunk may avoid."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def run_chunked(
    fn: Callable[[slice], T],
    n: int,
    chunk: int,
    on_chunk: Callable[[slice, T], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[T]:
    """Call ``fn(slice)`` over ``range(n)`` in chunks; halve the chunk on out-of-memory.

    A chunk that fails for lack of memory is retried at half the size (down to 1, then the
    error propagates); later chunks keep the smaller size. ``on_chunk`` sees each result as
    it arrives (progress); ``should_stop`` is polled between chunks and ends the loop early.
    """
    results: list[T] = []
    start = 0
    size = max(1, int(chunk))
    while start < n:
        if should_stop is not None and should_stop():
            break
        sl = slice(start, min(n, start + size))
        try:
            res = fn(sl)
        except Exception as exc:
            if not is_out_of_memory(exc) or size == 1:
                raise
            size = max(1, size // 2)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        results.append(res)
        if on_chunk is not None:
            on_chunk(sl, res)
        start = sl.stop
    return results
