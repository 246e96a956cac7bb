"""``predict --format dicom-seg``: a DICOM series in, a DICOM SEG and Parametric Maps out."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("highdicom")

import pydicom  # noqa: E402

from _dicom_series import write_series  # noqa: E402
from _models import phantom_setup  # noqa: E402
from napari_vae_anomaly.cli.main import main  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A checkpoint, the lesioned phantom as an oblique DICOM series, and a NIfTI scan."""
    from types import SimpleNamespace

    from napari_vae_anomaly.io.write import write_volume
    from napari_vae_anomaly.models.checkpoint import save_checkpoint

    d = tmp_path_factory.mktemp("dicom_cohort")
    loaded, test = phantom_setup()
    ckpt = save_checkpoint(d / "tiny.safetensors", loaded.model, {"name": "tiny-card"},
                           loaded.preprocess)
    files = write_series(d / "patient" / "t1", np.round(test.image).astype(np.int16),
                         spacing=(0.9, 1.1, 2.5))
    nifti = write_volume(d / "other.nii.gz", test.image, test.geometry)
    return SimpleNamespace(dir=d, ckpt=ckpt, series=d / "patient" / "t1", files=files,
                           nifti=nifti)


def predict(*args) -> int:
    return main(["predict", *map(str, args), "--predictor", "rec", "--threshold", "0.3",
                 "--no-progress"])


def test_dicom_seg_and_parametric_map_match_the_nifti_outputs(setup, tmp_path):
    import highdicom as hd

    from napari_vae_anomaly.io import read_volume
    from napari_vae_anomaly.io.dicom_seg import read_dicom_seg

    nii, dcm = tmp_path / "nii", tmp_path / "dcm"
    assert predict(setup.series, "--model", setup.ckpt, "--out-dir", nii) == 0
    assert predict(setup.series, "--model", setup.ckpt, "--out-dir", dcm,
                   "--format", "dicom-seg") == 0
    assert sorted(p.name for p in dcm.iterdir()) == ["t1_mask.dcm", "t1_rec.dcm"]
    mask = read_volume(nii / "t1_mask.nii.gz").data
    assert mask.any()

    seg = hd.seg.segread(dcm / "t1_mask.dcm")
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == \
        pydicom.dcmread(setup.files[0]).SeriesInstanceUID
    (segment,) = seg.SegmentSequence
    assert segment.SegmentLabel == "anomaly" and "tiny-card" in segment.SegmentDescription
    alg = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert alg.AlgorithmParameters == "model=tiny-card,predictor=rec,threshold=0.3"
    uids = [str(pydicom.dcmread(f).SOPInstanceUID) for f in setup.files]
    got = seg.get_pixels_by_source_instance(uids, combine_segments=True,
                                            assert_missing_frames_are_empty=True)
    np.testing.assert_array_equal(got, mask)  # voxel for voxel, slice for slice

    # the SEG sits in another folder: copied beside the series it opens on the scan's grid
    beside = setup.series.parent / "t1_mask.dcm"
    beside.write_bytes((dcm / "t1_mask.dcm").read_bytes())
    try:
        np.testing.assert_array_equal(read_dicom_seg(beside).data, mask)
    finally:
        beside.unlink()

    rec = read_volume(nii / "t1_rec.nii.gz").data
    pm = pydicom.dcmread(dcm / "t1_rec.dcm")
    frames = [f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
              for f in pm.PerFrameFunctionalGroupsSequence]
    np.testing.assert_allclose(pm.pixel_array, rec[[uids.index(u) for u in frames]], rtol=1e-6)


def test_scan_not_from_dicom_is_refused_before_predicting(setup, tmp_path, capsys,
                                                          monkeypatch):
    import napari_vae_anomaly.predictors.pipeline as pipeline

    def never(*_a, **_k):
        raise AssertionError("predicted although the output cannot be written")

    monkeypatch.setattr(pipeline, "predict_volume", never)
    out = tmp_path / "o"
    assert predict(setup.nifti, "--model", setup.ckpt, "--out-dir", out,
                   "--format", "dicom-seg") == 1
    err = capsys.readouterr().err
    assert "other_mask.dcm: the mask cannot be saved as a DICOM SEG because it does not " \
           "come from a scan read from DICOM" in err
    assert ".nii.gz, .nii, .nrrd" in err
    assert list(out.iterdir()) == []


def test_failed_map_leaves_nothing_of_the_case(setup, tmp_path, capsys, monkeypatch):
    import napari_vae_anomaly.io.dicom_seg as dicom_seg
    from napari_vae_anomaly.errors import VolumeWriteError

    def full_disk(path, *_a, **_k):
        raise VolumeWriteError(f"{path.name}: writing failed (No space left on device)")

    monkeypatch.setattr(dicom_seg, "stage_dicom_parametric_map", full_disk)
    out = tmp_path / "o"
    assert predict(setup.series, "--model", setup.ckpt, "--out-dir", out,
                   "--format", "dicom-seg") == 1
    assert "t1_rec.dcm: writing failed" in capsys.readouterr().err
    assert list(out.iterdir()) == []
