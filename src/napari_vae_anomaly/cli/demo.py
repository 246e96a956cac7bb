"""``napari-vae-anomaly demo``: the sample scan, the widgets and a detection in one command."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="open napari with the sample scan, the plugin's widgets and a detection",
        description=(
            "Open napari with the sample brain phantom (with lesions), dock the plugin's "
            "widgets, load the bundled model and show the anomaly maps and mask on the slice "
            "through the largest lesion. Without a display (NAPARI_VAE_ANOMALY_HEADLESS=1, "
            "set by `make demo`) or with --headless it writes a screenshot, the scan, maps "
            "and mask as NIfTI and the metrics to --out-dir (the demo's own folder: its "
            "files are replaced on every run) and exits."
        ),
    )
    p.add_argument("--out-dir", default="demo-output", help="folder for the headless outputs")
    p.add_argument("--model", default=None,
                   help="checkpoint to use instead of the bundled demo model")
    p.add_argument("--headless", action="store_true", default=None,
                   help="write the outputs and exit instead of keeping the window open")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="seconds to wait for the detection (default 300)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from ..errors import AnomalyError

    try:
        from ..demo import run_demo  # imports napari: only when the demo really runs

        summary = run_demo(output_dir=args.out_dir, model=args.model, headless=args.headless,
                           timeout_s=args.timeout)
    except AnomalyError:
        raise  # the CLI prints it as one line, exit status 2
    except Exception as exc:  # noqa: BLE001 - e.g. no display / OpenGL: one line, not a trace
        first = (str(exc).strip().splitlines() or [""])[0]
        print(f"error: demo failed: {type(exc).__name__}: {first}", file=sys.stderr)
        return 1
    det = summary.get("detect", {})
    if "screenshot" not in summary:  # interactive: the user closed the window
        return 0
    print(f"demo: {len(det.get('maps', []))} maps ({', '.join(det.get('maps', []))}), "
          f"mask from {det.get('primary')}, {det.get('lesions')} lesion(s) found, "
          f"detection {det.get('seconds', 0):.1f} s, whole demo {summary['seconds']:.1f} s")
    print(summary["metrics_markdown"], end="")
    print(f"wrote (replacing earlier demo files) in {args.out_dir}:")
    for path in [summary["screenshot"], *summary["nifti"].values(), *summary["metrics"].values()]:
        print(f"  {path}")
    return 0
