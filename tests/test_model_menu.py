"""Models one click away: the catalog (bundled, just trained, recent, model folder) and the
Detect widget's model menu built from it, with the model card in each entry's tooltip."""

from __future__ import annotations

import shutil

import pytest

from napari_vae_anomaly.models import catalog
from napari_vae_anomaly.models.bundled import bundled_model_path


@pytest.fixture
def model_files(tmp_path, monkeypatch):
    """Three copies of the bundled model: one in a model folder, one trained, one recent."""
    monkeypatch.setattr(catalog, "_trained", [])
    folder = tmp_path / "models"
    folder.mkdir()
    paths = {}
    for name, where in (("folder_a", folder), ("trained", tmp_path), ("recent", tmp_path)):
        paths[name] = where / f"{name}.safetensors"
        shutil.copyfile(bundled_model_path(), paths[name])
    (folder / "notes.txt").write_text("not a model")
    return folder, paths


def test_catalog_groups_each_file_once_and_skips_missing(model_files):
    folder, paths = model_files
    catalog.remember_trained(paths["trained"])
    recent = catalog.push_recent([], paths["recent"])
    recent = catalog.push_recent(recent, folder / "gone.safetensors")  # deleted since
    recent = catalog.push_recent(recent, paths["trained"])  # also in "trained": listed once
    entries = catalog.model_entries(str(folder), recent)
    assert [(e.group, e.path.name) for e in entries] == [
        ("bundled", "demo_model.safetensors"),
        ("trained", "trained.safetensors"),
        ("recent", "recent.safetensors"),
        ("folder", "folder_a.safetensors"),
    ]
    assert catalog.model_entries("", None)[0].group == "bundled"
    assert catalog.folder_models(folder / "missing") == []


def test_recent_list_is_newest_first_and_bounded(tmp_path):
    recent: list[str] = []
    for i in range(catalog.MAX_RECENT + 3):
        recent = catalog.push_recent(recent, tmp_path / f"m{i}.safetensors")
    recent = catalog.push_recent(recent, tmp_path / "m5.safetensors")
    assert len(recent) == catalog.MAX_RECENT
    assert recent[0].endswith("m5.safetensors") and recent[1].endswith("m10.safetensors")
    assert sum(r.endswith("m5.safetensors") for r in recent) == 1


def test_tooltip_is_the_card_summary_or_a_reason(tmp_path):
    tip = catalog.card_tooltip(bundled_model_path())
    assert "Model: demo_model" in tip and "VAE 64x64" in tip and "Trained on 24 volume(s)" in tip
    assert "Training volumes: 94 x 116 x 98 voxels, spacing 2 x 2 x 2 mm" in tip
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    assert "cannot read its model card" in catalog.card_tooltip(bad)


def test_detect_menu_adds_the_bundled_and_folder_models(make_napari_viewer, model_files,
                                                        monkeypatch):
    pytest.importorskip("napari")
    from napari_vae_anomaly.preferences import Preferences
    from napari_vae_anomaly.widgets import detect as detect_mod

    folder, paths = model_files
    catalog.remember_trained(paths["trained"])
    monkeypatch.setattr("napari_vae_anomaly.preferences.load_preferences",
                        lambda: Preferences(model_folder=str(folder)))
    widget = detect_mod.DetectWidget(make_napari_viewer())
    menu = widget.model_menu
    menu.aboutToShow.emit()
    actions = [a for a in menu.actions() if not a.isSeparator() and a.text()]
    texts = [a.text() for a in actions]
    assert texts[0].startswith("Demo model (bundled")
    assert "trained.safetensors" in texts and "folder_a.safetensors" in texts
    assert texts[-1] == "Browse for a model file..."
    sections = [a.text() for a in menu.actions() if a.isSeparator() and a.text()]
    assert sections == ["Just trained", "Model folder"]
    assert "VAE 64x64" in actions[0].toolTip()

    actions[0].trigger()
    assert [m.name for m in widget.models] == ["demo_model"]
    menu.aboutToShow.emit()  # now recent too, but listed once (under "bundled")
    assert [a.text() for a in menu.actions()].count(texts[0]) == 1
    next(a for a in menu.actions() if a.text() == "folder_a.safetensors").trigger()
    assert len(widget.models) == 2
    assert widget._recent[0] == str(paths["folder_a"].resolve())
