"""What the user sees: after detection the heatmap lights up the lesion, not normal tissue.

Renders the real viewer under the virtual X server (see scripts/headless.sh) and reads the
answer from screenshots of the canvas, not from layer data: one with the heatmap, one
without (their difference is the heat colour), one with the ground truth only (where the
lesion is on screen). The lesion centre mapped through the camera must land inside that
region, so the test also checks that layers and camera agree on the scan's geometry.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")

PREDICTOR = "combi"  # one map, voxel AUROC 0.975 on the sample with the bundled model


def _canvas(viewer, qtbot) -> np.ndarray:
    qtbot.wait(50)
    return np.asarray(viewer.screenshot(canvas_only=True, flash=False))[..., :3].astype(np.int32)


def _world_to_canvas(viewer, world_yx: np.ndarray, shape: tuple[int, int]) -> tuple[int, int]:
    """Canvas pixel (row, col) of a world (y, x) point in the 2-D view."""
    scene = getattr(viewer, "scene", None)  # napari >= 0.9; viewer.camera before
    cam = scene.camera if scene is not None else viewer.camera
    centre = np.asarray(cam.center[-2:], dtype=float)
    px = (np.asarray(world_yx, dtype=float) - centre) * cam.zoom + np.asarray(shape) / 2.0
    return int(round(px[0])), int(round(px[1]))


def test_heatmap_visible_on_lesion_not_elsewhere(make_napari_viewer, qtbot):
    from scipy import ndimage

    from napari_vae_anomaly._sample_data import sample_with_lesions
    from napari_vae_anomaly.demo import largest_lesion_index, show_slice
    from napari_vae_anomaly.models import bundled_model_path
    from napari_vae_anomaly.widgets.detect import DetectWidget

    viewer = make_napari_viewer(show=True)
    (img, img_kw, _), (truth_data, truth_kw, _) = sample_with_lesions()
    scan = viewer.add_image(img, **img_kw)
    truth = viewer.add_labels(truth_data, **truth_kw)
    widget = DetectWidget(viewer)
    assert widget.add_model_path(bundled_model_path()) is not None
    widget.set_predictors([PREDICTOR])
    widget.run()
    qtbot.waitUntil(lambda: not widget.is_running(), timeout=60_000)
    res = widget.result
    assert res is not None and list(res.outcome.maps) == [PREDICTOR]
    heat = res.heatmaps[PREDICTOR]

    index = largest_lesion_index(truth_data)
    viewer.reset_view()
    show_slice(viewer, scan, index)
    res.mask.layer.visible = False
    viewer.screenshot(canvas_only=False, flash=False)  # the first canvas grab can be black

    heat.visible, truth.visible = True, False
    with_heat = _canvas(viewer, qtbot)
    heat.visible = False
    plain = _canvas(viewer, qtbot)
    truth.visible = True
    with_truth = _canvas(viewer, qtbot)

    lesion = np.abs(with_truth - plain).sum(-1) > 30
    assert lesion.sum() > 200, "the ground-truth lesion should cover a region of the canvas"
    brain = plain.mean(-1) > 40
    normal = brain & ~ndimage.binary_dilation(lesion, iterations=15)
    assert normal.sum() > 10 * lesion.sum() / 2
    colour = np.abs(with_heat - plain).sum(-1).astype(float)
    inside, outside = colour[lesion].mean(), colour[normal].mean()
    # measured (widget default contrast limits, lower limit near the 92nd percentile):
    # lesion 167, normal tissue 5 (x35); the assertions leave a wide margin
    assert inside > 60, f"heat colour inside the lesion too faint: {inside:.1f}"
    assert inside > 4 * outside, f"lesion {inside:.1f} vs normal tissue {outside:.1f}"

    # the lesion centre, mapped from voxel -> world -> canvas, falls in the lesion region
    world = np.asarray(scan.data_to_world(np.asarray(index, dtype=float)))
    row, col = _world_to_canvas(viewer, world[-2:], lesion.shape)
    window = lesion[max(row - 3, 0): row + 4, max(col - 3, 0): col + 4]
    assert window.any(), f"lesion centre maps to canvas ({row}, {col}) outside the lesion"


# ----------------------------------------------------------------- every dock open
SCREEN = (1920, 1080)  # (width, height) of the screen the four docks must fit


def _docks(viewer, tabify: bool) -> dict:
    from npe2 import PluginManager

    from napari_vae_anomaly.demo import PLUGIN, dock_widgets

    if tabify:  # as `make demo` opens them
        return dock_widgets(viewer)
    manifest = PluginManager.instance().get_manifest(PLUGIN)
    return {c.display_name: viewer.window.add_plugin_dock_widget(PLUGIN, c.display_name)[1]
            for c in manifest.contributions.widgets}


def _header_overflow(table) -> list[str]:
    """Header texts wider than their column (those napari would elide)."""
    header = table.horizontalHeader()
    fm = header.fontMetrics()
    cut = []
    for i in range(table.columnCount()):
        text = table.horizontalHeaderItem(i).text()
        width = max(fm.horizontalAdvance(line) for line in text.splitlines())
        if header.sectionSize(i) < width:
            cut.append(f"{text!r}: {header.sectionSize(i)} < {width}")
    return cut


@pytest.mark.parametrize("tabify", [True, False], ids=["tabified", "stacked"])
def test_all_docks_fit_the_screen(make_napari_viewer, qtbot, tabify):
    from qtpy.QtWidgets import QDockWidget, QScrollArea, QTableWidget

    from napari_vae_anomaly._sample_data import sample_with_lesions

    viewer = make_napari_viewer(show=True)
    (img, img_kw, _), (truth, truth_kw, _) = sample_with_lesions()
    viewer.add_image(img, **img_kw)
    viewer.add_labels(truth, **truth_kw)
    window = viewer.window._qt_window
    window.resize(*SCREEN)
    docked = _docks(viewer, tabify)
    assert set(docked) == {"Load volume", "Train VAE", "Detect anomalies", "Evaluate"}
    qtbot.wait(200)

    # before scroll areas: 1278 px minimum height, the window grew to 1280 px (1212 px Train)
    minimum = window.minimumSizeHint()
    assert minimum.width() <= SCREEN[0] and minimum.height() <= SCREEN[1], minimum
    assert (window.width(), window.height()) == SCREEN
    shot = np.asarray(viewer.screenshot(canvas_only=False, flash=False))  # real rendering
    assert shot.shape[0] <= SCREEN[1] and shot.shape[1] <= SCREEN[0], shot.shape
    tables = []
    for name, widget in docked.items():
        assert isinstance(widget.scroll_area, QScrollArea), name
        dock = widget.parent()
        while not isinstance(dock, QDockWidget):
            dock = dock.parent()
        hint = dock.minimumSizeHint()
        assert hint.height() < 200 and hint.width() < 200, (name, hint)  # shrinks; content scrolls
        tables += widget.findChildren(QTableWidget)
    assert len(tables) == 2  # the lesion table and the Evaluate table
    for table in tables:
        assert _header_overflow(table) == []
        assert all(table.horizontalHeaderItem(i).toolTip() for i in range(table.columnCount()))
