"""The Training dock widget under the virtual X server: start, progress, stop, load, unload.

Tiny settings throughout (size 32, a few feature maps, two 12 x 32 x 32 phantoms) so the
file runs in well under a minute on two shared CPU cores.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("torch")

TINY = dict(size=32, features=(4, 8), latent=8, beta=0.5, likelihood="laplace",
            batch_size=8, lr=2e-3, seed=3, device="cpu")


@pytest.fixture
def widget(make_napari_viewer, qtbot):
    from napari_vae_anomaly.data.phantom import make_phantom
    from napari_vae_anomaly.widgets.training import TrainingWidget

    viewer = make_napari_viewer()
    for seed in (1, 2):
        ph = make_phantom(seed=seed, shape=(12, 32, 32), lesions=False)
        viewer.add_image(ph.image, name=f"normal{seed}", **ph.geometry.layer_kwargs())
    w = TrainingWidget(viewer)
    qtbot.addWidget(w)
    w.select_layers(["normal1", "normal2"])
    w.set_hyperparameters(**TINY)
    return w


def _wait_done(qtbot, w, timeout=30_000):
    qtbot.waitUntil(lambda: not w.is_running(), timeout=timeout)


def test_heatmaps_and_masks_are_not_offered_as_normal_data(widget, qtbot):
    viewer = widget.viewer
    viewer.add_image(np.zeros((12, 32, 32), np.float32), name="scan combi",
                     metadata={"vae_anomaly": {"role": "heatmap"}})
    viewer.add_labels(np.zeros((12, 32, 32), np.uint8), name="scan anomaly mask")
    viewer.add_image(np.zeros((12, 32, 32), np.float32), name="another scan")
    names = [widget.layer_list.item(i).text() for i in range(widget.layer_list.count())]
    assert names == ["normal1", "normal2", "another scan"]


def test_form_and_device_list(widget):
    from napari_vae_anomaly.devices import available_devices

    items = [widget.device_combo.itemText(i) for i in range(widget.device_combo.count())]
    assert items == ["auto", *available_devices()]
    assert [widget.size_combo.itemText(i) for i in range(3)] == ["64", "128", "256"]
    assert widget.layer_list.selected_names() == ["normal1", "normal2"]
    config = widget.build_config()
    assert config.vae.size == 32 and config.vae.features == (4, 8)
    assert config.vae.beta == 0.5 and config.vae.likelihood == "laplace"
    assert config.batch_size == 8 and config.device == "cpu" and config.seed == 3
    widget.set_hyperparameters(time_budget=12)
    config = widget.build_config()
    assert config.epochs is None and config.time_budget_s == 12
    assert widget.time_spin.isEnabled() and not widget.epochs_spin.isEnabled()


def test_start_refuses_bad_form_with_a_message(widget, tmp_path, notes):
    assert widget.start() is None  # no output file chosen
    assert "output model" in notes["error"][-1]
    existing = tmp_path / "taken.safetensors"
    existing.write_bytes(b"x")
    widget.set_output_path(existing)
    assert widget.start() is None
    assert "exists" in notes["error"][-1]
    widget.set_output_path(tmp_path / "m.safetensors")
    widget.features_edit.setText("4,x")
    assert widget.start() is None
    assert "Feature maps" in notes["error"][-1]
    assert widget.job is None
    assert existing.read_bytes() == b"x"


def test_training_finishes_writes_loadable_model_and_shows_card(widget, qtbot, tmp_path, notes):
    from napari_vae_anomaly.models.checkpoint import load_checkpoint

    out = tmp_path / "model.safetensors"
    widget.set_output_path(out)
    widget.set_hyperparameters(epochs=2)
    job = widget.start()
    assert job is not None and widget.is_running()
    assert not widget.start_button.isEnabled() and widget.stop_button.isEnabled()

    qtbot.waitUntil(lambda: job.yielded > 0 and widget.loss_plot.points("train_loss") > 0,
                    timeout=20_000)
    # the status line follows the batches (a fast machine may already show the final line)
    assert re.search(r"epoch \d+, batch \d+/\d+", widget.status_label.text())
    _wait_done(qtbot, widget)

    assert notes["error"] == [], notes["error"]
    p = widget.last_progress
    assert p.total_steps and p.step == p.total_steps
    assert f"Last batch: epoch 2, batch {p.step}/{p.total_steps}" in widget.status_label.text()
    # napari's activity bar followed the batches
    assert job.pbar.total == p.total_steps
    assert widget.loss_plot.points("train_loss") == p.total_steps
    assert widget.loss_plot.points("val_loss") == 2  # one point per epoch
    assert widget.loss_plot.points("train_kl") == p.total_steps
    assert widget.loss_plot.draw_count >= 1
    assert "slices/s" in widget.status_label.text()

    assert out.exists()
    loaded = load_checkpoint(out)
    assert loaded.config.size == 32 and loaded.config.beta == 0.5
    assert any(str(out) in m and "finished" in m for m in notes["info"])
    # the trained model became the widget's model, card shown
    assert widget.loaded_model is not None
    text = widget.card_text.toPlainText()
    assert "beta: 0.5" in text and "likelihood: laplace" in text
    assert widget.start_button.isEnabled() and not widget.stop_button.isEnabled()
    # ... and the Detect widget's model menu offers it
    from napari_vae_anomaly.models.catalog import trained_models

    assert trained_models()[0] == out.resolve()


def test_stop_keeps_best_model(widget, qtbot, tmp_path, notes):
    from napari_vae_anomaly.models.checkpoint import load_checkpoint

    out = tmp_path / "stopped.safetensors"
    widget.set_output_path(out)
    widget.set_hyperparameters(epochs=200)
    job = widget.start()
    # wait for the first validation (the first best model is written then)
    qtbot.waitUntil(lambda: widget.loss_plot.points("val_loss") >= 1, timeout=20_000)
    widget.stop()
    assert job.stop_event.is_set()
    _wait_done(qtbot, widget)

    assert notes["error"] == [], notes["error"]
    assert job.result.stopped_reason == "stopped"
    assert widget.last_progress.step < widget.last_progress.total_steps
    assert out.exists()
    assert load_checkpoint(out).config.latent == 8
    assert any("stopped" in m and str(out) in m for m in notes["info"])
    assert widget.loaded_model is not None


def test_load_replace_and_unload_free_the_model(widget, qtbot, tmp_path, notes, monkeypatch):
    import napari_vae_anomaly.devices as devices
    from napari_vae_anomaly.models.checkpoint import save_checkpoint
    from napari_vae_anomaly.models.vae import VAE, VAEConfig
    from napari_vae_anomaly.preprocessing import PreprocessConfig

    released = []
    monkeypatch.setattr(devices, "release_model", lambda m: released.append(m))
    paths = []
    for i, beta in enumerate((0.25, 4.0)):
        cfg = VAEConfig(size=32, features=(4, 8), latent=8, beta=beta, likelihood="gaussian")
        card = {"architecture": cfg.to_dict(), "beta": beta, "likelihood": "gaussian"}
        paths.append(save_checkpoint(tmp_path / f"m{i}.safetensors", VAE(cfg), card,
                                     PreprocessConfig(size=32)))

    first = widget.load_model(paths[0])
    assert first is widget.loaded_model
    text = widget.card_text.toPlainText()
    assert "beta: 0.25" in text and "likelihood: gaussian" in text
    assert released == []

    widget.load_model(paths[1])  # replacing frees the first model
    assert released == [first.model]
    assert "beta: 4" in widget.card_text.toPlainText()

    widget.unload_model()
    assert widget.loaded_model is None
    assert widget.card_text.toPlainText() == ""
    assert len(released) == 2

    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x80\x04 pickle-ish junk")
    assert widget.load_model(bad) is None
    assert len(notes["error"]) == 1 and "bad.safetensors" in notes["error"][0]
    assert "\n" not in notes["error"][0]


def test_closing_the_widget_stops_a_running_job(widget, qtbot, tmp_path):
    widget.set_output_path(tmp_path / "closed.safetensors")
    widget.set_hyperparameters(epochs=500)
    job = widget.start()
    qtbot.waitUntil(lambda: job.yielded > 0, timeout=20_000)
    widget.close()
    assert job.stop_event.is_set()
    assert job.worker.thread_done.wait(10)
    qtbot.waitUntil(lambda: not job.running, timeout=5_000)
    assert job.yielded < widget.last_progress.total_steps  # ended long before 500 epochs
    assert job.result is None  # aborted: no result, nothing announced


def test_napari_cancel_on_viewer_close_sets_the_stop_event(widget, qtbot, tmp_path):
    """napari cancels running workers on window close by calling ``worker.quit``."""
    widget.set_output_path(tmp_path / "cancelled.safetensors")
    widget.set_hyperparameters(epochs=500)
    job = widget.start()
    qtbot.waitUntil(lambda: job.yielded > 0, timeout=20_000)
    job.worker.quit()
    assert job.stop_event.is_set()
    qtbot.waitUntil(lambda: not widget.is_running(), timeout=10_000)
    assert widget.start_button.isEnabled()
