"""``napari-vae-anomaly demo``: the sample scan, the widgets and a detection in one command."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="open napari with the sample scan, the plugin's widgets and a detection",
        description=(
            "Open napari with the sample brain phantom (with lesions), dock the plugin's "
            "widgets, load the bundled model and show the anomaly maps and mask. Without a "
            "display (NAPARI_VAE_ANOMALY_HEADLESS=1, set by `make demo`) it writes a "
            "screenshot, the maps, the mask and the metrics to --out-dir and exits."
        ),
    )
    p.add_argument("--out-dir", default="demo-output", help="folder for the headless outputs")
    p.add_argument("--model", default=None,
                   help="checkpoint to use instead of the bundled demo model")
    p.add_argument("--headless", action="store_true", default=None,
                   help="write the outputs and exit instead of keeping the window open")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import run_demo  # imports napari: only when the demo really runs

    summary = run_demo(output_dir=args.out_dir, model=args.model, headless=args.headless)
    print(json.dumps(summary, indent=2, default=str))
    return 0
