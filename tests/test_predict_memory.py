"""What keeps ``predict``'s memory bounded: voxels dropped once prepared, each map written
before the next is made and not held after writing, lean normalization, labelling and slicing.

Each test checks values or object lifetimes; the figures themselves are in
benchmarks/bench_memory.py (docs/benchmarks.md)."""

from __future__ import annotations

import gc
import threading
import time
import weakref

import numpy as np
import pytest

from napari_vae_anomaly.io import Geometry
from napari_vae_anomaly.io.volume import Volume


def test_without_voxels_keeps_shape_type_and_geometry_but_no_memory():
    from napari_vae_anomaly.predictors.pipeline import without_voxels

    geo = Geometry((1.0, 0.5, 2.0), (1.0, 2.0, 3.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    vol = Volume(np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6), geo, notes=["n"])
    light = without_voxels(vol)
    assert light.shape == (4, 5, 6) and light.data.dtype == np.int16
    assert light.geometry is geo and light.notes == ["n"]
    assert light.data.strides == (0, 0, 0) and not light.data.flags.writeable
    assert not light.data.any()  # zeros, never the old voxels
    assert vol.data[3, 4, 5] == 119  # the original is untouched


def test_writer_thread_does_not_hold_a_map_after_writing_it(monkeypatch):
    """The writing loop drops its last message: a written map is freed while the model makes
    the next one (it used to live until the next message arrived)."""
    from napari_vae_anomaly.cli import cohort, predict_case
    from napari_vae_anomaly.cli.cohort import Background, Loaded, Tally, write_behind

    written = threading.Event()

    class Recorder:
        def __init__(self, *args):
            pass

        def add(self, key, data):
            written.set()

        def discard(self):
            pass

    monkeypatch.setattr(predict_case, "CaseWriter", Recorder)
    bg = Background("w", write_behind(None, Tally(), threading.Lock(), print), 1)
    bg.thread.start()
    data = np.ones((8, 8, 8), np.float32)
    alive = weakref.ref(data)
    bg.put(("map", Loaded("src", "case"), "rec", data))
    del data
    assert written.wait(5)
    for _ in range(100):  # the loop clears its message right after writing
        gc.collect()
        if alive() is None:
            break
        time.sleep(0.01)
    assert alive() is None
    bg.put(cohort._END)
    bg.thread.join(5)


def test_slices_made_a_few_at_a_time_are_those_of_the_whole_stack(monkeypatch):
    from napari_vae_anomaly import preprocessing

    rng = np.random.default_rng(0)
    vol = rng.normal(100, 20, (11, 37, 29)).astype(np.float32)
    vol[:, :4] = 0
    cfg = preprocessing.PreprocessConfig(size=32)
    monkeypatch.setattr(preprocessing, "_SLICE_CHUNK", 10_000)
    whole = preprocessing.preprocess_volume(vol, cfg)
    monkeypatch.setattr(preprocessing, "_SLICE_CHUNK", 3)
    parts = preprocessing.preprocess_volume(vol, cfg)
    assert parts.images.tobytes() == whole.images.tobytes()
    assert np.array_equal(parts.masks, whole.masks)
    assert parts.images.dtype == np.float32 and parts.images.shape == (11, 1, 32, 32)


def test_zscore_moments_match_numpy_and_the_normalized_maps_agree():
    from napari_vae_anomaly.predictors import ensemble

    v = np.random.default_rng(1).gamma(2.0, 3.0, 2_500_001).astype(np.float32)
    mean, sd = ensemble.zscore_moments(v)
    ref = v.astype(np.float64)
    assert mean == pytest.approx(ref.mean(), rel=1e-13)
    assert sd == pytest.approx(ref.std(), rel=1e-13)
    assert ensemble.zscore_moments(np.zeros(0, np.float32)) == (0.0, 0.0)
    fg = np.ones(v.shape, bool)
    before = v.copy()
    lean = ensemble.normalized_foreground(v, fg, "zscore")  # float32, in place
    plain = ensemble.normalize_values(v, "zscore").astype(np.float32)
    assert lean.tobytes() == plain.tobytes()
    assert np.array_equal(v, before)  # the map itself was not changed


def test_labels_in_uint16_when_they_fit_else_int32():
    from napari_vae_anomaly.postprocessing.components import label_box, remove_small_components

    few = np.zeros((5, 6, 7), bool)
    few[1:3, 1:3, 1:3] = True
    few[4, 5, 6] = True
    lab, n = label_box(few)
    assert lab.dtype == np.uint16 and n == 2
    many = np.zeros((2, 600, 600), bool)
    many[0, ::2, ::2] = True  # 90,000 single voxels
    lab, n = label_box(many)
    assert lab.dtype == np.int32 and n == 90_000
    assert remove_small_components(many, 2).sum() == 0
    assert remove_small_components(few, 2).sum() == 8


def test_wait_done_returns_once_the_thread_has_finished_with_the_item():
    from napari_vae_anomaly.cli.cohort import Background

    finished: list[float] = []

    def slow(bg: Background) -> None:
        while (item := bg.get()) is not None:
            time.sleep(0.3)  # taken at once, finished 0.3 s later
            finished.append(time.perf_counter())
            bg.queue.task_done()
            if item == "last":
                return

    bg = Background("t", slow, 1)
    bg.thread.start()
    t0 = time.perf_counter()
    assert bg.put("first")
    bg.wait_done()
    assert finished and time.perf_counter() >= finished[0] >= t0 + 0.25
    bg.put("last")
    bg.thread.join(5)
    stuck = Background("s", lambda b: None, 5)  # never finishes anything: the stop ends it
    stuck.queue.put("x")
    threading.Timer(0.2, stuck.stop.set).start()
    stuck.wait_done()
    assert stuck.stop.is_set()


def test_predict_makes_no_map_while_the_writer_writes_the_last_one(tmp_path, monkeypatch):
    """With ``MAP_WRITTEN_FIRST`` the writer's map and the next one are never both in memory:
    no map is resampled back to the volume while a map is being staged."""
    import napari_vae_anomaly.preprocessing as pre
    from _models import tiny_vae
    from napari_vae_anomaly.cli import cohort, predict_case
    from napari_vae_anomaly.cli.main import main
    from napari_vae_anomaly.io import write_volume
    from napari_vae_anomaly.models.checkpoint import save_checkpoint

    assert cohort.MAP_WRITTEN_FIRST
    ckpt, scan = tmp_path / "tiny.safetensors", tmp_path / "scan.nii.gz"
    save_checkpoint(ckpt, tiny_vae(size=16), {"name": "tiny"}, pre.PreprocessConfig(size=16))
    data = np.random.default_rng(3).normal(100, 10, (6, 20, 20)).astype(np.float32)
    data[:, :3] = 0
    write_volume(scan, data, Geometry((1.0, 1.0, 2.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1)))
    events: list[str] = []
    real_add, real_from = predict_case.CaseWriter.add, pre.from_slices

    def add(self, key, data):
        events.append("write")
        time.sleep(0.05)  # slow enough to be overlapped if nothing waited for it
        real_add(self, key, data)
        events.append("written")

    def from_slices(*a, **k):
        events.append("make")
        return real_from(*a, **k)

    monkeypatch.setattr(predict_case.CaseWriter, "add", add)
    monkeypatch.setattr(pre, "from_slices", from_slices)
    argv = ["predict", str(scan), "--model", str(ckpt), "--threshold", "0.5", "--out-dir",
            str(tmp_path / "o"), "--no-progress",
            *(w for n in ("rec", "combi", "kl_grad") for w in ("--predictor", n))]
    assert main(argv) == 0
    assert events.count("write") == 4 and events.count("make") == 3  # 3 maps + the ensemble
    for i, e in enumerate(events):
        if e == "make":  # nothing being written when a map is made
            assert events[:i].count("write") == events[:i].count("written")
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == sorted(
        f"scan_{k}.nii.gz" for k in ("rec", "combi", "kl_grad", "ensemble", "mask"))
