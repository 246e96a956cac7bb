"""The Load volume dock widget under the virtual X server (real viewer, real files)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
SimpleITK = pytest.importorskip("SimpleITK")

from napari.layers import Image, Labels  # noqa: E402

from napari_vae_anomaly.io import Geometry  # noqa: E402


def _scan(shape=(12, 24, 28)) -> np.ndarray:
    """A bright ellipsoid with some texture on a zero background."""
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    inside = (z / 0.8) ** 2 + (y / 0.7) ** 2 + (x / 0.7) ** 2 < 1
    rng = np.random.default_rng(3)
    data = np.where(inside, 300 + 80 * x + rng.normal(0, 10, shape), 0.0)
    return data.astype(np.float32)


def _write(path, data: np.ndarray, geometry: Geometry) -> None:
    img = SimpleITK.GetImageFromArray(data)
    geometry.apply_to_sitk(img)
    SimpleITK.WriteImage(img, str(path))


@pytest.fixture
def widget(make_napari_viewer, qtbot):
    from napari_vae_anomaly.widgets.load_volume import LoadVolumeWidget

    viewer = make_napari_viewer()
    w = LoadVolumeWidget(viewer)
    qtbot.addWidget(w)
    return w


def _assert_same_grid(layer, geometry: Geometry) -> None:
    """scale/translate and metadata geometry match (NIfTI stores float32 headers)."""
    np.testing.assert_allclose(layer.scale, geometry.scale, rtol=1e-6)
    np.testing.assert_allclose(layer.translate, geometry.translate, rtol=1e-6)
    got = Geometry.from_metadata(layer.metadata)
    assert got is not None
    np.testing.assert_allclose(got.spacing, geometry.spacing, rtol=1e-6)
    np.testing.assert_allclose(got.origin, geometry.origin, rtol=1e-6)
    np.testing.assert_allclose(got.direction, geometry.direction, atol=1e-6)
    assert got.is_oblique() == geometry.is_oblique()


def test_load_nifti_keeps_geometry_and_describes_it(widget, tmp_path, oblique_geometry, notes):
    data = _scan()
    path = tmp_path / "case01.nii.gz"
    _write(path, data, oblique_geometry)

    layer = widget.load_path(path)

    assert notes["error"] == []
    assert isinstance(layer, Image)
    assert layer.name == "case01"
    np.testing.assert_allclose(layer.data, data)
    _assert_same_grid(layer, oblique_geometry)
    text = widget.info_text.toPlainText()
    assert "12 x 24 x 28" in text
    assert "spacing: 3 x 1.1 x 0.9 mm" in text  # (z, y, x), like the size
    assert "origin: (40.0, 12.2, -91.5) mm" in text
    assert "oblique" in text
    assert "float32" in text
    assert f"{data.max():.4g}" in text  # intensity range
    assert widget.layer_combo.currentText() == "case01"
    assert not widget.channel_combo.isEnabled()


def test_foreground_mask_and_normalization_preview(widget, tmp_path, oblique_geometry, notes):
    data = _scan()
    path = tmp_path / "case02.nii.gz"
    _write(path, data, oblique_geometry)
    scan = widget.load_path(path)

    scan_geometry = Geometry.from_metadata(scan.metadata)
    mask_layer = widget.add_foreground_mask()
    assert isinstance(mask_layer, Labels)
    assert mask_layer.name == "case02 foreground"
    assert mask_layer.data.dtype == np.uint8
    assert mask_layer.data.shape == scan.data.shape
    _assert_same_grid(mask_layer, oblique_geometry)
    assert Geometry.from_metadata(mask_layer.metadata) == scan_geometry  # exact copy
    inside = data > 0
    agree = np.mean((mask_layer.data > 0) == inside)
    assert agree > 0.95, agree

    widget.clip_low.setValue(1.0)
    widget.clip_high.setValue(99.0)
    norm = widget.preview_normalization()
    assert isinstance(norm, Image)
    assert norm.name == "case02 (normalized)"
    _assert_same_grid(norm, oblique_geometry)
    assert Geometry.from_metadata(norm.metadata) == scan_geometry
    fg = np.asarray(norm.data)[mask_layer.data > 0]
    assert abs(float(fg.mean())) < 0.1
    assert 0.7 < float(fg.std()) < 1.3
    assert notes["error"] == []

    # a second preview updates the same layer instead of adding one
    n_layers = len(widget.viewer.layers)
    widget.preview_normalization()
    assert len(widget.viewer.layers) == n_layers
    # the info panel follows the layer selection
    widget.layer_combo.setCurrentText("case02 (normalized)")
    assert "layer: case02 (normalized)" in widget.info_text.toPlainText()


def test_corrupt_file_shows_one_line_error_and_adds_no_layer(widget, tmp_path, notes):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"this is not a NIfTI file at all")

    assert widget.load_path(bad) is None

    assert len(widget.viewer.layers) == 0
    assert len(notes["error"]) == 1
    message = notes["error"][0]
    assert "broken.nii.gz" in message
    assert "\n" not in message and "Traceback" not in message


def test_widget_acts_on_already_open_layer(widget, oblique_geometry, notes):
    data = _scan()
    widget.viewer.add_image(data, name="open", **oblique_geometry.layer_kwargs())
    assert widget.layer_combo.currentText() == "open"
    assert "spacing: 3 x 1.1 x 0.9 mm" in widget.info_text.toPlainText()
    mask = widget.add_foreground_mask()
    _assert_same_grid(mask, oblique_geometry)
    # a plain layer without geometry metadata still gets its scale/translate copied
    widget.viewer.add_image(data, name="plain", scale=(2.0, 1.0, 0.5), translate=(5, 6, 7))
    widget.layer_combo.setCurrentText("plain")
    plain_mask = widget.add_foreground_mask()
    np.testing.assert_allclose(plain_mask.scale, (2.0, 1.0, 0.5))
    np.testing.assert_allclose(plain_mask.translate, (5, 6, 7))
    assert notes["error"] == []


def test_four_d_file_channel_choice(widget, tmp_path, notes):
    ch0 = _scan((8, 16, 18))
    ch1 = (ch0 * -0.5 + 7).astype(np.float32)
    img = SimpleITK.GetImageFromArray(np.stack([ch0, ch1]), isVector=False)  # 4-D scalar
    img.SetSpacing((0.8, 0.9, 2.5, 1.0))
    img.SetOrigin((10.0, -20.0, 30.0, 0.0))
    path = tmp_path / "multi.nii.gz"
    SimpleITK.WriteImage(img, str(path))

    layer = widget.load_path(path)
    assert layer is not None, notes
    np.testing.assert_allclose(layer.data, ch0)
    assert widget.channel_combo.isEnabled()
    assert widget.channel_combo.count() == 2

    # choosing channel 1 replaces the data of the same layer, geometry unchanged
    widget.set_channel(1)
    assert len(widget.viewer.layers) == 1
    assert widget.viewer.layers[0] is layer
    np.testing.assert_allclose(layer.data, ch1)
    assert layer.metadata["channel"] == 1
    np.testing.assert_allclose(layer.scale, (2.5, 0.9, 0.8))
    np.testing.assert_allclose(layer.translate, (30.0, -20.0, 10.0))
    assert widget.channel_combo.currentIndex() == 1
    assert notes["error"] == []

    # loading a chosen channel directly
    other = widget.load_path(path, channel=1)
    np.testing.assert_allclose(other.data, ch1)
