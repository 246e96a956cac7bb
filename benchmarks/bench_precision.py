"""How far reduced precision moves each map, measured: the numbers behind the registry's
``reduced_precision`` flags (the rule: a predictor may run in bf16/fp16 only when its map stays
within 1e-3 of its float32 map's range).

With the bundled demo model on the MNI sample subject with lesions (``_sample_data``), every
registered predictor is computed by ``predict_volume`` in fp32, bf16 and fp16 (every flag
forced on here, so the reduced runs really run reduced) and compared with its fp32 map:

* ``err``: max |map - map_fp32| / (max - min of map_fp32), over the foreground, of the final
  volume map (resampled, median-filtered: what ``predict`` writes);
* ``slice err``: the same on the slice maps before the volume stage (the model's raw output);
* voxel AUROC of the map against the ground truth over the brain, and the wall time.

``tf32`` is float32 with TF32 convolutions, what cuDNN does by default on a GPU (10 mantissa
bits for the operands, float32 sums): real on CUDA (``exact_float32`` bypassed), emulated on a
CPU by rounding each convolution's operands (input, weight, incoming gradient) to TF32.

Run: ``python benchmarks/bench_precision.py [--device cpu|cuda] [--threads 1]``. On a CPU this
measures the numerics of the autocast paths; their speed there says nothing about a GPU's.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_vae_anomaly._sample_data import MNI_LESION_KINDS, MNI_LESION_SEED
from napari_vae_anomaly.data.realistic import make_subject
from napari_vae_anomaly.metrics.voxel import voxel_auroc
from napari_vae_anomaly.models.bundled import bundled_model_path
from napari_vae_anomaly.models.checkpoint import load_checkpoint
from napari_vae_anomaly.predictors import batch as batch_module
from napari_vae_anomaly.predictors import registry
from napari_vae_anomaly.predictors.pipeline import predict_volume, prepare_volume, slice_maps
from napari_vae_anomaly.predictors.registry import PRECISIONS, PREDICTORS, PredictorOptions

LIMIT = 1e-3  # the rule


@contextlib.contextmanager
def all_allowed() -> Iterator[None]:
    """Every predictor marked ``reduced_precision`` while measuring (restored afterwards)."""
    saved = dict(registry.PREDICTORS)
    for name, info in saved.items():
        registry.PREDICTORS[name] = replace(info, reduced_precision=True)
    try:
        yield
    finally:
        registry.PREDICTORS.update(saved)


def to_tf32(t: torch.Tensor) -> torch.Tensor:
    """``t`` rounded to TF32 (10 mantissa bits, round to nearest), as float32."""
    i = t.detach().contiguous().view(torch.int32)
    return ((i + 0x1000) & ~0x1FFF).view(torch.float32)


class _Tf32Conv(torch.autograd.Function):
    """A convolution whose forward and input-gradient pass see TF32-rounded operands."""

    @staticmethod
    def forward(ctx, x, w, b, fn, kw):
        ctx.save_for_backward(x, w, b)
        ctx.fn, ctx.kw = fn, kw
        return fn(to_tf32(x), to_tf32(w), b, **kw)

    @staticmethod
    def backward(ctx, g):
        x, w, b = ctx.saved_tensors
        with torch.enable_grad():
            xr = to_tf32(x).requires_grad_(True)
            (gx,) = torch.autograd.grad(ctx.fn(xr, to_tf32(w), b, **ctx.kw), xr, to_tf32(g))
        return gx, None, None, None, None


@contextlib.contextmanager
def tf32_convolutions(device: torch.device) -> Iterator[None]:
    """TF32 convolutions: cuDNN's own on CUDA, the emulation above elsewhere."""
    saved = batch_module.exact_float32, nn.Conv2d.forward, nn.ConvTranspose2d.forward
    batch_module.exact_float32 = lambda _dev: contextlib.nullcontext()
    if device.type == "cuda":
        before = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = True
    else:
        def conv(self, x):
            kw = {"stride": self.stride, "padding": self.padding}
            return _Tf32Conv.apply(x, self.weight, self.bias, F.conv2d, kw)

        def conv_t(self, x, output_size=None):
            kw = {"stride": self.stride, "padding": self.padding}
            return _Tf32Conv.apply(x, self.weight, self.bias, F.conv_transpose2d, kw)

        nn.Conv2d.forward, nn.ConvTranspose2d.forward = conv, conv_t
    try:
        yield
    finally:
        batch_module.exact_float32, nn.Conv2d.forward, nn.ConvTranspose2d.forward = saved
        if device.type == "cuda":
            torch.backends.cudnn.allow_tf32 = before


def rel_err(a: np.ndarray, ref: np.ndarray, region: np.ndarray) -> float:
    r = ref[region]
    span = float(r.max() - r.min()) or 1.0
    return float(np.abs(a[region] - r).max()) / span


def measure(model, subject, name: str, precision: str, options: PredictorOptions) -> dict:
    """One predictor in one precision: its volume map, slice maps and wall time."""
    device = next(model.model.parameters()).device
    tf32 = precision == "tf32"
    o = options.replace(precision="fp32" if tf32 else precision)
    with tf32_convolutions(device) if tf32 else contextlib.nullcontext():
        t0 = time.perf_counter()
        res = predict_volume(subject.volume, [model], [name], o)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        batch = prepare_volume(subject.volume, [model]).batches[0]
        raw = slice_maps(model, batch.images, batch.masks, [name], o)[name]
    return {"map": res.maps[name], "fg": res.foreground, "raw": raw,
            "raw_fg": batch.masks[:, 0] > 0,
            "s": seconds}


def table(rows: list[dict]) -> str:
    lines = ["| predictor | precision | err (volume map) | err (slice maps) | AUROC | time (s) "
             "| within 1e-3 |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        ok = "" if r["precision"] == "fp32" else ("yes" if max(r["err"], r["raw_err"]) <= LIMIT
                                                 else "**no**")
        lines.append(f"| {r['name']} | {r['precision']} | {r['err']:.2e} | {r['raw_err']:.2e} "
                     f"| {r['auroc']:.4f} | {r['s']:.2f} | {ok} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--predictors", nargs="*", default=list(PREDICTORS))
    ap.add_argument("--precisions", nargs="*", default=[*PRECISIONS[1:], "tf32"])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = load_checkpoint(bundled_model_path(), device=a.device)
    subject = make_subject(MNI_LESION_SEED, MNI_LESION_KINDS)
    truth, brain = subject.lesion_mask > 0, subject.brain_mask
    options = PredictorOptions()
    rows = []
    with all_allowed():
        for name in a.predictors:
            ref = measure(model, subject, name, "fp32", options)
            region = ref["fg"]
            raw_region = ref["raw_fg"]
            for p in ["fp32", *a.precisions]:
                got = ref if p == "fp32" else measure(model, subject, name, p, options)
                rows.append({"name": name, "precision": p, "s": got["s"],
                             "err": rel_err(got["map"], ref["map"], region),
                             "raw_err": rel_err(got["raw"], ref["raw"], raw_region),
                             "auroc": voxel_auroc(got["map"], truth, brain)})
                print(f"{name} {p}: err {rows[-1]['err']:.2e} slice err {rows[-1]['raw_err']:.2e} "
                      f"AUROC {rows[-1]['auroc']:.4f} {got['s']:.2f} s", flush=True)
    print(f"\ndevice {a.device}, {a.threads} thread(s), torch {torch.__version__}, demo model, "
          f"MNI subject seed {MNI_LESION_SEED} {subject.image.shape}\n")
    print(table(rows))


if __name__ == "__main__":
    main()
