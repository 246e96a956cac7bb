"""Memory benchmark: peak resident memory of one large volume with all seven predictors.

Two measurements of one phantom volume with every predictor (rec, rec_grad, kl_grad,
elbo_grad, combi, combi_add, energy) and their ensemble, against the input's size plus the
model's (the issue's goal: within 3x):

* ``predict`` (the CLI, in this process): the volume read from a NIfTI file, the checkpoint
  loaded, every map computed, staged and written, the mask written. Peak above the value
  before ``predict`` started (after a first ``predict`` of a small volume, so that imports
  are not counted); reading the input and loading the model are *included*.
* :func:`napari_vae_anomaly.detection.detect` keeping every map (what the Detect widget
  shows): peak above the value with the input volume and the model already in memory.

Run: ``.venv/bin/python benchmarks/bench_memory.py [--shape 96,256,256] [--size 64]
[--chunk 32] [--energy-steps 3]``; ``--compare-writing`` instead measures ``predict``'s peak
and wall time with ``cli.cohort.MAP_WRITTEN_FIRST`` off and on. Random weights (memory does not depend on training); few
energy steps (they cost time, not memory); a fixed threshold (no calibration).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_predictors import PeakRSS

from napari_vae_anomaly.cli.main import main as cli_main
from napari_vae_anomaly.data.phantom import make_phantom
from napari_vae_anomaly.detection import DetectionSettings, detect
from napari_vae_anomaly.io import write_volume
from napari_vae_anomaly.models.checkpoint import LoadedModel, save_checkpoint
from napari_vae_anomaly.models.vae import VAE, VAEConfig
from napari_vae_anomaly.predictors.registry import PREDICTORS
from napari_vae_anomaly.preprocessing import PreprocessConfig


def setup(a: argparse.Namespace) -> tuple:
    torch.set_num_threads(1)
    shape = tuple(int(s) for s in a.shape.split(","))
    volume = make_phantom(seed=3, shape=shape, lesions=True).volume
    volume.data = np.ascontiguousarray(volume.data, dtype=np.float32)
    torch.manual_seed(0)
    model = VAE(VAEConfig(size=a.size)).eval()
    loaded = LoadedModel(model, model.config, PreprocessConfig(size=a.size), {"name": "bench"})
    input_mib = volume.data.nbytes / 2**20
    model_mib = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    return shape, volume, model, loaded, input_mib, model_mib


def measure_predict(a: argparse.Namespace) -> dict:
    """Peak of ``predict`` on the volume written to a file (reading and loading included)."""
    _, volume, model, loaded, *_ = setup(a)
    with tempfile.TemporaryDirectory() as tmp:
        scan, ckpt, out = Path(tmp) / "scan.nii.gz", Path(tmp) / "m.safetensors", Path(tmp) / "o"
        write_volume(scan, volume.data, volume.geometry)
        save_checkpoint(ckpt, model, {"name": "bench"}, loaded.preprocess)
        small = Path(tmp) / "small.nii.gz"
        write_volume(small, np.ascontiguousarray(volume.data[44:52, ::4, ::4]), volume.geometry)
        del volume, model, loaded

        def argv(src: Path, where: Path) -> list[str]:
            return ["predict", str(src), "--model", str(ckpt), "--threshold", "0", "--chunk",
                    str(a.chunk), "--energy-steps", str(a.energy_steps), "--normalize",
                    "zscore", "--out-dir", str(where), "--no-progress",
                    *(w for name in PREDICTORS for w in ("--predictor", name))]

        # a small case first: imports and first calls of torch are paid before measuring
        if cli_main(argv(small, Path(tmp) / "warm")) != 0:
            raise SystemExit("predict failed")
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            if cli_main(argv(scan, out)) != 0:
                raise SystemExit("predict failed")
            seconds = time.perf_counter() - t0
        return {"mib": mem.mib, "files": len(list(out.iterdir())), "seconds": seconds}


def measure_detect(a: argparse.Namespace) -> dict:
    """Peak of ``detect()`` keeping every map, the input and the model already in memory."""
    _, volume, _, loaded, *_ = setup(a)
    settings = DetectionSettings(predictors=tuple(PREDICTORS), threshold=0.0, chunk=a.chunk,
                                 energy_steps=a.energy_steps, normalize="zscore")
    with PeakRSS() as mem:
        result = detect(volume, [loaded], settings)
    return {"mib": mem.mib, "maps": len(result.maps),
            "maps_mib": sum(m.nbytes for m in result.maps.values()) / 2**20}


def compare_writing() -> None:
    """What making each map only once the last is written saves in memory and costs in time."""
    print("| --map-written-first | predict peak (MiB) | predict wall (s) |")
    print("|---|---:|---:|")
    base = [a for a in sys.argv[1:] if a != "--compare-writing"]
    for _ in range(2):
        for flag in ("off", "on"):
            run = subprocess.run([sys.executable, __file__, *base, "--map-written-first", flag,
                                  "--only", "predict"], capture_output=True, text=True, check=True)
            got = json.loads(run.stdout.strip().splitlines()[-1])
            print(f"| {flag} | {got['mib']:.0f} | {got['seconds']:.2f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", default="96,256,256")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--chunk", type=int, default=32)
    ap.add_argument("--energy-steps", type=int, default=3)
    ap.add_argument("--map-written-first", choices=("on", "off"), default="on",
                    help="cli.cohort.MAP_WRITTEN_FIRST: the next map made only once the last "
                         "is written (on, predict's way) or while it is written (off)")
    ap.add_argument("--compare-writing", action="store_true",
                    help="predict's peak and wall time with --map-written-first off and on, "
                         "alternating, two runs each")
    ap.add_argument("--only", choices=("predict", "detect"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.only:  # one measurement, in a fresh process (what one run left behind is not seen)
        from napari_vae_anomaly.cli import cohort

        cohort.MAP_WRITTEN_FIRST = a.map_written_first == "on"
        print(json.dumps((measure_predict if a.only == "predict" else measure_detect)(a)))
        return
    if a.compare_writing:
        compare_writing()
        return
    got = {}
    for what in ("predict", "detect"):
        run = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--only", what],
                             capture_output=True, text=True, check=True)
        got[what] = json.loads(run.stdout.strip().splitlines()[-1])
    shape, _, _, _, input_mib, model_mib = setup(a)
    ref = input_mib + model_mib
    p, d = got["predict"], got["detect"]
    print(f"volume {'x'.join(map(str, shape))} float32 ({input_mib:.0f} MiB), model size "
          f"{a.size} ({model_mib:.1f} MiB), {len(PREDICTORS)} predictors + ensemble, chunk "
          f"{a.chunk}")
    print("| what | MiB | x (input + model) |")
    print("|---|---:|---:|")
    print(f"| peak during predict ({p['files']} files written), reading and loading included "
          f"| {p['mib']:.0f} | {p['mib'] / ref:.1f}x |")
    print(f"| peak above baseline during detect (every map kept) | {d['mib']:.0f} | "
          f"{d['mib'] / ref:.1f}x |")
    print(f"| of which the result's maps ({d['maps']} float32 maps) | {d['maps_mib']:.0f} | "
          f"{d['maps_mib'] / ref:.1f}x |")


if __name__ == "__main__":
    main()
