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
