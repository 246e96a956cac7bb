"""DICOM out: masks as DICOM SEG and maps as Parametric Maps on an oblique, anisotropic series.

The SEG is checked with pydicom and highdicom as a PACS viewer would read it: it references the
source series, its frames sit on the source slices, its segments are described, and it reads
back (SEG -> labels -> SEG) voxel for voxel.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("highdicom")

import highdicom as hd  # noqa: E402
import pydicom  # noqa: E402

from _dicom_series import FRAME_OF_REFERENCE_UID, STUDY_UID, oblique_direction, write_series  # noqa: E402
from napari_vae_anomaly.errors import VolumeWriteError  # noqa: E402
from napari_vae_anomaly.io import Geometry, read_volume  # noqa: E402
from napari_vae_anomaly.io.dicom_seg import (  # noqa: E402
    SEG_SOP_CLASS_UID,
    is_dicom_seg,
    read_dicom_seg,
    write_dicom_parametric_map,
    write_dicom_seg,
)

SPACING = (0.7, 0.9, 3.0)  # x, y, z: anisotropic
SHAPE = (6, 10, 12)  # slices, rows, columns


@pytest.fixture
def series(tmp_path, rng):
    """An oblique MR series of 6 slices on disk, and the volume the plugin reads from it."""
    data = rng.integers(0, 400, size=SHAPE).astype(np.int16)
    files = write_series(tmp_path / "series", data, spacing=SPACING)
    return files, read_volume(tmp_path / "series")


@pytest.fixture
def mask() -> np.ndarray:
    m = np.zeros(SHAPE, np.uint8)
    m[1:3, 2:6, 3:8] = 1
    m[4, 7:9, 0:2] = 2
    m[5, 0, 11] = 1
    return m


def out_dir(tmp_path: Path) -> Path:
    d = tmp_path / "out"
    d.mkdir(exist_ok=True)
    return d


def floats(values) -> np.ndarray:
    return np.array([float(v) for v in values])


def test_seg_references_the_series_and_frames_land_on_its_slices(tmp_path, series, mask):
    files, vol = series
    path = write_dicom_seg(out_dir(tmp_path) / "mask.dcm", mask, vol.geometry, model_name="tiny")
    sources = {str(pydicom.dcmread(f).SOPInstanceUID): pydicom.dcmread(f) for f in files}

    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == SEG_SOP_CLASS_UID and is_dicom_seg(path)
    assert ds.StudyInstanceUID == STUDY_UID
    assert ds.FrameOfReferenceUID == FRAME_OF_REFERENCE_UID
    assert ds.PatientID == "PHANTOM-01"
    (ref,) = ds.ReferencedSeriesSequence
    assert ref.SeriesInstanceUID == vol.geometry.extra["series_uid"]
    assert {r.ReferencedSOPInstanceUID for r in ref.ReferencedInstanceSequence} == set(sources)
    assert ds.SeriesInstanceUID != ref.SeriesInstanceUID

    shared = ds.SharedFunctionalGroupsSequence[0]
    iop = floats(shared.PlaneOrientationSequence[0].ImageOrientationPatient)
    d = oblique_direction()
    np.testing.assert_allclose(iop, np.concatenate([d[:, 0], d[:, 1]]), atol=1e-4)
    spacing = floats(shared.PixelMeasuresSequence[0].PixelSpacing)
    np.testing.assert_allclose(spacing, (SPACING[1], SPACING[0]), atol=1e-6)
    assert int(ds.NumberOfFrames) == 4  # segment 1 on slices 1, 2, 5, segment 2 on 4: no empty frames
    for frame in ds.PerFrameFunctionalGroupsSequence:
        src_uid = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        src = sources[src_uid]
        pos = floats(frame.PlanePositionSequence[0].ImagePositionPatient)
        np.testing.assert_allclose(pos, floats(src.ImagePositionPatient), atol=1e-4)
        np.testing.assert_allclose(floats(src.ImageOrientationPatient), iop, atol=1e-4)

    seg = hd.seg.segread(path)  # highdicom: each source slice gets the mask's slice
    uids = [str(pydicom.dcmread(f).SOPInstanceUID) for f in files]
    got = seg.get_pixels_by_source_instance(uids, combine_segments=True,
                                            assert_missing_frames_are_empty=True)
    np.testing.assert_array_equal(got, mask)


def test_segment_description_names_label_algorithm_version_and_model(tmp_path, series, mask):
    from napari_vae_anomaly import __version__

    _files, vol = series
    path = write_dicom_seg(out_dir(tmp_path) / "m.dcm", mask, vol.geometry, model_name="brain-vae",
                           segment_label="lesion", parameters={"threshold": "0.42"})
    seg = hd.seg.segread(path)
    assert seg.number_of_segments == 2
    assert "brain-vae" in seg.SeriesDescription
    for number, item in zip((1, 2), seg.SegmentSequence, strict=True):
        assert item.SegmentNumber == number
        assert item.SegmentLabel == f"lesion {number}"
        assert "brain-vae" in item.SegmentDescription
        assert item.SegmentAlgorithmType == "AUTOMATIC"
        assert item.SegmentAlgorithmName == "napari-vae-anomaly"
        (alg,) = item.SegmentationAlgorithmIdentificationSequence
        assert alg.AlgorithmName == "napari-vae-anomaly"
        assert alg.AlgorithmVersion == __version__
        assert alg.AlgorithmParameters == "model=brain-vae,threshold=0.42"
        assert item.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
        assert item.SegmentedPropertyTypeCodeSequence[0].CodeValue == "52988006"
    assert seg.ManufacturerModelName == "brain-vae"


def test_round_trip_seg_labels_seg_keeps_every_voxel(tmp_path, series, mask):
    files, vol = series
    first = write_dicom_seg(tmp_path / "series" / "first.dcm", mask, vol.geometry)
    back = read_dicom_seg(first)  # found its series beside it: same grid as the scan
    np.testing.assert_array_equal(back.data, mask)
    assert back.notes == []
    assert back.geometry.extra["dicom_files"] == [str(Path(f).resolve()) for f in files]
    np.testing.assert_allclose(back.geometry.origin, vol.geometry.origin, atol=1e-9)
    np.testing.assert_allclose(back.geometry.direction, vol.geometry.direction, atol=1e-9)

    second = write_dicom_seg(out_dir(tmp_path) / "second.dcm", back.data, back.geometry)
    shutil.copy(second, tmp_path / "second.dcm")  # beside the series' folder: found there too
    again = read_dicom_seg(tmp_path / "second.dcm")
    np.testing.assert_array_equal(again.data, mask)
    a, b = hd.seg.segread(first), hd.seg.segread(second)
    assert a.ReferencedSeriesSequence[0].SeriesInstanceUID == \
        b.ReferencedSeriesSequence[0].SeriesInstanceUID
    np.testing.assert_array_equal(a.pixel_array, b.pixel_array)


def test_seg_without_its_series_opens_on_its_own_frames(tmp_path, series, mask):
    _files, vol = series
    lone = tmp_path / "elsewhere" / "deep"
    lone.mkdir(parents=True)
    path = write_dicom_seg(lone / "m.dcm", mask, vol.geometry)
    back = read_dicom_seg(path)
    (note,) = back.notes
    assert "source series was not found" in note
    np.testing.assert_array_equal(back.data, mask[1:])  # slices 1 to 5 hold segments
    d = vol.geometry.direction_matrix
    expected_origin = np.asarray(vol.geometry.origin) + d[:, 2] * SPACING[2]
    np.testing.assert_allclose(back.geometry.origin, expected_origin, atol=1e-4)
    np.testing.assert_allclose(back.geometry.direction, vol.geometry.direction, atol=1e-6)
    np.testing.assert_allclose(back.geometry.spacing, SPACING, atol=1e-4)


def test_empty_mask_is_still_a_valid_seg(tmp_path, series):
    _files, vol = series
    path = write_dicom_seg(out_dir(tmp_path) / "none.dcm", np.zeros(SHAPE, np.uint8), vol.geometry)
    assert int(pydicom.dcmread(path).NumberOfFrames) == SHAPE[0]
    np.testing.assert_array_equal(read_dicom_seg(path).data, 0)


def test_heatmap_as_parametric_map(tmp_path, series, rng):
    files, vol = series
    values = rng.normal(0.0, 1.0, size=SHAPE).astype(np.float32)
    path = write_dicom_parametric_map(out_dir(tmp_path) / "map.dcm", values, vol.geometry,
                                      map_label="combi", model_name="tiny")
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.30"  # Parametric Map Storage
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == vol.geometry.extra["series_uid"]
    assert ds.FrameOfReferenceUID == FRAME_OF_REFERENCE_UID
    positions = {str(pydicom.dcmread(f).SOPInstanceUID): floats(pydicom.dcmread(f)
                 .ImagePositionPatient) for f in files}
    uids = [str(pydicom.dcmread(f).SOPInstanceUID) for f in files]
    pixels = ds.pixel_array
    assert pixels.dtype == np.float32 and pixels.shape == SHAPE
    for k, frame in enumerate(ds.PerFrameFunctionalGroupsSequence):
        src = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        pos = floats(frame.PlanePositionSequence[0].ImagePositionPatient)
        np.testing.assert_allclose(pos, positions[src], atol=1e-4)
        np.testing.assert_array_equal(pixels[k], values[uids.index(src)])
    mapping = frame.RealWorldValueMappingSequence[0] if "RealWorldValueMappingSequence" in \
        frame else ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    assert mapping.LUTLabel == "combi"


# ----------------------------------------------------------------------------- bad input
def test_scan_not_from_dicom_names_the_formats_it_can_be_saved_in(tmp_path, oblique_geometry):
    d = out_dir(tmp_path)
    with pytest.raises(VolumeWriteError) as err:
        write_dicom_seg(d / "m.dcm", np.ones((3, 4, 5), np.uint8), oblique_geometry)
    message = str(err.value)
    assert message.startswith("m.dcm: the mask cannot be saved as a DICOM SEG because it does "
                              "not come from a scan read from DICOM")
    for ext in (".nii.gz", ".nrrd", ".mha"):
        assert ext in message
    with pytest.raises(VolumeWriteError, match="cannot be saved as a DICOM Parametric Map"):
        write_dicom_parametric_map(d / "p.dcm", np.ones((3, 4, 5)), oblique_geometry)
    assert os.listdir(d) == []


def _geometry_over(files, vol) -> Geometry:
    g = vol.geometry
    return Geometry(g.spacing, g.origin, g.direction, extra={"dicom_files": [str(f) for f in files]})


def test_unequally_spaced_series_is_refused(tmp_path, series, mask):
    files, vol = series
    d = oblique_direction()
    positions = [np.asarray(vol.geometry.origin) + d[:, 2] * SPACING[2] * k for k in range(6)]
    positions[4] = positions[4] + d[:, 2] * 1.0  # one slice 1 mm off
    bad = write_series(tmp_path / "gap", np.zeros(SHAPE, np.int16), spacing=SPACING,
                       positions=positions, series_uid="1.2.3.4.5")
    out = out_dir(tmp_path)
    with pytest.raises(VolumeWriteError, match=r"^m\.dcm: the source slices are not equally "
                                               r"spaced \(gaps from 2 to 4 mm"):
        write_dicom_seg(out / "m.dcm", mask, _geometry_over(bad, vol))
    assert os.listdir(out) == []


def test_non_parallel_series_is_refused(tmp_path, series, mask):
    files, vol = series
    d = oblique_direction()
    iop = np.concatenate([d[:, 0], d[:, 1]])
    tilted = np.concatenate([oblique_direction()[:, 1], -oblique_direction()[:, 0]])
    bad = write_series(tmp_path / "tilt", np.zeros(SHAPE, np.int16), spacing=SPACING,
                       orientations=[iop] * 5 + [tilted], series_uid="1.2.3.4.6")
    out = out_dir(tmp_path)
    with pytest.raises(VolumeWriteError, match=r"^m\.dcm: the source slices are not parallel"):
        write_dicom_seg(out / "m.dcm", mask, _geometry_over(bad, vol))
    assert os.listdir(out) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m[:5], r"does not match the DICOM series \(6 slices of 10 x 12\)"),
        (lambda m: m.astype(np.float32), r"labels must be integers, got float32"),
        (lambda m: m.astype(np.int16) - 1, r"negative label values"),
    ],
)
def test_mask_that_does_not_fit_is_refused(tmp_path, series, mask, change, message):
    _files, vol = series
    out = out_dir(tmp_path)
    with pytest.raises(VolumeWriteError, match=message):
        write_dicom_seg(out / "m.dcm", change(mask), vol.geometry)
    assert os.listdir(out) == []


def test_moved_grid_is_refused(tmp_path, series, mask):
    _files, vol = series
    g = vol.geometry
    shifted = Geometry(g.spacing, (g.origin[0] + 5.0, *g.origin[1:]), g.direction, extra=g.extra)
    with pytest.raises(VolumeWriteError, match=r"slice 0 of the array is not at the position"):
        write_dicom_seg(out_dir(tmp_path) / "m.dcm", mask, shifted)


def test_existing_file_is_kept_unless_overwrite(tmp_path, series, mask):
    _files, vol = series
    path = out_dir(tmp_path) / "m.dcm"
    path.write_bytes(b"precious")
    with pytest.raises(VolumeWriteError, match=r"already exists; use overwrite"):
        write_dicom_seg(path, mask, vol.geometry)
    assert path.read_bytes() == b"precious"
    write_dicom_seg(path, mask, vol.geometry, overwrite=True)
    assert is_dicom_seg(path)
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # like any file the user writes


def test_failed_write_leaves_nothing_partial(tmp_path, series, mask, monkeypatch):
    _files, vol = series
    out = out_dir(tmp_path)
    path = out / "m.dcm"
    path.write_bytes(b"previous mask")

    def half_then_fail(self, filename, *args, **kwargs):
        Path(filename).write_bytes(b"DICM half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pydicom.Dataset, "save_as", half_then_fail)
    with pytest.raises(VolumeWriteError, match=r"^m\.dcm: writing failed \(No space left"):
        write_dicom_seg(path, mask, vol.geometry, overwrite=True)
    assert os.listdir(out) == ["m.dcm"] and path.read_bytes() == b"previous mask"


def test_moved_source_files_are_named(tmp_path, series, mask):
    files, vol = series
    os.remove(files[2])
    with pytest.raises(VolumeWriteError, match=re.escape(f"{files[2]} no longer exists")):
        write_dicom_seg(out_dir(tmp_path) / "m.dcm", mask, vol.geometry)


def test_label_values_are_segment_numbers_even_with_gaps(tmp_path, series):
    """A corrected mask holding only label 3 (say): segments 1 and 2 are empty but described,
    so reading the SEG back gives label 3 again."""
    _files, vol = series
    m = np.zeros(SHAPE, np.uint16)
    m[2, 3:5, 4:6] = 3
    path = write_dicom_seg(tmp_path / "series" / "gap.dcm", m, vol.geometry)
    assert [s.SegmentNumber for s in hd.seg.segread(path).SegmentSequence] == [1, 2, 3]
    back = read_dicom_seg(path)
    assert back.data.dtype == np.uint8
    np.testing.assert_array_equal(back.data, m)


def test_without_highdicom_the_message_names_the_extra(tmp_path, series, mask, monkeypatch):
    import sys

    _files, vol = series
    monkeypatch.setitem(sys.modules, "highdicom", None)  # as if not installed
    with pytest.raises(VolumeWriteError, match=r"needs highdicom: pip install "
                                               r"'napari-vae-anomaly\[dicom\]'"):
        write_dicom_seg(out_dir(tmp_path) / "m.dcm", mask, vol.geometry)
    assert os.listdir(out_dir(tmp_path)) == []


def test_silently_cut_file_is_caught_before_it_replaces_anything(tmp_path, series, mask,
                                                                  monkeypatch):
    """A writer that 'succeeds' with a cut-off file (as on a full disk): verification reads
    the staged file back and refuses it; the previous file stays byte for byte."""
    _files, vol = series
    path = out_dir(tmp_path) / "m.dcm"
    path.write_bytes(b"previous mask")
    original = pydicom.Dataset.save_as

    def cut(self, filename, *args, **kwargs):
        original(self, filename, *args, **kwargs)
        data = Path(filename).read_bytes()
        Path(filename).write_bytes(data[: len(data) - 10])

    monkeypatch.setattr(pydicom.Dataset, "save_as", cut)
    with pytest.raises(VolumeWriteError, match=r"^m\.dcm: writing failed \(the file read back "
                                               r"differs"):
        write_dicom_seg(path, mask, vol.geometry, overwrite=True)
    assert os.listdir(path.parent) == ["m.dcm"] and path.read_bytes() == b"previous mask"
