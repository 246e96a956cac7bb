"""The model's passes in reduced precision (autocast), everything around them in float32.

Why: on a GPU the convolutions are most of a map's cost, and bf16/fp16 runs them on faster
units. Only the network is autocast: :class:`AutocastModel` runs ``encode``/``decode`` under
``torch.autocast`` and hands their outputs back as float32, so the losses (``pixel_rec``,
``kl``, the energy), their sums, the input gradients and every map are float32. Backward
passes follow the dtypes autocast chose for the forward ops (PyTorch records them), so they
need no context of their own.

fp16 has a narrow range: input gradients of a few 1e-5 (the KL term's, far from the lesion)
fall below its smallest normal number and lose digits or flush to zero. :func:`input_grad`
therefore scales the float32 loss by :data:`FP16_SCALE` before the backward pass and divides
the float32 gradient afterwards; a gradient that overflowed (inf or nan) is recomputed with a
16x smaller scale, down to 1. bf16 has float32's range and needs no scale.

Which predictors may use this is the registry's ``reduced_precision`` flag (measured in
``benchmarks/bench_precision.py``; docs/benchmarks.md, GPU). On the bundled model no predictor
stays within 1e-3 of its float32 map in bf16 or fp16, so every flag is off and maps are made in
float32.

float32 on CUDA: cuDNN runs float32 convolutions in TF32 by default (10 mantissa bits, like
fp16); in a CPU emulation of it the maps moved by 1.9e-3 (rec) to 8.6e-2 (energy) of their
range, as far as in fp16.
:func:`exact_float32` turns TF32 off while fp32 maps are computed, so ``--device cuda`` gives the
CPU's maps.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from .registry import PRECISIONS

DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}
#: the fp16 loss scale: 2**12 lifts 1e-7 gradients into fp16's normal range and leaves room
#: for activations' gradients up to ~16 before 65504 (an overflow retries at 2**8, 2**4, 1)
FP16_SCALE = 2.0**12
_BACKOFF = 16.0


class AutocastModel:
    """A VAE whose ``encode``/``decode`` run under autocast to ``dtype`` and return float32;
    every other attribute (``kl``, ``pixel_rec``, ``beta``...) is the model's own."""

    def __init__(self, model: Any, dtype: torch.dtype) -> None:
        self.model = model
        self.dtype = dtype
        p = next(model.parameters(), None)
        self.device_type = p.device.type if p is not None else "cpu"

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(self.device_type, dtype=self.dtype):
            mu, logvar = self.model.encode(x)
        return mu.float(), logvar.float()

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=self.dtype):
            out = self.model.decode(z)
        return out.float()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


def with_precision(model: Any, precision: str) -> Any:
    """``model`` itself for fp32 (the passes are untouched), else its :class:`AutocastModel`."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return model if precision == "fp32" else AutocastModel(model, DTYPES[precision])


def _scale_of(model: Any) -> float:
    return FP16_SCALE if isinstance(model, AutocastModel) and model.dtype == torch.float16 else 1.0


def input_grad(model: Any, loss: torch.Tensor, x: torch.Tensor,
               retain_graph: bool = False) -> torch.Tensor:
    """∂loss/∂x for a scalar float32 ``loss``: plain ``torch.autograd.grad`` unless ``model``
    runs in fp16, where the loss is scaled (see the module doc) and the gradient unscaled in
    float32."""
    scale = _scale_of(model)
    if scale == 1.0:
        (g,) = torch.autograd.grad(loss, x, retain_graph=retain_graph)
        return g
    while True:
        (g,) = torch.autograd.grad(loss * scale, x, retain_graph=retain_graph or scale > 1.0)
        if scale <= 1.0 or bool(torch.isfinite(g).all()):
            return g.float() / scale
        scale = max(1.0, scale / _BACKOFF)


@contextmanager
def exact_float32(device: torch.device) -> Iterator[None]:
    """IEEE float32 convolutions on CUDA for the duration (cuDNN's TF32 off, then restored);
    nothing on other devices. The flag is global: a training running meanwhile in another
    thread computes in full float32 for that time too (slower, not less accurate)."""
    if device.type != "cuda":
        yield
        return
    cudnn = torch.backends.cudnn
    try:
        before = bool(cudnn.allow_tf32)
    except RuntimeError:  # TF32 was set per operator through torch's newer API: use it too
        conv = cudnn.conv  # type: ignore[attr-defined]  # torch >= 2.9 only
        old = conv.fp32_precision
        conv.fp32_precision = "ieee"
        try:
            yield
        finally:
            conv.fp32_precision = old
        return
    cudnn.allow_tf32 = False
    try:
        yield
    finally:
        cudnn.allow_tf32 = before
