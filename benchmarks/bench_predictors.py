"""Predictor benchmark: batched predictors vs naive per-slice references, and mask updates.

On a 155x240x240 phantom volume and a VAE of size 128 (reference architecture, random weights:
speed does not depend on training) it measures

* each predictor alone over the whole volume (``predict_volume``, preprocessing included);
* all gradient predictors together (rec, rec_grad, kl_grad, elbo_grad, combi, combi_add: one
  forward + two backward passes per batch) vs a naive reference (per-slice loop, one forward
  and one backward pass per predictor);
* the energy projection (50 steps) on chunks of slices vs slice by slice;
* peak resident memory above the baseline during each stage (sampled from /proc);
* ``make_mask`` (threshold + small-component removal), the live threshold-slider update.

Run: ``.venv/bin/python benchmarks/bench_predictors.py [--quick] [--device cpu|cuda]``.
Slow references are timed on a subset of slices (``--naive-slices``; the batched projection
on ``--energy-slices``) and extrapolated to the whole volume; the table says so where it did.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace

import numpy as np
import torch

from napari_vae_anomaly.models.vae import VAE, VAEConfig
from napari_vae_anomaly.predictors.batch import compute_maps, run_chunked
from napari_vae_anomaly.predictors.energy import energy_projection
from napari_vae_anomaly.predictors.gradients import frozen
from napari_vae_anomaly.predictors.registry import GRADIENT_PREDICTORS, PREDICTORS, PredictorOptions

ALL_GRAD = ["rec", *GRADIENT_PREDICTORS]


class PeakRSS:
    """Peak resident set size (MiB) above the start value, sampled every 5 ms in a thread."""

    def __enter__(self) -> PeakRSS:
        try:  # hand freed heap back to the OS first, so reuse of old pages does not hide a peak
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
        self._stop = threading.Event()
        self.base = self.peak = self._rss()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    @staticmethod
    def _rss() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._rss())

    @property
    def mib(self) -> float:
        return self.peak - self.base


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """(seconds, peak MiB): GPU memory via torch's counters, else RSS."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        return time.perf_counter() - t0, (torch.cuda.max_memory_allocated() - base) / 2**20
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
    return dt, mem.mib


# --------------------------------------------------------------------------- naive references
def naive_gradient_maps(model: VAE, x: torch.Tensor, options: PredictorOptions) -> None:
    """Per slice, per predictor: its own forward pass and its own backward pass."""
    from napari_vae_anomaly.predictors.smoothing import minmax, smooth2d

    sm = lambda m: smooth2d(m, options.sigma, options.kernel)  # noqa: E731
    with frozen(model):
        for i in range(x.shape[0]):
            xi = x[i : i + 1]
            for name in ALL_GRAD:
                v = xi.detach().requires_grad_(True)
                with torch.enable_grad():
                    mu, logvar = model.encode(v)
                    rec = model.pixel_rec(v, model.decode(mu))
                    kl = model.kl(mu, logvar)
                    if name == "rec":
                        continue
                    target = {"rec_grad": rec.sum(), "elbo_grad": rec.sum() + model.beta * kl.sum()}
                    (g,) = torch.autograd.grad(target.get(name, kl.sum()), v)
                m = sm(g.abs())
                if name == "combi":
                    m = rec.detach() * sm(minmax(g.abs()))
                elif name == "combi_add":
                    m = minmax(m) + minmax(rec.detach())


def batched_gradient_maps(model: VAE, x: torch.Tensor, options: PredictorOptions) -> None:
    run_chunked(lambda sl: compute_maps(model, x[sl], ALL_GRAD, options), x.shape[0], options.chunk)


def energy_batched(model: VAE, x: torch.Tensor, m: torch.Tensor, options: PredictorOptions) -> None:
    with frozen(model):
        run_chunked(lambda sl: energy_projection(model, x[sl], options, m[sl]), x.shape[0], options.chunk)


def energy_per_slice(model: VAE, x: torch.Tensor, m: torch.Tensor, options: PredictorOptions) -> None:
    with frozen(model):
        for i in range(x.shape[0]):
            energy_projection(model, x[i : i + 1], options, m[i : i + 1])


# --------------------------------------------------------------------------- main
def energy_rows(args, model, x, msk, opts, row, n: int, n_naive: int) -> dict[str, float]:
    """The projection batched, batched with early stop, and per slice; ratios to per slice."""
    ne = min(n, n_naive)
    nb = min(n, args.energy_slices or (16 if args.quick else n))
    mid = slice((n - nb) // 2, (n - nb) // 2 + nb)
    scale = f", timed on {nb} slices, x{n / nb:.1f}" if nb < n else f", {n} slices"
    dt_eb, mem_eb = timed(lambda: energy_batched(model, x[mid], msk[mid], opts), device_of(x))
    dt_eb *= n / nb
    row(f"energy projection T={opts.energy_steps}, batched", dt_eb, mem_eb,
        f"chunk {opts.chunk}" + scale)
    early = opts.replace(energy_tol=args.energy_tol)
    used: list[float] = []

    def run_early() -> None:
        with frozen(model):
            for sl in (slice(i, min(nb, i + opts.chunk)) for i in range(0, nb, opts.chunk)):
                used.extend(energy_projection(model, x[mid][sl], early, msk[mid][sl]).steps.tolist())

    dt_ee, mem_ee = timed(run_early, device_of(x))
    dt_ee *= n / nb
    mean_steps = sum(used[-nb:]) / nb
    row(f"same, early stop (tol {args.energy_tol:g})", dt_ee, mem_ee,
        f"mean {mean_steps:.1f} of {opts.energy_steps} steps per slice" + scale)
    dt_es, mem_es = timed(lambda: energy_per_slice(model, x[:ne], msk[:ne], opts), device_of(x))
    dt_es_full = dt_es * n / ne
    row(f"energy projection T={opts.energy_steps}, per slice", dt_es_full, mem_es,
        f"timed on {ne} slices, x{n / ne:.1f}")
    return {"energy projection": dt_es_full / dt_eb, "energy early stop": dt_es_full / dt_ee}


def median_rows(score: np.ndarray, fg: np.ndarray, device: torch.device,
                rows: list[tuple[str, str, str, str]]) -> None:
    """The volume stage's 5x5x5 median of one map: scipy on the CPU (what ``predict`` uses
    there) and torch on ``device`` (what it uses on a GPU); the values are the same."""
    from napari_vae_anomaly.postprocessing.filters import median_filter_in_place

    for where, dev in (("scipy, cpu", None), (f"torch, {device}", device)):
        m = score.astype(np.float32)
        if dev is not None and dev.type == "cuda":
            median_filter_in_place(m, 5, fg, dev)  # warm-up (kernels, allocator)
            m = score.astype(np.float32)
        t0 = time.perf_counter()
        if dev is None:
            median_filter_in_place(m, 5, fg)
        else:
            from napari_vae_anomaly.postprocessing.filters import bounding_box, median_filter_torch

            box = bounding_box(fg, margin=2)
            m[box] = median_filter_torch(m[box], 5, dev)
        rows.append((f"median 5x5x5 of one map ({where})",
                     f"{time.perf_counter() - t0:.2f}", "-", "the foreground's box"))


def device_of(x: torch.Tensor) -> torch.device:
    return x.device


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="smaller volume (40x240x240), 8 naive slices, 16 batched energy slices")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--chunk", type=int, default=32)
    ap.add_argument("--energy-steps", type=int, default=50)
    ap.add_argument("--naive-slices", type=int, default=None,
                    help="slices timed for the per-slice references (default 24, quick 8)")
    ap.add_argument("--energy-slices", type=int, default=None,
                    help="slices projected in the batched energy run (default all; quick 16)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--energy-tol", type=float, default=1e-3,
                    help="early-stop tolerance of the extra energy row (default 1e-3)")
    ap.add_argument("--model", default=None,
                    help="a trained checkpoint instead of random weights (its size and "
                         "preprocessing), e.g. the bundled demo model")
    ap.add_argument("--mni", action="store_true",
                    help="the MNI sample subject with lesions instead of the phantom")
    ap.add_argument("--energy-only", action="store_true",
                    help="only the energy projection rows (batched, early stop, per slice)")
    return ap.parse_args(argv)


def volume_and_model(args: argparse.Namespace, device: torch.device):
    """(volume-like, its shape, model, preprocessing) the benchmark runs on."""
    from napari_vae_anomaly.data.phantom import make_phantom
    from napari_vae_anomaly.preprocessing import PreprocessConfig

    shape = (40, 240, 240) if args.quick else (155, 240, 240)
    phantom = make_phantom(seed=3, shape=shape)
    if args.mni:
        from napari_vae_anomaly._sample_data import MNI_LESION_KINDS, MNI_LESION_SEED
        from napari_vae_anomaly.data.realistic import make_subject

        subject = make_subject(MNI_LESION_SEED, MNI_LESION_KINDS)
        phantom = SimpleNamespace(image=subject.image, volume=subject.volume,
                                  geometry=subject.volume.geometry)
        shape = subject.image.shape
    torch.manual_seed(0)
    if args.model:
        from napari_vae_anomaly.models.checkpoint import load_checkpoint

        trained = load_checkpoint(args.model, device=device)
        model, pre = trained.model.eval(), trained.preprocess
        args.size = model.config.size
    else:
        model = VAE(VAEConfig(size=args.size)).to(device).eval()
        pre = PreprocessConfig(size=args.size)
    return phantom, shape, model, pre


def main(argv: list[str] | None = None) -> str:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    from napari_vae_anomaly.postprocessing.mask import make_mask
    from napari_vae_anomaly.predictors.pipeline import predict_volume
    from napari_vae_anomaly.preprocessing import preprocess_volume

    n_naive = args.naive_slices or (8 if args.quick else 24)
    phantom, shape, model, pre = volume_and_model(args, device)
    loaded = SimpleNamespace(model=model, preprocess=pre, name="bench", path=None)
    opts = PredictorOptions(chunk=args.chunk, energy_steps=args.energy_steps)
    batch = preprocess_volume(phantom.image, pre, training=False)
    x = torch.as_tensor(batch.images, device=device)
    msk = torch.as_tensor(batch.masks, device=device)
    n = x.shape[0]
    rows: list[tuple[str, str, str, str]] = []
    ratios: dict[str, float] = {}

    def row(what: str, secs: float, mib: float, note: str = "") -> None:
        rows.append((what, f"{secs:.2f}", f"{mib:.0f}", note))
        print(f"{what}: {secs:.2f} s, {mib:.0f} MiB {note}", flush=True)

    # each predictor over the whole volume, pipeline included (energy: see the projection rows)
    for name in [p for p, info in PREDICTORS.items() if info.reference and not args.energy_only]:
        dt, mem = timed(lambda name=name: predict_volume(phantom.volume, [loaded], [name], opts), device)
        row(f"predict_volume `{name}`", dt, mem, f"{n} slices, preprocessing included")

    if args.energy_only:
        ratios.update(energy_rows(args, model, x, msk, opts, row, n, n_naive))
        return "\n".join(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows) + "".join(
            f"\n{k}: {v:.1f}x" for k, v in ratios.items())
    # all gradient predictors together vs naive
    dt_b, mem_b = timed(lambda: batched_gradient_maps(model, x, opts), device)
    row("all 6 rec/gradient maps, batched (1 fwd + 2 bwd per chunk)", dt_b, mem_b, f"{n} slices, chunk {opts.chunk}")
    xs = x[:n_naive]
    dt_n, mem_n = timed(lambda: naive_gradient_maps(model, xs, opts), device)
    dt_n_full = dt_n * n / n_naive
    row("same, naive (per slice, 1 fwd + 1 bwd per predictor)", dt_n_full, mem_n,
        f"timed on {n_naive} slices, x{n / n_naive:.1f}")
    ratios["gradient predictors"] = dt_n_full / dt_b

    ratios.update(energy_rows(args, model, x, msk, opts, row, n, n_naive))

    # live threshold update
    score = predict_volume(phantom.volume, [loaded], ["rec"], opts).maps["rec"]
    fg = score > 0
    qs = np.quantile(score[fg], [0.95, 0.97, 0.98, 0.99, 0.995, 0.999])
    make_mask(score, float(qs[0]), fg, min_voxels=8)
    times = []
    for q in qs:
        t0 = time.perf_counter()
        make_mask(score, float(q), fg, min_voxels=8, spacing=phantom.geometry.spacing)
        times.append(time.perf_counter() - t0)
    t_mask = statistics.median(times)
    rows.append(("make_mask (threshold + remove < 8 voxels), median of 6", f"{t_mask * 1000:.0f} ms", "-",
                 f"{shape[0]}x{shape[1]}x{shape[2]}"))
    t0 = time.perf_counter()
    make_mask(score, float(qs[3]), fg)
    rows.append(("make_mask (threshold only)", f"{(time.perf_counter() - t0) * 1000:.0f} ms", "-", ""))
    median_rows(score, fg, device, rows)

    head = (f"Volume {shape[0]}x{shape[1]}x{shape[2]}, VAE size {args.size} "
            f"(features {list(model.config.level_features())}, latent {model.config.latent}), "
            f"device {device}, torch threads {torch.get_num_threads()}.")
    head += " Trained model: " + args.model if args.model else " Random weights."
    lines = [head, "", "| stage | time (s) | peak memory (MiB) | note |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    lines += ["", "| speed-up | measured | goal |", "|---|---|---|",
              f"| gradient predictors, batched vs naive | {ratios['gradient predictors']:.1f}x | >= 3x |",
              f"| energy projection, batched vs per slice | {ratios['energy projection']:.1f}x | >= 5x |",
              f"| same, with early stop (tol {args.energy_tol:g}) | {ratios['energy early stop']:.1f}x | >= 5x |",
              f"| threshold update (make_mask) | {t_mask * 1000:.0f} ms | < 150 ms |"]
    text = "\n".join(lines)
    print("\n" + text)
    return text


if __name__ == "__main__":
    main()
