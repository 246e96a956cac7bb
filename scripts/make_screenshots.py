"""Regenerate the README screenshots (docs/images/*.png) from real napari rendering.

Runs the demo set-up (sample scan, every widget docked, detection with the bundled model on
the slice through the largest lesion), then shows each widget's tab in turn - training a tiny
model for a few seconds so the Train VAE tab shows a live loss curve, evaluating the maps
against the ground truth for the Evaluate tab - and saves the window. ``result.png`` is the
canvas alone. PNGs are downscaled and palette-quantized to stay small (< 300 KB each).

    bash scripts/headless.sh .venv/bin/python scripts/make_screenshots.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"
MAX_BYTES = 300_000
PLUGIN = "napari-vae-anomaly"


def wait_until(cond: Any, timeout_s: float) -> bool:
    from qtpy.QtWidgets import QApplication

    t0 = time.perf_counter()
    while not cond():
        if time.perf_counter() - t0 > timeout_s:
            return False
        QApplication.processEvents()
        time.sleep(0.02)
    return True


def settle(seconds: float = 0.4) -> None:
    wait_until(lambda: False, seconds)


def save_small(image: Any, path: Path, width: int) -> Path:
    """Downscale to ``width`` (never up), quantize to 256 colours, optimize; shrink until small."""
    from PIL import Image

    im = Image.fromarray(image[..., :3]) if not isinstance(image, Image.Image) else image
    im = im.convert("RGB")
    while True:
        if im.width > width:
            im = im.resize((width, round(im.height * width / im.width)), Image.Resampling.LANCZOS)
        im.quantize(colors=256).save(path, optimize=True)
        if path.stat().st_size <= MAX_BYTES or width < 400:
            return path
        width = int(width * 0.85)


def crop_to_content(image: Any, margin: int = 24) -> Any:
    """The canvas cut to what is drawn (plus a margin): the scan, not the black around it."""
    import numpy as np

    rgb = np.asarray(image)[..., :3]
    rows, cols = np.nonzero(rgb.max(-1) > 12)
    if rows.size == 0:
        return image
    r0, r1 = max(rows.min() - margin, 0), min(rows.max() + margin + 1, rgb.shape[0])
    c0, c1 = max(cols.min() - margin, 0), min(cols.max() + margin + 1, rgb.shape[1])
    return np.ascontiguousarray(np.asarray(image)[r0:r1, c0:c1])


def show_tab(docks: dict[str, Any], name: str) -> None:
    docks[name].raise_()
    settle()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--width", type=int, default=1000, help="width of the saved window shots")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    import os

    os.environ.setdefault("NAPARI_VAE_ANOMALY_HEADLESS", "1")  # no remembered widget state
    import napari
    import torch

    from napari_vae_anomaly.demo import WINDOW_SIZE, populate_viewer

    torch.set_num_threads(1)
    viewer = napari.Viewer(title="napari-vae-anomaly", show=True)
    viewer.window.resize(*WINDOW_SIZE)
    widgets: dict[str, Any] = {}
    written: list[Path] = []
    try:
        summary = populate_viewer(viewer, None, 300.0, widgets)
        detect = summary.pop("_detect")
        scan, truth = summary.pop("_layers")
        docks = {name: w.parentWidget() for name, w in widgets.items()}
        # parentWidget() of a docked widget is napari's QtViewerDockWidget (a QDockWidget)
        settle(1.0)
        viewer.screenshot(canvas_only=False, flash=False)  # first grab can come back black

        def shot(name: str, canvas_only: bool = False, width: int = args.width) -> None:
            settle()
            img = viewer.screenshot(canvas_only=canvas_only, flash=False)
            if canvas_only:
                img = crop_to_content(img)
            written.append(save_small(img, args.out / f"{name}.png", width))

        show_tab(docks, "Detect anomalies")
        shot("detect_widget")
        shot("result", canvas_only=True, width=700)

        load = widgets["Load volume"]
        load.layer_combo.setCurrentText(scan.name)
        load.update_info()
        show_tab(docks, "Load volume")
        shot("load_volume_widget")

        evaluation = widgets["Evaluate"]
        evaluation.select_maps([la.name for la in detect.result.heatmaps.values()])
        evaluation.truth.setCurrentText(truth.name)
        evaluation.evaluate()
        if not wait_until(lambda: getattr(evaluation, "evaluation", None) is not None, 120):
            raise RuntimeError("evaluation did not finish in 120 s")
        show_tab(docks, "Evaluate")
        shot("evaluate_widget")

        [normal] = viewer.open_sample(PLUGIN, "mni_normal")
        normal.visible = False
        train = widgets["Train VAE"]
        train.select_layers([normal.name])
        tmp = Path(tempfile.mkdtemp(prefix="vae-screens-"))
        train.set_output_path(tmp / "screenshot_model.safetensors")
        train.set_hyperparameters(size=64, features=(8, 16, 32), latent=32, epochs=12,
                                  batch_size=32, device="cpu")
        show_tab(docks, "Train VAE")
        if train.start() is None:
            raise RuntimeError("training did not start")
        if not wait_until(lambda: not train.is_running(), 240):
            train.stop()
            raise RuntimeError("training did not finish in 240 s")
        viewer.layers.selection.active = normal
        shot("train_widget")
    finally:
        for w in widgets.values():
            stop = getattr(w, "shutdown", None)
            if callable(stop):
                stop()
        viewer.close()
        settle(0.1)
    for path in written:
        print(f"{path} ({path.stat().st_size / 1000:.0f} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
