"""napari's save action on a full disk: one error notification, the old file kept."""

from __future__ import annotations

import numpy as np
import pytest
from faults_data import snapshot

from napari_vae_anomaly._writer import write_image, write_labels


@pytest.mark.parametrize("ext", [".nii.gz", ".nrrd", ".mha"])
@pytest.mark.parametrize("writer, dtype", [(write_labels, np.int64), (write_image, np.float32)])
def test_napari_writers_keep_old_file_on_full_disk(tmp_path, full_disk, notes, ext, writer,
                                                   dtype):
    path = str(tmp_path / f"layer{ext}")
    assert writer(path, np.ones((3, 4, 5), dtype), {}) == [path]
    before = snapshot(tmp_path)
    full_disk(120)
    data = (np.random.default_rng(0).random((6, 30, 40)) * 9).astype(dtype)
    assert writer(path, data, {"scale": (2.0, 1.0, 1.0)}) == []
    assert snapshot(tmp_path) == before
    (message,) = notes["error"]
    assert message.startswith(f"layer{ext}: writing failed") and "disk full" in message
