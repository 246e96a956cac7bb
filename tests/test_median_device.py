"""The median filter on a GPU gives scipy's values (checked here with torch on the CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from napari_vae_anomaly.postprocessing import filters
from napari_vae_anomaly.postprocessing.filters import median_filter_in_place, median_filter_torch


@pytest.mark.parametrize("size", [2, 3, 4, 5])
@pytest.mark.parametrize("shape", [(1, 9, 11), (7, 12, 10), (13, 5, 6)])
def test_torch_median_is_scipys(size, shape, monkeypatch):
    rng = np.random.default_rng(size)
    a = rng.gamma(2.0, 1.0, shape).astype(np.float32)
    a[a < 0.8] = 0.0  # ties and zeros, as masked maps have
    monkeypatch.setattr(filters, "_MEDIAN_BUDGET", 3 * shape[1] * shape[2] * size**3)  # slabs
    got = median_filter_torch(a, size, torch.device("cpu"))
    want = ndimage.median_filter(a, size=size, mode="nearest")
    assert got.dtype == np.float32 and got.tobytes() == want.tobytes()


def test_in_place_uses_torch_only_for_cuda(monkeypatch):
    calls = []
    monkeypatch.setattr(filters, "median_filter_torch",
                        lambda a, size, device: calls.append(str(device)) or a * 0 + 7)
    fg = np.zeros((6, 8, 8), bool)
    fg[2:4, 2:6, 2:6] = True
    score = np.random.default_rng(0).random((6, 8, 8)).astype(np.float32)
    cpu = score.copy()
    median_filter_in_place(cpu, 3, fg, torch.device("cpu"))  # scipy
    assert calls == [] and cpu[3, 4, 4] != 7
    gpu = score.copy()
    median_filter_in_place(gpu, 3, fg, torch.device("cuda", 0))  # patched: no GPU needed
    assert calls == ["cuda:0"] and gpu[3, 4, 4] == 7 and gpu[0, 0, 0] == score[0, 0, 0]
    with pytest.raises(ValueError, match="3-D"):
        median_filter_torch(np.zeros((3, 3), np.float32), 3, "cpu")


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
@pytest.mark.parametrize("size", [2, 3, 5])
@pytest.mark.parametrize("depth", [5, 17, 40])
def test_median_in_slabs_on_threads_is_scipys(threads, size, depth, monkeypatch):
    from napari_vae_anomaly.postprocessing.filters import median_slabs

    monkeypatch.setattr(filters, "_MIN_SLAB", 4)
    rng = np.random.default_rng(depth + size)
    a = rng.gamma(2.0, 1.0, (depth, 9, 11)).astype(np.float32)
    a[a < 0.8] = 0.0
    pieces = median_slabs(a, size, threads)
    assert [p[0] for p in pieces][0] == 0 and pieces[-1][1] == depth
    assert len(pieces) == max(1, min(threads, depth // 4))
    got = np.concatenate([p[2] for p in pieces])
    want = ndimage.median_filter(a, size=size, mode="nearest")
    assert got.tobytes() == want.tobytes()


def test_in_place_median_on_threads_reads_before_it_writes(monkeypatch):
    """Filtering in place with several slabs gives scipy's values: no slab reads planes that
    another has already overwritten."""
    monkeypatch.setattr(filters, "_MIN_SLAB", 3)
    monkeypatch.setattr(filters, "_threads", lambda: 4)
    rng = np.random.default_rng(5)
    score = rng.gamma(2.0, 1.0, (24, 10, 12)).astype(np.float32)
    fg = np.ones(score.shape, bool)
    want = ndimage.median_filter(score, size=5, mode="nearest")
    median_filter_in_place(score, 5, fg)
    assert score.tobytes() == want.tobytes()
    other = rng.random((24, 10, 12)).astype(np.float32) + 0.1  # no zeros: the box is all
    got = filters.median_filter_map(other, 5)
    assert got.tobytes() == ndimage.median_filter(other, size=5, mode="nearest").tobytes()
