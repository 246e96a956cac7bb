"""One detection pipeline: the CLI and the Detect worker give the same bytes; every default
lives in DetectionSettings only; predict_volume reports progress as a generator."""

from __future__ import annotations

import argparse
import threading
from dataclasses import fields

import numpy as np
import pytest

from _models import save_phantom_checkpoint, untrained_loaded
from napari_vae_anomaly.detection import DetectionSettings, detect
from napari_vae_anomaly.predictors.pipeline import (
    PredictionCancelled,
    Progress,
    predict_volume,
    predict_volume_iter,
)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A checkpoint with its normal reference, and a lesioned scan on disk."""
    from types import SimpleNamespace

    from napari_vae_anomaly.io.write import write_volume

    d = tmp_path_factory.mktemp("detection")
    ckpt, _loaded, test = save_phantom_checkpoint(d / "tiny.safetensors")
    scan = write_volume(d / "scan.nii.gz", test.image, test.geometry)
    return SimpleNamespace(dir=d, ckpt=ckpt, scan=scan)


def _drain(gen):
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as done:
            return done.value, events


def test_cli_and_detect_worker_write_byte_identical_maps_and_masks(saved, tmp_path):
    from napari_vae_anomaly.cli.main import main
    from napari_vae_anomaly.io.read import read_volume
    from napari_vae_anomaly.models.checkpoint import load_checkpoint
    from napari_vae_anomaly.workers.detect_worker import DetectRequest, detect_job

    out = tmp_path / "cli"
    assert main(["predict", str(saved.scan), "--model", str(saved.ckpt), "--predictor", "rec",
                 "--predictor", "elbo_grad", "--mask-median", "3", "--min-size", "2",
                 "--out-dir", str(out), "--no-progress"]) == 0
    settings = DetectionSettings(predictors=("rec", "elbo_grad"), mask_median=3, min_size=2)
    vol = read_volume(saved.scan)
    request = DetectRequest(vol.data, vol.geometry, [load_checkpoint(saved.ckpt)], settings)
    outcome, events = _drain(detect_job(request, threading.Event()))
    assert events and all(isinstance(e, Progress) for e in events)
    assert outcome.primary == "ensemble" and outcome.result.mask_key == "ensemble"
    for key in ("rec", "elbo_grad", "ensemble"):
        written = read_volume(out / f"scan_{key}.nii.gz").data
        assert written.dtype == np.float32 and outcome.maps[key].dtype == np.float32
        assert written.tobytes() == outcome.maps[key].tobytes(), key
    mask = read_volume(out / "scan_mask.nii.gz").data
    assert mask.dtype == np.uint8 and 0 < int(mask.sum()) < mask.size
    assert mask.tobytes() == outcome.result.mask.tobytes()
    # the widget's live mask at the job's threshold is the core's mask (min size 2 voxels)
    from napari_vae_anomaly.postprocessing.mask import make_mask

    live = make_mask(outcome.mask_map("ensemble"), outcome.thresholds["ensemble"],
                     outcome.foreground, min_voxels=2)
    np.testing.assert_array_equal(live, mask)
    assert [row.voxels for row in outcome.result.lesions] == sorted(
        (row.voxels for row in outcome.result.lesions), reverse=True)
    assert sum(row.voxels for row in outcome.result.lesions) == int(mask.sum())


def _predict_parser() -> argparse.ArgumentParser:
    from napari_vae_anomaly.cli import predict

    parser = argparse.ArgumentParser()
    predict.register(parser.add_subparsers())
    return parser


def test_predict_options_are_the_settings_fields_with_their_defaults():
    from napari_vae_anomaly.cli.predict import settings_from_args

    parser = _predict_parser()
    args = parser.parse_args(["predict", "x.nii.gz", "--model", "m.safetensors"])
    assert settings_from_args(args) == DetectionSettings()
    sub = parser._subparsers._group_actions[0].choices["predict"]
    by_dest = {a.dest: a for a in sub._actions}
    for f in fields(DetectionSettings):
        action = by_dest[f.name]
        assert action.option_strings == [f.metadata["flag"]]
        if f.name != "predictors":  # append: None stands for the settings' default
            assert action.default == f.default, f.name
        assert action.help.startswith(f.metadata["help"])
    help_text = " ".join(sub.format_help().split())
    assert "--energy-alpha A step size of the energy projection (default 0.2)" in help_text
    assert "(default 0.005)" in help_text  # the normal fraction, once, from the settings


def test_settings_from_the_command_line_and_bad_values():
    from napari_vae_anomaly.cli.predict import settings_from_args
    from napari_vae_anomaly.errors import AnomalyError

    parser = _predict_parser()
    args = parser.parse_args(["predict", "x", "--model", "m", "--predictor", "rec",
                              "--predictor", "energy", "--energy-steps", "3", "--threshold",
                              "0.5", "--fill-holes", "--mask-from", "first"])
    s = settings_from_args(args)
    assert s.predictors == ("rec", "energy") and s.threshold == 0.5 and s.fill_holes
    assert s.predictor_options().energy_steps == 3 and s.mask_key(1) == "rec"
    assert s.keys(1) == ["rec", "energy", "ensemble"]
    with pytest.raises(AnomalyError, match="threshold-fpr must be between 0 and 1"):
        settings_from_args(parser.parse_args(["predict", "x", "--model", "m",
                                              "--threshold-fpr", "2"]))
    with pytest.raises(AnomalyError, match="chunk must be >= 1"):
        settings_from_args(parser.parse_args(["predict", "x", "--model", "m", "--chunk", "0"]))


def test_settings_and_predictor_options_share_their_defaults():
    from napari_vae_anomaly.predictors.registry import PredictorOptions

    s = DetectionSettings()
    assert s.predictor_options() == PredictorOptions()
    changed = s.with_options(PredictorOptions(chunk=4, energy_alpha=0.5))
    assert changed.chunk == 4 and changed.energy_alpha == 0.5 and changed.min_size == s.min_size


def test_predict_volume_is_a_generator_of_progress_and_stops_between_chunks():
    from napari_vae_anomaly.data.phantom import make_phantom

    loaded = untrained_loaded()
    vol = make_phantom(seed=5, shape=(10, 24, 24), lesions=False).volume
    from napari_vae_anomaly.predictors.registry import PredictorOptions

    o = PredictorOptions(chunk=3)
    result, events = _drain(predict_volume_iter(vol, [loaded], ["rec"], o))
    assert [e.done for e in events] == [0, 3, 6, 9, 10] and {e.total for e in events} == {10}
    same = predict_volume(vol, [loaded], ["rec"], o)
    assert same.maps["rec"].tobytes() == result.maps["rec"].tobytes()
    calls = iter([False, False, True])
    with pytest.raises(PredictionCancelled):
        _drain(predict_volume_iter(vol, [loaded], ["rec"], o, should_stop=lambda: next(calls)))


def test_detect_with_a_fixed_threshold_is_the_map_above_it():
    from napari_vae_anomaly.data.phantom import make_phantom

    loaded = untrained_loaded()
    vol = make_phantom(seed=5, shape=(10, 24, 24), lesions=True).volume
    seen = []
    res = detect(vol, [loaded], DetectionSettings(predictors=("rec",), threshold=0.2,
                                                  min_size=0), progress=seen.append)
    assert res.mask_key == "rec" and res.threshold == 0.2 and res.thresholds.source == "fixed"
    np.testing.assert_array_equal(res.mask, ((res.maps["rec"] > 0.2)
                                             & res.prediction.foreground).astype(np.uint8))
    maps = [e for e in seen if e.stage == "maps"]
    assert maps[-1].done == maps[-1].total == 10
    assert [e.stage for e in seen if e.stage != "maps"] == ["thresholds"]


def test_widget_starts_from_the_settings_defaults(make_napari_viewer):
    from napari_vae_anomaly.widgets.detect import DetectWidget

    widget = DetectWidget(make_napari_viewer())
    assert widget.detection_settings() == DetectionSettings()
    assert widget.min_size.toolTip().lower().startswith("remove mask components")


@pytest.mark.parametrize("n_models, names, flat", [(1, ("rec", "combi", "kl_grad"), False),
                                                   (2, ("rec", "rec_grad"), False),
                                                   (1, ("rec", "combi"), True)])
def test_maps_handed_on_as_made_are_the_same_bytes_and_only_the_masks_map_is_kept(
        n_models, names, flat):
    """predict's path: each final map goes to ``put`` once, in output order, and is not kept
    (but for the mask's), with the same bytes, mask and lesions as keeping every map."""
    from napari_vae_anomaly.data.phantom import make_phantom

    models = [untrained_loaded(seed=s, name=f"m{s}") for s in range(n_models)]
    vol = make_phantom(seed=5, shape=(10, 24, 20), lesions=True).volume
    if flat:
        vol.data, vol.geometry = np.ascontiguousarray(vol.data[5]), vol.geometry.with_ndim(2)
    settings = DetectionSettings(predictors=names, threshold=0.3, min_size=0, chunk=4)
    kept = detect(vol, models, settings)
    handed: list[tuple[str, np.ndarray]] = []
    streamed = detect(vol, models, settings, put=lambda k, m: handed.append((k, m)))
    assert [k for k, _ in handed] == settings.keys(n_models) == [*names, "ensemble"]
    for key, arr in handed:
        assert arr.dtype == np.float32 and arr.shape == vol.data.shape
        assert arr.tobytes() == kept.maps[key].tobytes(), key
    assert list(streamed.maps) == ["ensemble"] and streamed.mask_key == "ensemble"
    assert streamed.prediction.member_maps == {}
    assert streamed.mask.tobytes() == kept.mask.tobytes() and streamed.mask.any()
    assert len(streamed.lesions) == len(kept.lesions)
