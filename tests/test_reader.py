"""The napari reader contribution, driven through npe2 as napari drives it (no Qt needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from napari_vae_anomaly._reader import napari_get_reader, read_layers
from napari_vae_anomaly.io import Geometry, write_volume

PLUGIN = "napari-vae-anomaly"


@pytest.fixture(scope="module")
def npe2_read():
    import npe2

    npe2.PluginManager.instance().discover()

    def read(path):
        return npe2.read([str(path)], stack=False, plugin_name=PLUGIN)

    return read


@pytest.fixture
def scan(rng) -> np.ndarray:
    return rng.normal(0.0, 1.0, size=(5, 6, 7)).astype(np.float32)


# ---------------------------------------------------------------------- get_reader
def test_get_reader_accepts_supported_files_folders_and_lists(tmp_path):
    (tmp_path / "dicom").mkdir()
    for name in ("a.nii.gz", "b.NRRD", "c.mhd", "d.dcm", "e.png"):
        assert napari_get_reader(str(tmp_path / name)) is read_layers
    assert napari_get_reader(str(tmp_path / "dicom")) is read_layers
    assert napari_get_reader([str(tmp_path / "a.nii"), tmp_path / "b.mha"]) is read_layers


@pytest.mark.parametrize("bad", ["x.csv", "x.zarr", ["a.nii", "b.txt"], [], None, 42, object()])
def test_get_reader_declines_without_raising(tmp_path, bad):
    if bad == "x.zarr":
        (tmp_path / "x.zarr").mkdir()
    if isinstance(bad, str):
        bad = str(tmp_path / bad)
    assert napari_get_reader(bad) is None


# ---------------------------------------------------------------------- layer data
def test_image_layer_carries_scale_translate_and_full_geometry(
    tmp_path, scan, oblique_geometry, npe2_read, records
):
    path = write_volume(tmp_path / "case_007.nrrd", scan, oblique_geometry)
    layers = npe2_read(path)
    assert len(layers) == 1
    data, kwargs, layer_type = layers[0]
    assert layer_type == "image"
    np.testing.assert_array_equal(data, scan)
    assert kwargs["name"] == "case_007"
    assert kwargs["scale"] == pytest.approx((3.0, 1.1, 0.9))
    assert kwargs["translate"] == pytest.approx((40.0, 12.25, -91.5))
    meta = kwargs["metadata"]
    assert meta["source_path"] == str(path.resolve())
    stored = Geometry.from_metadata(meta)
    assert stored.spacing == pytest.approx(oblique_geometry.spacing, abs=1e-12)
    assert stored.origin == pytest.approx(oblique_geometry.origin, abs=1e-12)
    assert stored.direction == pytest.approx(oblique_geometry.direction, abs=1e-12)
    assert meta["channel"] is None and meta["channels"] == []
    code = oblique_geometry.orientation_code()
    assert records() == [(
        "warning",
        f"case_007: oblique scan shown without its rotation (nearest orientation {code}); "
        "saved masks keep the true geometry",
    )]
    assert kwargs["units"] == ("mm", "mm", "mm")
    assert all(label.startswith("~") for label in kwargs["axis_labels"])  # approximate


def test_axis_aligned_scan_gives_no_notification(tmp_path, scan, npe2_read, records):
    path = write_volume(tmp_path / "plain.mha", scan, Geometry.identity(3, (1.0, 1.0, 2.0)))
    (_data, kwargs, _t), = npe2_read(path)
    assert kwargs["scale"] == (2.0, 1.0, 1.0)
    assert kwargs["axis_labels"] == ("I→S", "A→P", "R→L")  # LPS: the radiological view
    assert kwargs["units"] == ("mm", "mm", "mm")
    assert records() == []


def test_left_right_flipped_scan_is_labelled_and_noted(tmp_path, scan, npe2_read, records):
    """A RAS-stored scan is drawn mirrored compared with an LPS one: its labels say so and
    the user is told once."""
    ras = Geometry((1.0, 1.0, 2.0), (90.0, 126.0, -72.0), (-1, 0, 0, 0, -1, 0, 0, 0, 1))
    path = write_volume(tmp_path / "ras.nii.gz", scan, ras)
    (_data, kwargs, _t), = npe2_read(path)
    assert kwargs["axis_labels"] == ("I→S", "P→A", "L→R")
    assert records() == [(
        "warning",
        "ras: left-right flipped (RAS) scan: the patient's right is on the screen's right, "
        "mirrored compared with the radiological view; see the axis labels",
    )]


@pytest.mark.parametrize(
    ("name", "dtype", "layer_type"),
    [
        ("brain_seg.nii.gz", np.uint8, "labels"),
        ("lesion-mask.nrrd", np.int16, "labels"),
        ("case1_labels.mha", np.uint16, "labels"),
        ("case1_Label.nii", np.uint8, "labels"),
        ("prob_seg.nii.gz", np.float32, "image"),  # float data stays an image
        ("segmentation_t1.nii.gz", np.uint8, "image"),  # the suffix decides, not a substring
    ],
)
def test_label_files_open_as_labels(tmp_path, oblique_geometry, npe2_read, name, dtype,
                                    layer_type):
    data = (np.arange(5 * 6 * 7).reshape(5, 6, 7) % 3).astype(dtype)
    write_volume(tmp_path / name, data, oblique_geometry)
    (out, kwargs, kind), = npe2_read(tmp_path / name)
    assert kind == layer_type
    assert out.dtype == np.dtype(dtype)
    assert Geometry.from_metadata(kwargs["metadata"]).direction == pytest.approx(
        oblique_geometry.direction, abs=1e-6)


def test_4d_file_gives_one_layer_per_channel(tmp_path, npe2_read):
    img = sitk.JoinSeries([sitk.GetImageFromArray(np.full((3, 4, 5), c, np.float32))
                           for c in (1.0, 2.0)])
    path = tmp_path / "brats.nii.gz"
    sitk.WriteImage(img, str(path))
    layers = npe2_read(path)
    assert [kw["name"] for _d, kw, _t in layers] == ["brats [channel 0]", "brats [channel 1]"]
    assert [float(d[0, 0, 0]) for d, _kw, _t in layers] == [1.0, 2.0]
    assert [kw["metadata"]["channel"] for _d, kw, _t in layers] == [0, 1]
    assert layers[1][1]["metadata"]["channels"] == ["channel 0", "channel 1"]
    assert "visible" not in layers[0][1] and layers[1][1]["visible"] is False
    assert all(len(kw["scale"]) == 3 for _d, kw, _t in layers)


def test_notes_become_warnings(tmp_path, scan, npe2_read, records):
    scan[0, 0, 0] = np.nan
    write_volume(tmp_path / "nan.nrrd", scan, Geometry.identity(3))
    (data, kwargs, _t), = npe2_read(tmp_path / "nan.nrrd")
    assert data[0, 0, 0] == 0
    assert records() == [("warning", "nan.nrrd: 1 NaN/infinite voxels were set to 0")]
    assert kwargs["metadata"]["notes"] == ["nan.nrrd: 1 NaN/infinite voxels were set to 0"]


# ---------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("text.nii", b"not an image\n" * 40, "text.nii: not a valid NIfTI file"),
        ("empty.nrrd", b"", "empty.nrrd: the file is empty (0 bytes)"),
    ],
)
def test_bad_file_notifies_and_returns_null_layer(tmp_path, npe2_read, records, name, content,
                                                  message):
    path = tmp_path / name
    path.write_bytes(content)
    mtime = path.stat().st_mtime_ns
    assert npe2_read(path) == [(None,)]
    (severity, text), = records()
    assert severity == "error" and text.startswith(message) and "\n" not in text
    assert path.read_bytes() == content and path.stat().st_mtime_ns == mtime


def test_missing_file_and_empty_folder(tmp_path, npe2_read, records):
    assert npe2_read(tmp_path / "gone.mha") == [(None,)]
    (tmp_path / "nothing").mkdir()
    assert npe2_read(tmp_path / "nothing") == [(None,)]
    assert [m for _s, m in records()] == [
        f"{tmp_path / 'gone.mha'}: no such file or folder",
        "nothing: no DICOM series found in this folder",
    ]


def test_unexpected_exception_does_not_escape(tmp_path, scan, records, monkeypatch):
    import napari_vae_anomaly.io.read as read_mod

    path = write_volume(tmp_path / "ok.nrrd", scan, Geometry.identity(3))

    def boom(*_a, **_k):
        raise MemoryError("cannot allocate")

    monkeypatch.setattr(read_mod, "_read", boom)
    assert read_layers(str(path)) == [(None,)]
    assert records() == [("error", "ok.nrrd: could not be read (MemoryError: cannot allocate)")]


def test_list_of_paths_reads_each_and_reports_the_bad_one(tmp_path, scan, records):
    good = write_volume(tmp_path / "good.nrrd", scan, Geometry.identity(3))
    bad = tmp_path / "bad.nii"
    bad.write_text("nonsense")
    layers = read_layers([str(good), str(bad)])
    assert [kw["name"] for _d, kw, _t in layers] == ["good"]
    assert [s for s, _m in records()] == ["error"]


def test_viewer_open_shows_a_message_instead_of_raising(tmp_path, scan, npe2_read, records):
    """napari's own open path: a bad file adds no layer and raises nothing."""
    from napari.components import ViewerModel

    viewer = ViewerModel()
    bad = tmp_path / "broken.nrrd"
    bad.write_bytes(b"NRRD0004\ntype: float\ndimension: 3\n")
    assert viewer.open(str(bad), plugin=PLUGIN) == []
    good = write_volume(tmp_path / "scan.nii.gz", scan, Geometry.identity(3, (0.5, 0.5, 2.0)))
    (layer,) = viewer.open(str(good), plugin=PLUGIN)
    assert layer.name == "scan"
    assert tuple(layer.scale) == (2.0, 0.5, 0.5)
    assert "geometry" in layer.metadata
    assert [s for s, _m in records()] == ["error"]


def test_dicom_folder_through_the_reader(tmp_path, npe2_read, records):
    from test_io_read import write_dicom_series

    folder = Path(tmp_path / "dicom")
    folder.mkdir()
    write_dicom_series(folder, np.ones((4, 5, 6), np.int16), "1.2.3.1", "T1", "a")
    write_dicom_series(folder, np.ones((2, 5, 6), np.int16), "1.2.3.2", "scout", "b")
    (data, kwargs, kind), = npe2_read(folder)
    assert data.shape == (4, 5, 6) and kind == "image"
    assert kwargs["name"] == "dicom"
    (severity, message), = records()
    assert severity == "warning" and "left out 'scout'" in message
