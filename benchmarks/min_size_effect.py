"""Dice of ``realistic_check.py``'s default masks with and without the small-component rule.

``predict`` removes mask components under ``--min-size`` voxels (8 by default since the CLI and
the Detect widget share one settings object); the acceptance check's masks were written
before, with every component kept. This rescoring applies the rule to those mask files.

    python benchmarks/min_size_effect.py --check-dir /tmp/check --seeds 0 1 2
"""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_vae_anomaly.data.realistic import lesion_subjects
from napari_vae_anomaly.io import read_volume
from napari_vae_anomaly.postprocessing.components import remove_small_components


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check-dir", type=Path, required=True,
                    help="the --out folder of realistic_check.py (seed<N>/predict_default)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--n-test", type=int, default=12)
    ap.add_argument("--sizes", type=int, nargs="+", default=[0, 8])
    a = ap.parse_args(argv)
    subjects = list(lesion_subjects(a.n_test, "flair"))
    print("| seed | " + " | ".join(f"Dice, min size {n}" for n in a.sizes) + " |")
    print("|---|" + "---|" * len(a.sizes))
    for seed in a.seeds:
        folder = a.check_dir / f"seed{seed}" / "predict_default"
        row = []
        for size in a.sizes:
            inter = total = 0
            for s in subjects:
                m = read_volume(folder / f"case_{s.seed:03d}_mask.nii.gz").data > 0
                if size:
                    m = remove_small_components(m, size) > 0
                t, b = s.lesion_mask > 0, s.brain_mask
                inter += int((m & t & b).sum())
                total += int((m & b).sum() + (t & b).sum())
            row.append(f"{2 * inter / max(total, 1):.4f}")
        print(f"| {seed} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
