"""The main job in one command: napari with the sample scan, the plugin's widgets, and the
anomaly maps and mask of the bundled model over the scan, ready to correct and save.

Runs interactively when a display is available. Headless (``make demo`` without a display
runs it under a virtual X server with ``NAPARI_VAE_ANOMALY_HEADLESS=1``) it renders the same
viewer and writes to the output folder, which belongs to the demo and is rewritten on every
run: ``viewer.png`` (the window, on the slice through the largest lesion), the scan, the
heatmaps and the mask as NIfTI files with the scan's geometry, and ``metrics.md/.csv/.json``
against the sample's ground truth; then it closes the viewer and returns.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from .errors import AnomalyError
from .postprocessing.threshold import DEFAULT_NORMAL_FRACTION
from .predictors.registry import DEFAULT_PREDICTORS

PLUGIN = "napari-vae-anomaly"
SAMPLE = "mni_lesions"  # real anatomy (MNI152) with a tumour, WMH and a stroke-like territory
CASE = "mni_lesions"
DEMO_PREDICTORS = DEFAULT_PREDICTORS
DEMO_ENSEMBLE = "reference"
DETECT_WIDGET = "Detect anomalies"
WINDOW_SIZE = (1280, 900)  # fits the virtual X server's 1280x1024 screen
# The mask flags voxels scoring above what 2 % of the model's normal reference voxels reach,
# in components of at least 30 voxels. Picked by eye on this sample for a readable first
# view (the widget's defaults, 1 % and 8 voxels, missed most of its largest lesion); it is a
# demo setting, not a validated one - the metrics file reports the threshold-free figures.
DEMO_NORMAL_FRACTION_PERCENT = 100.0 * DEFAULT_NORMAL_FRACTION
DEMO_MIN_LESION_VOXELS = 30


def is_headless() -> bool:
    """True when the demo runs under the virtual X server set up by ``make demo``."""
    return os.environ.get("NAPARI_VAE_ANOMALY_HEADLESS", "") not in ("", "0")


def _process_events(seconds: float) -> None:
    from qtpy.QtWidgets import QApplication

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        QApplication.processEvents()
        time.sleep(0.01)


def dock_widgets(viewer: Any) -> dict[str, Any]:
    """Dock every widget of the plugin's manifest, tabified, and show the Detect tab."""
    from npe2 import PluginManager

    manifest = PluginManager.instance().get_manifest(PLUGIN)
    docked: dict[str, Any] = {}
    docks: dict[str, Any] = {}
    for contribution in manifest.contributions.widgets or []:
        name = contribution.display_name
        dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name, tabify=True)
        docked[name], docks[name] = widget, dock
    if DETECT_WIDGET in docks:
        docks[DETECT_WIDGET].raise_()
    return docked


def largest_lesion_index(truth: np.ndarray) -> tuple[int, ...]:
    """Voxel index (z, y, x) of the centre of the largest connected lesion in ``truth``."""
    from scipy import ndimage

    labels, n = ndimage.label(np.asarray(truth) > 0)
    if n == 0:
        return tuple(s // 2 for s in truth.shape)
    sizes = np.bincount(labels.ravel())[1:]
    biggest = int(np.argmax(sizes)) + 1
    centre = ndimage.center_of_mass(labels == biggest)
    return tuple(int(round(c)) for c in centre)


def show_slice(viewer: Any, layer: Any, index: tuple[int, ...]) -> None:
    """Move the viewer to the slice of ``layer`` through voxel ``index`` (world coordinates)."""
    world = np.asarray(layer.data_to_world(np.asarray(index, dtype=float)))
    viewer.dims.set_point(0, float(world[0]))


def emphasize_heatmap(layer: Any, foreground: np.ndarray | None) -> tuple[float, float]:
    """Colour only the heatmap's anomalous tail: the Detect widget's default contrast limits
    (:func:`..widgets.heatmap_layers.heatmap_limits`, threshold from the layer's tag)."""
    from .widgets.heatmap_layers import apply_heatmap_limits

    return apply_heatmap_limits(layer, foreground)


def _sample_layers(viewer: Any) -> tuple[Any, Any]:
    from napari.layers import Image, Labels

    layers = viewer.open_sample(PLUGIN, SAMPLE)
    scan = next((la for la in layers if isinstance(la, Image)), None)
    truth = next((la for la in layers if isinstance(la, Labels)), None)
    if scan is None or truth is None:
        raise AnomalyError(f"the sample {SAMPLE!r} did not give a scan and its ground truth")
    return scan, truth


def write_outputs(out: Path, detect: Any, scan: Any, truth: Any) -> dict[str, Any]:
    """NIfTI files (scan, heatmaps, mask, ground truth) and metrics of every map."""
    from .io import write_volume
    from .metrics.dice import dice
    from .metrics.evaluation import DatasetEvaluator
    from .metrics.report import MetricsResult
    from .widgets._common import layer_geometry

    res = detect.result
    geometry = layer_geometry(scan)
    files: dict[str, str] = {}

    def save(name: str, data: np.ndarray) -> None:
        path = write_volume(out / f"{CASE}_{name}.nii.gz", data, geometry, overwrite=True)
        files[name] = str(path)

    save("image", np.asarray(scan.data, np.float32))
    for name, arr in res.outcome.maps.items():
        save(name.replace(" ", "_"), np.asarray(arr, np.float32))
    mask = np.asarray(res.mask.layer.data)
    save("mask", (mask > 0).astype(np.uint8))
    save("truth", (np.asarray(truth.data) > 0).astype(np.uint8))

    y = np.asarray(truth.data) > 0
    fg = res.outcome.foreground
    metrics = MetricsResult()
    for name in res.outcome.maps:
        t = res.threshold if name == res.map_name else res.outcome.thresholds.get(name)
        ev = DatasetEvaluator(predictor=name, threshold=t, max_pooled_normal=None)
        ev.add(CASE, res.outcome.mask_map(name), y, fg)
        metrics.extend(MetricsResult(list(ev.rows), list(ev.notes)))
    metrics.notes.append("oracle_dice: best Dice over all thresholds, chosen with the ground "
                         "truth (an upper bound, not a result)")
    mask_dice = float(dice(mask > 0, y))
    metrics.notes.append(f"Dice of the displayed mask ({res.map_name}, threshold "
                         f"{res.threshold:.4g}, small components removed): {mask_dice:.4f}")
    paths = metrics.write(out, "metrics", overwrite=True)
    best = max(metrics.rows, key=lambda r: r.get("auroc", float("nan")) or -1.0)
    return {
        "nifti": files,
        "metrics": {k: str(v) for k, v in paths.items()},
        "auroc": {r["predictor"]: r.get("auroc") for r in metrics.rows},
        "oracle_dice": {r["predictor"]: r.get("oracle_dice") for r in metrics.rows},
        "best": {"predictor": best["predictor"], "auroc": best.get("auroc")},
        "mask_dice": mask_dice,
        "metrics_markdown": metrics.to_markdown(digits=3),
    }


def run_demo(output_dir: str | Path = "demo-output", model: str | Path | None = None,
             headless: bool | None = None, timeout_s: float = 300.0) -> dict[str, Any]:
    """Open the viewer with the sample scan; detect anomalies with the bundled model.

    Headless: write the outputs to ``output_dir`` and close the viewer. Returns a summary
    (paths written, metrics, seconds). Raises AnomalyError (one line) when detection fails;
    the viewer is closed in every case when headless.
    """
    t_start = time.perf_counter()
    headless = is_headless() if headless is None else headless
    if headless:  # the user's remembered widget settings must not change the demo's results
        os.environ.setdefault("NAPARI_VAE_ANOMALY_HEADLESS", "1")
    import napari

    viewer = napari.Viewer(title="napari-vae-anomaly demo", show=True)
    widgets: dict[str, Any] = {}
    try:
        if headless:
            viewer.window.resize(*WINDOW_SIZE)
        summary = populate_viewer(viewer, model, timeout_s, widgets)
        detect, layers = summary.pop("_detect"), summary.pop("_layers")
        if not headless:
            summary["seconds_to_ready"] = round(time.perf_counter() - t_start, 1)
            print(f"demo ready in {summary['seconds_to_ready']} s", flush=True)
            napari.run()
            return summary
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        summary.update(write_outputs(out, detect, *layers))
        _process_events(0.5)  # let the canvas draw the final state
        shot = out / "viewer.png"
        viewer.screenshot(str(shot), canvas_only=False, flash=False)
        summary["screenshot"] = str(shot)
        summary["seconds"] = round(time.perf_counter() - t_start, 1)
        text = {k: v for k, v in summary.items() if k != "metrics_markdown"}
        (out / "summary.json").write_text(json.dumps(text, indent=2, default=str))
        return summary
    finally:
        if headless:
            _close(viewer, widgets)


def populate_viewer(viewer: Any, model: str | Path | None, timeout_s: float,
              widgets: dict[str, Any]) -> dict[str, Any]:
    """Sample, widgets (into ``widgets``), detection, the view on the largest lesion."""
    scan, truth = _sample_layers(viewer)
    truth.visible = False  # the user compares by toggling it; the mask is what we show
    widgets.update(dock_widgets(viewer))
    summary: dict[str, Any] = {"widgets": sorted(widgets)}
    detect = widgets.get(DETECT_WIDGET)
    if detect is None:
        raise AnomalyError(f"the manifest has no {DETECT_WIDGET!r} widget")
    detect.select_layer(scan)
    detect.threshold_mode.setCurrentIndex(detect.threshold_mode.findData("normal"))
    detect.fraction.setValue(DEMO_NORMAL_FRACTION_PERCENT)
    detect.min_size_unit.setCurrentText("voxels")
    detect.min_size.setValue(DEMO_MIN_LESION_VOXELS)
    out = run_detection(detect, model=model, wait=True, timeout_s=timeout_s,
                        predictors=list(DEMO_PREDICTORS), ensemble=DEMO_ENSEMBLE)
    summary.update(out)
    if not isinstance(out.get("detect"), dict) or detect.result is None:
        detect.shutdown()
        raise AnomalyError(f"demo detection failed: {out.get('detect')}")
    res = detect.result  # the widget shows one heatmap and the mask's outline (issue 12)
    emphasize_heatmap(res.heatmaps[res.map_name], res.outcome.foreground)
    index = largest_lesion_index(np.asarray(truth.data))
    viewer.reset_view()
    show_slice(viewer, scan, index)
    viewer.layers.selection.active = res.mask.layer
    summary["slice"] = index[0]
    summary["_detect"], summary["_layers"] = detect, (scan, truth)
    return summary


def run_detection(detect: Any, model: str | Path | None = None, wait: bool = False,
                  timeout_s: float = 300.0, predictors: list[str] | None = None,
                  ensemble: str | None = None) -> dict[str, Any]:
    """Drive a Detect widget as a user would: add ``model`` (or the bundled one), choose the
    maps, press Run and, with ``wait``, wait for the result; returns a summary.

    ``predictors``/``ensemble`` override the widget's choice (the demo wants the same maps
    whatever the last session left behind). Only the widget's public controls are used.
    """
    if model is None:
        try:
            from .models import bundled_model_path

            model = bundled_model_path()
        except (ImportError, AnomalyError, FileNotFoundError) as exc:
            return {"detect": f"no model available ({exc})"}
    loaded = detect.add_model_path(model)
    if loaded is None:
        return {"detect": f"could not load {model}"}
    if predictors:
        detect.set_predictors(list(predictors))
    if ensemble is not None:
        i = detect.ensemble_combo.findData(ensemble)
        if i >= 0:
            detect.ensemble_combo.setCurrentIndex(i)
    detect.run()
    if not wait or detect.job is None:
        return {"detect": "started"}
    t0 = time.perf_counter()
    while detect.job.running and time.perf_counter() - t0 < timeout_s:
        _process_events(0.02)
    _process_events(0.05)  # deliver the result's signals
    res = detect.result
    if res is None:
        return {"detect": "timed out" if detect.job.running else "no result"}
    return {"detect": {
        "model": str(loaded.path), "models": [str(m.path) for m in detect.models],
        "maps": list(res.outcome.maps), "primary": res.map_name,
        "threshold": res.threshold, "lesions": detect.result_panel.table.rowCount(),
        "seconds": res.outcome.seconds,
        "heatmap_layers": [la.name for la in res.heatmaps.values()],
        "mask_layer": res.mask.layer.name if res.mask.layer is not None else None,
    }}


def _close(viewer: Any, widgets: dict[str, Any]) -> None:
    """Close the viewer without a prompt: stop any job first, then let Qt process the close."""
    for widget in widgets.values():
        stop = getattr(widget, "shutdown", None)
        if callable(stop):
            try:
                stop()
            except Exception:  # noqa: BLE001 - closing must go on
                pass
    try:
        viewer.close()
    finally:
        _process_events(0.1)
