"""Cohort benchmark: ``predict`` over many small volumes, reading and writing overlapped.

A cohort of ``--cases`` phantom volumes (NIfTI on disk) goes through the same code as
``napari-vae-anomaly predict`` (:func:`napari_vae_anomaly.cli.cohort.run_cohort`): a thread
reads and preprocesses the next cases, another writes the previous ones, while the model runs
on the current one. It reports, in one run:

* the cohort's wall time against the sum of the pure model times of its cases (the time
  inside ``detect``: the model, the volume stage, the ensemble and the mask; goal <= 1.3x);
* the same cases one after another (read, detect, write), the way ``predict`` ran before,
  against the same sum.

Run: ``.venv/bin/python benchmarks/bench_cohort.py [--cases 40] [--shape 32,128,128]
[--size 64] [--device cpu]``. The model has random weights (speed does not depend on training)
and the reference architecture at ``--size``; the threshold is fixed (no calibration).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from napari_vae_anomaly.cli import predict as predict_cli
from napari_vae_anomaly.cli import predict_case
from napari_vae_anomaly.cli.cohort import run_cohort
from napari_vae_anomaly.data.phantom import make_phantom
from napari_vae_anomaly.detection import detect
from napari_vae_anomaly.io.write import write_volume
from napari_vae_anomaly.models.checkpoint import save_checkpoint
from napari_vae_anomaly.models.vae import VAE, VAEConfig
from napari_vae_anomaly.preprocessing import PreprocessConfig


def make_cohort(folder: Path, n: int, shape: tuple[int, ...], size: int) -> tuple[Path, list[str]]:
    torch.manual_seed(0)
    model = VAE(VAEConfig(size=size)).eval()
    ckpt = save_checkpoint(folder / "model.safetensors", model, {"name": "bench"},
                           PreprocessConfig(size=size))
    inputs = []
    for i in range(n):
        p = make_phantom(seed=100 + i, shape=shape, lesions=True)
        inputs.append(str(write_volume(folder / f"case{i:03d}.nii.gz", p.image, p.geometry)))
    return ckpt, inputs


def job_for(ckpt: Path, inputs: list[str], out: Path, device: str):
    parser = argparse.ArgumentParser()
    predict_cli.register(parser.add_subparsers())
    args = parser.parse_args(["predict", *inputs, "--model", str(ckpt), "--threshold", "0.5",
                              "--out-dir", str(out), "--device", device, "--no-progress"])
    job, cases = predict_cli.prepare(args, torch.device(device), quiet=True)
    return job, list(zip(inputs, cases, strict=True))


def sequential(job, work) -> tuple[float, float]:
    """(wall, model seconds) of the cases one after another, as ``predict`` ran before."""
    model = 0.0
    t0 = time.perf_counter()
    for src, case in work:
        vol, paths, _kept = predict_case.load_case(job, src, case, print)
        t = time.perf_counter()
        res = detect(vol, job.models, job.settings, job.thresholds)
        model += time.perf_counter() - t
        predict_case.write_outputs(job, paths, vol, res)
    return time.perf_counter() - t0, model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=40)
    ap.add_argument("--shape", default="32,128,128")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    shape = tuple(int(s) for s in a.shape.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ckpt, inputs = make_cohort(folder, a.cases, shape, a.size)
        job, work = job_for(ckpt, inputs, folder / "pipelined", a.device)
        tally = run_cohort(job, work)
        job_seq, work_seq = job_for(ckpt, inputs, folder / "sequential", a.device)
        seq_wall, seq_model = sequential(job_seq, work_seq)
    print(f"cohort: {a.cases} volumes {'x'.join(map(str, shape))}, model size {a.size}, "
          f"device {a.device}, {a.threads} torch thread(s), default predictor, fixed threshold")
    print("| run | wall (s) | sum of model times (s) | wall / model |")
    print("|---|---:|---:|---:|")
    print(f"| pipelined (read ahead, write behind) | {tally.wall_seconds:.2f} | "
          f"{tally.model_seconds:.2f} | {tally.wall_seconds / tally.model_seconds:.2f}x |")
    print(f"| one after another (before) | {seq_wall:.2f} | {seq_model:.2f} | "
          f"{seq_wall / seq_model:.2f}x |")


if __name__ == "__main__":
    main()
