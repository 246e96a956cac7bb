"""The detection pipeline on an accelerator gives the CPU's maps (skipped without CUDA)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from _models import untrained_loaded
from napari_vae_anomaly.detection import DetectionSettings, detect

CUDA = torch.cuda.is_available()


@pytest.mark.skipif(not CUDA, reason="no CUDA device here")
def test_every_map_on_cuda_is_the_cpu_map():
    from napari_vae_anomaly.data.phantom import make_phantom
    from napari_vae_anomaly.predictors.registry import PREDICTORS

    cpu = untrained_loaded()
    gpu = copy.deepcopy(cpu)
    gpu.model = gpu.model.to("cuda")
    vol = make_phantom(seed=5, shape=(12, 32, 32), lesions=True).volume
    settings = DetectionSettings(predictors=tuple(PREDICTORS), threshold=0.5, energy_steps=5,
                                 normalize="zscore", min_size=0)
    a = detect(vol, [cpu], settings)
    b = detect(vol, [gpu], settings)
    for key, m in a.maps.items():
        scale = float(np.abs(m).max()) or 1.0
        np.testing.assert_allclose(b.maps[key], m, atol=1e-3 * scale, err_msg=key)
    assert b.maps["rec"].dtype == np.float32 and b.mask.shape == vol.data.shape
