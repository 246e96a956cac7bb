"""The job owner every dock widget shares (widgets/jobs.py), and the words it leaves behind:
"Cancelled" after a cancel (never an older progress line), one-line errors without class names
or tracebacks, late signals ignored after closing; RGB images named as unsupported."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")


def _counting_job(n: int, *, stop: threading.Event, fail_at: int = -1, delay: float = 0.01):
    for i in range(n):
        if stop.is_set():
            return "stopped"
        if i == fail_at:
            raise ValueError("the scan has no voxels\nsecond line")
        time.sleep(delay)
        yield (i + 1, n)
    return "done"


@pytest.fixture
def owner(qtbot):
    from qtpy.QtWidgets import QLabel, QWidget

    from napari_vae_anomaly.widgets.jobs import JobOwner

    widget = QWidget()
    label = QLabel(widget)
    qtbot.addWidget(widget)
    return JobOwner(widget, label, "Counting"), label, widget


def _progress_that_processes_events(p):
    """Like napari's progress bar: refreshing it may run queued events (the job's end)."""
    from qtpy.QtWidgets import QApplication

    QApplication.processEvents()
    return f"maps: {p[0]}/{p[1]}"


def test_cancel_ends_with_cancelled_not_an_older_progress_line(owner, qtbot, notes):
    jobs, label, _ = owner
    done = []
    job = jobs.start(_counting_job, 400, on_progress=_progress_that_processes_events,
                     on_done=done.append)
    qtbot.waitUntil(lambda: job.yielded >= 3, timeout=10_000)
    assert label.text().startswith("maps: ")
    assert jobs.cancel()
    qtbot.waitUntil(lambda: not jobs.running, timeout=10_000)
    qtbot.wait(100)  # any queued progress signal has been delivered by now
    assert label.text() == "Cancelled"
    assert done == []  # a cancelled job's result is discarded
    assert notes["info"] == ["Counting cancelled"]
    assert job.yielded < 400


def test_stop_keeps_the_result(owner, qtbot):
    jobs, label, _ = owner
    done = []
    job = jobs.start(_counting_job, 400, on_progress=lambda p: f"{p[0]}/{p[1]}",
                     on_done=done.append)
    qtbot.waitUntil(lambda: job.yielded >= 2, timeout=10_000)
    assert jobs.stop("Stopping...")
    qtbot.waitUntil(lambda: not jobs.running, timeout=10_000)
    assert done == ["stopped"]  # the core loop returned normally
    assert label.text() == "Stopping..."  # the widget's on_done writes the final word


def test_error_is_one_line_without_class_name_or_traceback(owner, qtbot, notes, caplog):
    jobs, label, _ = owner
    with caplog.at_level(logging.DEBUG, logger="napari_vae_anomaly"):
        jobs.start(_counting_job, 10, fail_at=2)
        qtbot.waitUntil(lambda: not jobs.running, timeout=10_000)
    assert notes["error"] == ["Counting failed: the scan has no voxels"]
    assert label.text() == "Failed: the scan has no voxels"
    assert not [r for r in caplog.records if r.exc_info]  # a user error logs no traceback


def test_unexpected_error_names_no_class_but_logs_its_traceback(caplog, notes):
    from napari_vae_anomaly.widgets._common import report_error

    with caplog.at_level(logging.ERROR, logger="napari_vae_anomaly"):
        report_error(TypeError("unsupported operand"), "Evaluate")
    assert notes["error"] == ["Evaluate: unexpected error (unsupported operand)"]
    assert any(r.exc_info for r in caplog.records)  # for a bug report


def test_closing_the_widget_aborts_and_ignores_late_signals(qtbot):
    from qtpy.QtWidgets import QLabel, QWidget

    from napari_vae_anomaly.widgets.jobs import JobOwner

    widget = QWidget()  # not given to qtbot: this test deletes it
    jobs = JobOwner(widget, QLabel(widget), "Counting")
    done = []
    job = jobs.start(_counting_job, 10_000, on_progress=lambda p: "running",
                     on_done=done.append)
    qtbot.waitUntil(lambda: job.yielded >= 1, timeout=10_000)
    widget.close()
    widget.deleteLater()
    qtbot.waitUntil(lambda: jobs.closed, timeout=5_000)
    assert job.stop_event.is_set() and job.worker.thread_done.wait(5)
    qtbot.wait(50)
    assert done == []


def test_training_and_evaluate_form_errors_are_one_clean_line(make_napari_viewer, qtbot, notes,
                                                              caplog):
    from napari_vae_anomaly.widgets.evaluation import EvaluationWidget
    from napari_vae_anomaly.widgets.training import TrainingWidget

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((4, 8, 8), np.float32), name="scan")
    train, evaluate = TrainingWidget(viewer), EvaluationWidget(viewer)
    qtbot.addWidget(train)
    qtbot.addWidget(evaluate)
    with caplog.at_level(logging.DEBUG):
        assert train.start() is None  # no output file
        assert evaluate.evaluate() is None  # no map
    assert notes["error"] == [
        "Cannot start training: Choose an output model file first",
        "Cannot evaluate: choose at least one anomaly map",
    ]
    assert not [r for r in caplog.records if r.exc_info]


def test_detect_names_an_rgb_image_as_unsupported(make_napari_viewer, qtbot, notes):
    from napari_vae_anomaly.widgets.detect import DetectWidget

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((20, 30, 3), np.uint8), name="photo", rgb=True)
    widget = DetectWidget(viewer, settings=None)
    qtbot.addWidget(widget)
    widget.run()
    assert len(notes["error"]) == 1
    assert "RGB image 'photo' is not supported" in notes["error"][0]
    assert widget.job is None

    from napari_vae_anomaly.widgets.load_volume import LoadVolumeWidget

    load = LoadVolumeWidget(viewer)
    qtbot.addWidget(load)
    load.preview_normalization()
    assert notes["error"][1] == ("RGB image 'photo' is not supported: "
                                 "the models read grey-value scans.")


def test_every_widget_uses_the_shared_layer_combo_which_follows_a_renamed_layer(
        make_napari_viewer, qtbot):
    from napari_vae_anomaly.widgets._common import LayerCombo
    from napari_vae_anomaly.widgets.detect import DetectWidget
    from napari_vae_anomaly.widgets.evaluation import EvaluationWidget
    from napari_vae_anomaly.widgets.load_volume import LoadVolumeWidget

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((4, 8, 8), np.float32), name="a")
    second = viewer.add_image(np.ones((4, 8, 8), np.float32), name="b")
    detect = DetectWidget(viewer, settings=None)
    widgets = [detect, EvaluationWidget(viewer), LoadVolumeWidget(viewer)]
    for w in widgets:
        qtbot.addWidget(w)
        assert w.findChildren(LayerCombo), type(w).__name__
    detect.select_layer(second)
    second.name = "b renamed"
    assert detect.selected_layer() is second
    assert detect.image_combo.currentText() == "b renamed"
    viewer.layers.remove("a")
    assert detect.selected_layer() is second
    assert [detect.image_combo.itemText(i) for i in range(detect.image_combo.count())] == [
        "b renamed"]
