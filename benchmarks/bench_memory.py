"""Memory benchmark: peak resident memory of one large volume with all seven predictors.

It runs :func:`napari_vae_anomaly.detection.detect` (what ``predict`` and the Detect widget
run) on one phantom volume with every predictor (rec, rec_grad, kl_grad, elbo_grad, combi,
combi_add, energy) and their ensemble, and reports the peak resident memory above the
baseline (input volume and model already in memory) against the input's size plus the
model's. The issue's goal is within 3x.

Run: ``.venv/bin/python benchmarks/bench_memory.py [--shape 96,256,256] [--size 64]
[--chunk 32] [--energy-steps 3]``. Random weights (memory does not depend on training); few
energy steps (they cost time, not memory); a fixed threshold (no calibration).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from bench_predictors import PeakRSS

from napari_vae_anomaly.data.phantom import make_phantom
from napari_vae_anomaly.detection import DetectionSettings, detect
from napari_vae_anomaly.models.checkpoint import LoadedModel
from napari_vae_anomaly.models.vae import VAE, VAEConfig
from napari_vae_anomaly.predictors.registry import PREDICTORS
from napari_vae_anomaly.preprocessing import PreprocessConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", default="96,256,256")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--chunk", type=int, default=32)
    ap.add_argument("--energy-steps", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(1)
    shape = tuple(int(s) for s in a.shape.split(","))
    volume = make_phantom(seed=3, shape=shape, lesions=True).volume
    volume.data = np.ascontiguousarray(volume.data, dtype=np.float32)
    torch.manual_seed(0)
    model = VAE(VAEConfig(size=a.size)).eval()
    loaded = LoadedModel(model, model.config, PreprocessConfig(size=a.size), {"name": "bench"})
    settings = DetectionSettings(predictors=tuple(PREDICTORS), threshold=0.0, chunk=a.chunk,
                                 energy_steps=a.energy_steps, normalize="zscore")
    input_mib = volume.data.nbytes / 2**20
    model_mib = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    with PeakRSS() as mem:
        result = detect(volume, [loaded], settings)
    maps_mib = sum(m.nbytes for m in result.maps.values()) / 2**20
    ratio = mem.mib / (input_mib + model_mib)
    print(f"volume {'x'.join(map(str, shape))} float32 ({input_mib:.0f} MiB), model size "
          f"{a.size} ({model_mib:.1f} MiB), {len(PREDICTORS)} predictors + ensemble, chunk "
          f"{a.chunk}")
    print("| what | MiB | x (input + model) |")
    print("|---|---:|---:|")
    print(f"| peak above baseline during detect | {mem.mib:.0f} | {ratio:.1f}x |")
    print(f"| of which the result's maps (8 float32 maps) | {maps_mib:.0f} | "
          f"{maps_mib / (input_mib + model_mib):.1f}x |")


if __name__ == "__main__":
    main()
