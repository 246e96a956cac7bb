"""napari's File > Open / Save with DICOM: a mask saved as DICOM SEG (a map as a Parametric Map)
from a scan read as a DICOM series, and the SEG reopened as Labels on that series."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

pytest.importorskip("highdicom")

import highdicom as hd  # noqa: E402

from _dicom_series import write_series  # noqa: E402
from napari_vae_anomaly.io import write_volume  # noqa: E402

PLUGIN = "napari-vae-anomaly"
SHAPE = (5, 9, 11)


@pytest.fixture(scope="module")
def npe2():
    import npe2

    npe2.PluginManager.instance().discover()
    return npe2


@pytest.fixture
def scan(tmp_path, rng, npe2):
    """The series on disk, and the layer data tuple napari gets when opening its folder."""
    data = rng.integers(0, 300, size=SHAPE).astype(np.int16)
    write_series(tmp_path / "series", data, spacing=(0.6, 0.8, 2.5))
    (layer,) = npe2.read([str(tmp_path / "series")], stack=False, plugin_name=PLUGIN)
    return layer


def mask_meta(kwargs: dict) -> dict:
    """What napari hands a writer for a mask the Detect widget made over the scan."""
    metadata = {"geometry": kwargs["metadata"]["geometry"],
                "vae_anomaly": {"role": "mask", "predictor": "combi", "threshold": 0.5,
                                "models": ["tiny-vae"]}}
    return {"scale": kwargs["scale"], "translate": kwargs["translate"], "metadata": metadata,
            "name": "series anomaly mask"}


def test_mask_saved_as_seg_and_reopened_on_its_series(tmp_path, scan, npe2, records):
    from napari.layers import Labels

    _data, kwargs, _kind = scan
    mask = np.zeros(SHAPE, np.int64)  # napari may hand over any integer dtype
    mask[1:4, 2:5, 3:7] = 1
    mask[0, 0, 0] = 2
    out = tmp_path / "mask.dcm"
    assert npe2.write(str(out), [(mask, mask_meta(kwargs), "labels")], plugin_name=PLUGIN) == [
        str(out)]
    seg = hd.seg.segread(out)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["anomaly 1", "anomaly 2"]
    assert "tiny-vae" in seg.SegmentSequence[0].SegmentDescription
    params = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert params.AlgorithmParameters == "model=tiny-vae,predictor=combi,threshold=0.5"

    (data, seg_kwargs, kind), = npe2.read([str(out)], stack=False, plugin_name=PLUGIN)
    assert kind == "labels" and seg_kwargs["name"] == "mask"
    np.testing.assert_array_equal(data, mask)
    assert seg_kwargs["scale"] == pytest.approx(kwargs["scale"])
    assert seg_kwargs["translate"] == pytest.approx(kwargs["translate"])
    assert seg_kwargs["metadata"]["geometry"] == kwargs["metadata"]["geometry"]

    # SEG -> Labels layer (as napari builds it) -> SEG: every voxel kept
    layer = Labels(data, **seg_kwargs)
    again = tmp_path / "again.dcm"
    assert npe2.write(str(again), [layer], plugin_name=PLUGIN) == [str(again)]
    np.testing.assert_array_equal(hd.seg.segread(again).pixel_array, seg.pixel_array)
    (back, _kw, _k), = npe2.read([str(again)], stack=False, plugin_name=PLUGIN)
    np.testing.assert_array_equal(back, mask)
    assert [s for s, _m in records() if s == "error"] == []


def test_heatmap_saved_as_parametric_map(tmp_path, scan, npe2, rng):
    import pydicom

    _data, kwargs, _kind = scan
    heat = rng.random(SHAPE).astype(np.float32)
    meta = mask_meta(kwargs)
    meta["metadata"]["vae_anomaly"].update(role="heatmap", map="combi")
    out = tmp_path / "heat.dcm"
    assert npe2.write(str(out), [(heat, meta, "image")], plugin_name=PLUGIN) == [str(out)]
    ds = pydicom.dcmread(out)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.30"
    assert "combi" in ds.SeriesDescription and "tiny-vae" in ds.SeriesDescription
    assert ds.pixel_array.shape == SHAPE


def test_scan_not_from_dicom_gets_a_message_naming_the_formats(tmp_path, npe2, records,
                                                                oblique_geometry):
    src = write_volume(tmp_path / "scan.nii.gz", np.zeros((4, 5, 6), np.float32),
                       oblique_geometry)
    (_data, kwargs, _kind), = npe2.read([str(src)], stack=False, plugin_name=PLUGIN)
    out = tmp_path / "mask.dcm"
    written = npe2.write(str(out), [(np.ones((4, 5, 6), np.uint8), mask_meta(kwargs), "labels")],
                         plugin_name=PLUGIN)
    assert written == []
    (severity, message), = [r for r in records() if r[0] == "error"]
    assert re.match(r"mask\.dcm: the mask cannot be saved as a DICOM SEG because it does not "
                    r"come from a scan read from DICOM .* save it as \.nii\.gz, \.nii, \.nrrd", message), message
    assert sorted(os.listdir(tmp_path)) == ["scan.nii.gz"]


def test_seg_that_does_not_fit_its_layer_notifies(tmp_path, scan, npe2, records):
    _data, kwargs, _kind = scan
    out = tmp_path / "small.dcm"
    assert npe2.write(str(out), [(np.ones((2, 9, 11), np.uint8), mask_meta(kwargs), "labels")],
                      plugin_name=PLUGIN) == []
    (severity, message), = [r for r in records() if r[0] == "error"]
    assert "does not match the DICOM series (5 slices of 9 x 11)" in message
    assert not out.exists()


def test_file_save_and_open_in_a_viewer(tmp_path, scan, records):
    """napari's own paths: File > Open the series, a mask derived as the Detect widget does,
    File > Save Selected Layers as .dcm, File > Open the SEG: Labels on the scan."""
    from napari.components import ViewerModel

    from napari_vae_anomaly.widgets.heatmap_layers import derived_kwargs

    viewer = ViewerModel()
    (image,) = viewer.open(str(tmp_path / "series"), plugin=PLUGIN)
    mask = (np.asarray(image.data) > 150).astype(np.uint8)
    labels = viewer.add_labels(mask, name="series anomaly mask", **derived_kwargs(image, "mask"))
    viewer.layers.selection = {labels}
    out = tmp_path / "series_mask.dcm"
    assert viewer.layers.save(str(out), selected=True) == [str(out)]
    (reopened,) = viewer.open(str(out), plugin=PLUGIN)
    assert reopened.name == "series_mask" and type(reopened).__name__ == "Labels"
    np.testing.assert_array_equal(reopened.data, mask)
    assert tuple(reopened.scale) == pytest.approx(tuple(image.scale))
    assert tuple(reopened.translate) == pytest.approx(tuple(image.translate))
    assert [s for s, _m in records() if s == "error"] == []


def test_damaged_seg_is_one_error_line(tmp_path, scan, npe2, records):
    _data, kwargs, _kind = scan
    good = tmp_path / "mask.dcm"
    npe2.write(str(good), [(np.ones(SHAPE, np.uint8), mask_meta(kwargs), "labels")],
               plugin_name=PLUGIN)
    bad = tmp_path / "cut.dcm"
    bad.write_bytes(good.read_bytes()[:-40])  # pixel data cut short
    assert npe2.read([str(bad)], stack=False, plugin_name=PLUGIN) == [(None,)]
    (severity, message), = records()
    assert severity == "error" and message.startswith("cut.dcm: not a readable DICOM SEG")
    assert "\n" not in message
