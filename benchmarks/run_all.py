"""`make benchmark`: the speed benchmarks (training throughput, predictors against naive
references, a cohort through predict, peak memory of one volume, the CPU median on threads),
in one process each,
figures printed as the tables docs/benchmarks.md holds.

The quality benchmarks are separate, longer runs, each with its command in the docs:
``napari-vae-anomaly benchmark --data mni``, ``realistic_check.py`` and ``realistic_sweep.py``
(docs/results.md), ``min_size_effect.py`` (a rescoring of the check's masks),
``energy_early_stop_quality.py`` (docs/benchmarks.md).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SPEED = ("bench_training.py", "bench_predictors.py", "bench_cohort.py", "bench_memory.py",
         "bench_median.py")


def main() -> int:
    failed = []
    for name in SPEED:
        print(f"== {name}", flush=True)
        if subprocess.run([sys.executable, str(HERE / name)]).returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
