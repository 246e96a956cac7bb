"""Training throughput: slices/s of the full training pipeline vs the model's bare train step.

Full pipeline = ``train_iter`` on phantom volumes (shuffling, indexing the on-device slice
tensor, batched augmentation, forward, loss, backward, Adam, per-batch progress); the time of
each non-validation batch is measured between yields. Bare step = forward + loss + backward +
Adam on one fixed tensor, same model and batch. A ratio near 1 means the data pipeline costs
nothing. Writes a Markdown table to stdout; ``--append-docs`` adds it to docs/benchmarks.md
under "Training throughput".

    python benchmarks/bench_training.py [--sizes 64 128] [--device auto] [--append-docs]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

from napari_vae_anomaly.data.phantom import make_phantom
from napari_vae_anomaly.models.vae import VAE, VAEConfig
from napari_vae_anomaly.preprocessing import PreprocessConfig
from napari_vae_anomaly.training.config import TrainConfig
from napari_vae_anomaly.training.devices import resolve_device
from napari_vae_anomaly.training.trainer import train_iter

SECTION = "## Training throughput"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def bare_step(size: int, batch: int, device: torch.device, steps: int, warmup: int,
              amp: bool) -> float:
    """Slices/s of forward + loss + backward + Adam on a fixed batch."""
    torch.manual_seed(0)
    model = VAE(VAEConfig(size=size)).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 1, size, size, device=device)
    use_amp = amp and device.type == "cuda"
    dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    times = []
    for i in range(warmup + steps):
        _sync(device)
        t = time.perf_counter()
        with torch.autocast(device_type=device.type, dtype=dtype, enabled=use_amp):
            x_hat, mu, logvar = model(x)
        rec = model.pixel_rec(x, x_hat.float()).flatten(1).sum(1)
        loss = (rec + model.beta * model.kl(mu.float(), logvar.float())).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()  # the pipeline reads the loss every batch too
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return batch / statistics.median(times)


def pipeline(size: int, batch: int, device: torch.device, steps: int, warmup: int,
             amp: bool, volumes: list) -> tuple[float, float]:
    """(slices/s from batch times, slices/s the progress reports) of ``train_iter``."""
    n_batches = warmup + steps
    cfg = TrainConfig(
        vae=VAEConfig(size=size), preprocess=PreprocessConfig(size=size), epochs=1000,
        batch_size=batch, device=str(device), amp=amp, val_fraction=0.05,
        early_stopping_patience=None,
    )
    times, reported = [], []
    last = time.perf_counter()
    for p in train_iter(cfg, volumes):
        now = time.perf_counter()
        if p.step > warmup and not p.epoch_end and not p.done:
            times.append(now - last)
            reported.append(p.slices_per_s)
        if len(times) >= steps or p.step >= 10 * n_batches:
            break
        last = time.perf_counter()
    return batch / statistics.median(times), statistics.median(reported)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "CPU"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=5, help="timed batches per measurement")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--no-amp", action="store_true")
    ap.add_argument("--volumes", type=int, default=4, help="phantom volumes (64x128x128)")
    ap.add_argument("--append-docs", action="store_true", help=f"append the table to {DOCS}")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    amp = not args.no_amp
    volumes = [make_phantom(seed=i, shape=(64, 128, 128), lesions=False).volume
               for i in range(args.volumes)]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    rows = []
    for size in args.sizes:
        bare = bare_step(size, args.batch, device, args.steps, args.warmup, amp)
        full, reported = pipeline(size, args.batch, device, args.steps, args.warmup, amp, volumes)
        rows.append((size, full, reported, bare, full / bare))
        print(f"size {size}: pipeline {full:.0f} slices/s, bare {bare:.0f} slices/s", flush=True)
    amp_note = "AMP" if amp and device.type == "cuda" else "fp32"
    head = (f"\n{device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} CPU "
            f"thread(s), {amp_note}, batch {args.batch}, default VAE (features 16-32-64-256, "
            f"latent 256), {time.strftime('%Y-%m-%d')}\n\n")
    table = ("| size | pipeline slices/s | (progress reports) | bare step slices/s | pipeline / bare |\n"
             "|---:|---:|---:|---:|---:|\n")
    table += "".join(f"| {s} | {f:.0f} | {r:.0f} | {b:.0f} | {q:.2f} |\n" for s, f, r, b, q in rows)
    print(head + table)
    if args.append_docs:
        DOCS.parent.mkdir(exist_ok=True)
        text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n\nFigures measured with the scripts in benchmarks/.\n"
        if SECTION not in text:
            text = text.rstrip("\n") + (
                f"\n\n{SECTION}\n\n`python benchmarks/bench_training.py --append-docs`: slices per "
                "second of the whole training pipeline (shuffle, on-device augmentation, step, "
                "per-batch progress) against the model's bare training step on a fixed tensor.\n")
        DOCS.write_text(text.rstrip("\n") + "\n" + head + table)


if __name__ == "__main__":
    main()
