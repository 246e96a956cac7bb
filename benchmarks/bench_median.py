"""The volume stage's 5x5x5 median of one map on the CPU: one thread against all of torch's.

scipy releases the GIL, so ``postprocessing.filters.median_slabs`` filters slabs of planes on
several threads (each slab reads the planes around it: the same values). A 96x256x256 map
inside the phantom's foreground, two runs of each, in one process.
Run: ``.venv/bin/python benchmarks/bench_median.py [--threads N]`` (default: the CPU's cores).
"""

import argparse
import os
import time

import numpy as np
import torch

from napari_vae_anomaly.data.phantom import make_phantom
from napari_vae_anomaly.postprocessing import filters

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
args = ap.parse_args()
p = make_phantom(seed=3, shape=(96, 256, 256), lesions=True)
score = np.random.default_rng(0).gamma(2, 1, p.image.shape).astype(np.float32)
fg = p.image > 0
times: dict[int, list[float]] = {1: [], args.threads: []}
for _ in range(2):
    for th in times:
        torch.set_num_threads(th)
        m = score * fg
        t = time.perf_counter()
        filters.median_filter_in_place(m, 5, fg)
        times[th].append(time.perf_counter() - t)
best = {th: min(v) for th, v in times.items()}
print("| threads | median of one 96x256x256 map (s), best of 2 | speed-up |")
print("|---:|---:|---:|")
for th, t in best.items():
    print(f"| {th} | {t:.2f} | {best[1] / t:.2f}x |")
