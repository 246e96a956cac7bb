"""`make benchmark`: the speed benchmarks (training throughput, predictors against naive
references, a cohort through predict, peak memory of one volume), in one process each,
figures printed as the tables docs/benchmarks.md holds.

The quality benchmarks are separate, longer runs: ``napari-vae-anomaly benchmark --data mni``
and ``benchmarks/realistic_check.py`` (docs/results.md).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SPEED = ("bench_training.py", "bench_predictors.py", "bench_cohort.py", "bench_memory.py")


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
