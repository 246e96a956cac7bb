"""The napari writers: masks and images saved from layers keep the scan's exact geometry."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
import SimpleITK as sitk

from napari_vae_anomaly._writer import layer_geometry, write_image, write_labels
from napari_vae_anomaly.io import Geometry, read_volume, write_volume

PLUGIN = "napari-vae-anomaly"
FORMATS = [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"]


@pytest.fixture(scope="module")
def npe2():
    import npe2

    npe2.PluginManager.instance().discover()
    return npe2


@pytest.fixture
def scan(rng) -> np.ndarray:
    return rng.normal(100.0, 20.0, size=(6, 7, 8)).astype(np.float32)


def sitk_geometry(path) -> tuple:
    img = sitk.ReadImage(str(path))
    return img.GetSpacing(), img.GetOrigin(), img.GetDirection()


def tol(ext: str) -> float:
    return 1e-6 if ext.startswith(".nii") else 1e-12


@pytest.mark.parametrize("ext", FORMATS)
def test_mask_saved_from_a_read_scan_overlays_it_exactly(tmp_path, scan, oblique_geometry,
                                                         npe2, ext):
    """Scan -> plugin reader -> Labels layer (inherits metadata) -> plugin writer -> file."""
    src = write_volume(tmp_path / f"scan{ext}", scan, oblique_geometry)
    (data, kwargs, _t), = npe2.read([str(src)], stack=False, plugin_name=PLUGIN)
    mask = (data > 110).astype(np.int64)  # napari may hand over any integer dtype
    labels_meta = {"scale": kwargs["scale"], "translate": kwargs["translate"],
                   "metadata": kwargs["metadata"], "name": "lesions"}
    out = tmp_path / f"mask{ext}"
    written = npe2.write(str(out), [(mask, labels_meta, "labels")], plugin_name=PLUGIN)
    assert written == [str(out)]

    img_sp, img_org, img_dir = sitk_geometry(src)
    sp, org, d = sitk_geometry(out)  # read by SimpleITK directly, as another tool would
    assert sp == pytest.approx(img_sp, abs=tol(ext))
    assert org == pytest.approx(img_org, abs=tol(ext) * 100)
    assert d == pytest.approx(img_dir, abs=tol(ext))
    assert d == pytest.approx(oblique_geometry.direction, abs=tol(ext))
    back = read_volume(out)
    assert back.data.dtype == np.uint8
    np.testing.assert_array_equal(back.data, mask)


@pytest.mark.parametrize("ext", FORMATS)
def test_image_layer_round_trip_through_napari_layers(tmp_path, scan, oblique_geometry, npe2,
                                                      ext):
    from napari.layers import Image

    src = write_volume(tmp_path / f"scan{ext}", scan, oblique_geometry)
    (data, kwargs, _t), = npe2.read([str(src)], stack=False, plugin_name=PLUGIN)
    layer = Image(data, **kwargs)
    out = tmp_path / f"copy{ext}"
    assert npe2.write(str(out), [layer], plugin_name=PLUGIN) == [str(out)]
    back = read_volume(out)
    assert back.data.dtype == np.float32
    np.testing.assert_array_equal(back.data, scan)
    assert back.geometry.direction == pytest.approx(oblique_geometry.direction, abs=tol(ext))
    assert back.geometry.origin == pytest.approx(oblique_geometry.origin, abs=tol(ext) * 100)
    assert back.geometry.spacing == pytest.approx(oblique_geometry.spacing, abs=tol(ext))


def test_labels_layer_object_and_dtype_widening(tmp_path, oblique_geometry, npe2):
    from napari.layers import Labels

    data = np.zeros((4, 5, 6), np.int32)
    data[1, 2, 3] = 7
    layer = Labels(data, scale=oblique_geometry.scale, translate=oblique_geometry.translate,
                   metadata={"geometry": oblique_geometry.to_dict()})
    out = tmp_path / "small.nrrd"
    npe2.write(str(out), [layer], plugin_name=PLUGIN)
    assert read_volume(out).data.dtype == np.uint8
    data[0, 0, 0] = 300
    npe2.write(str(tmp_path / "big.nrrd"), [Labels(data)], plugin_name=PLUGIN)
    back = read_volume(tmp_path / "big.nrrd")
    assert back.data.dtype == np.uint16 and back.data.max() == 300


def test_layer_without_stored_geometry_uses_scale_and_translate(tmp_path):
    mask = np.ones((3, 4, 5), np.uint8)
    meta = {"scale": (2.0, 0.5, 0.25), "translate": (10.0, 20.0, 30.0), "metadata": {}}
    (path,) = write_labels(str(tmp_path / "m.nii.gz"), mask, meta)
    g = read_volume(path).geometry
    assert g.spacing == pytest.approx((0.25, 0.5, 2.0))
    assert g.origin == pytest.approx((30.0, 20.0, 10.0))
    assert g.is_identity_direction()


def test_stored_geometry_of_other_dimension_is_ignored(oblique_geometry):
    meta = {"scale": (0.5, 0.25), "translate": (1.0, 2.0),
            "metadata": {"geometry": oblique_geometry.to_dict()}}
    g = layer_geometry(np.zeros((4, 5)), meta)
    assert g.ndim == 2 and g.spacing == (0.25, 0.5) and g.origin == (2.0, 1.0)
    assert layer_geometry(np.zeros((2, 3, 4)), meta) == oblique_geometry


def test_writer_overwrites_because_napari_already_asked(tmp_path):
    path = tmp_path / "m.mha"
    write_volume(path, np.zeros((3, 4, 5), np.uint8), Geometry.identity(3))
    assert write_labels(str(path), np.ones((3, 4, 5), np.uint8), {}) == [str(path)]
    assert read_volume(path).data.min() == 1


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda d: write_labels(str(d / "x.png"), np.ones((2, 3, 4), np.uint8), {}),
         r"x\.png: cannot write this file type"),
        (lambda d: write_labels(str(d / "no" / "x.nii"), np.ones((2, 3, 4), np.uint8), {}),
         r"x\.nii: the folder .* does not exist"),
        (lambda d: write_labels(str(d / "x.nii"), np.ones((2, 3, 4), np.float32), {}),
         r"labels must be integers, got float32"),
        (lambda d: write_image(str(d / "x.nii"), np.ones((4, 5, 3), np.uint8), {"rgb": True}),
         r"x\.nii: RGB images cannot be saved"),
    ],
)
def test_failures_notify_and_return_nothing(tmp_path, records, call, message):
    assert call(tmp_path) == []
    (severity, text), = records()
    assert severity == "error"
    assert re.search(message, text), text
    assert [p for p in os.listdir(tmp_path) if p != "no"] == []
