"""The main job in one command: open napari with the sample scan, the plugin's widgets and,
when a model is available, the anomaly maps and mask over the scan.

Runs interactively when a display is available. Under a virtual X server (``make demo`` on a
machine without a display sets ``NAPARI_VAE_ANOMALY_HEADLESS=1``) it renders the same viewer,
writes a screenshot, the maps and mask as NIfTI files with the scan's geometry and the metrics
against the sample's ground truth to an output folder, and exits.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

PLUGIN = "napari-vae-anomaly"


def is_headless() -> bool:
    """True when the demo runs under the virtual X server set up by ``make demo``."""
    return os.environ.get("NAPARI_VAE_ANOMALY_HEADLESS", "") not in ("", "0")


def _dock_widgets(viewer: Any) -> dict[str, Any]:
    """Dock every widget the plugin's manifest declares, tabified; return them by name."""
    from npe2 import PluginManager

    manifest = PluginManager.instance().get_manifest(PLUGIN)
    docked: dict[str, Any] = {}
    for contribution in manifest.contributions.widgets or []:
        name = contribution.display_name
        _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name, tabify=True)
        docked[name] = widget
    return docked


def run_demo(output_dir: str | Path = "demo-output", model: str | Path | None = None,
             headless: bool | None = None, timeout_s: float = 300.0) -> dict[str, Any]:
    """Open the viewer with the sample scan; detect anomalies with the bundled model.

    Returns a summary (paths written, metrics) so tests and the CLI can check it.
    """
    import napari

    headless = is_headless() if headless is None else headless
    viewer = napari.Viewer(title="napari-vae-anomaly demo", show=True)
    viewer.open_sample(PLUGIN, "phantom_lesions")
    widgets = _dock_widgets(viewer)
    summary: dict[str, Any] = {"widgets": sorted(widgets)}

    detect = widgets.get("Detect anomalies")
    if detect is not None and hasattr(detect, "run_demo_detection"):
        summary.update(detect.run_demo_detection(model=model, wait=headless, timeout_s=timeout_s))

    if not headless:
        napari.run()
        return summary

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    from qtpy.QtWidgets import QApplication

    t0 = time.time()
    while time.time() - t0 < 1.0:  # let the canvas draw once before the screenshot
        QApplication.processEvents()
    shot = out / "viewer.png"
    viewer.screenshot(str(shot), canvas_only=False, flash=False)
    summary["screenshot"] = str(shot)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    viewer.close()
    return summary
