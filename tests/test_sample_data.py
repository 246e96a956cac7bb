"""Sample data layer tuples (no viewer needed; the reader/GUI tests open them in napari)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from napari_vae_anomaly._sample_data import (
    SAMPLE_SPACING,
    sample_normal,
    sample_with_lesions,
)
from napari_vae_anomaly.io import Geometry


def test_sample_with_lesions_layers():
    layers = sample_with_lesions()
    assert [t for _, _, t in layers] == ["image", "labels"]
    (img, ik, _), (lab, lk, _) = layers
    assert ik["name"] == "phantom (lesions)" and lk["name"] == "phantom ground truth"
    assert img.dtype == np.float32 and img.ndim == 3
    assert lab.dtype == np.uint8 and lab.shape == img.shape and lab.max() >= 2
    assert np.all(img[lab > 0] > 0)
    for kw in (ik, lk):
        g = Geometry.from_metadata(kw["metadata"])
        assert g is not None and g.spacing == SAMPLE_SPACING
        assert tuple(kw["scale"]) == g.scale == (1.4, 1.0, 1.0)
        assert tuple(kw["translate"]) == g.translate
    lesions = lk["metadata"]["lesions"]
    assert len(lesions) == lab.max() and {d["label"] for d in lesions} == set(
        range(1, lab.max() + 1)
    )
    assert ik["metadata"]["phantom"]["seed"] == 0


def test_sample_normal_layer():
    layers = sample_normal()
    assert len(layers) == 1
    img, kw, kind = layers[0]
    assert kind == "image" and kw["name"] == "phantom (normal)"
    assert kw["metadata"]["phantom"]["lesions"] == 0
    assert Geometry.from_metadata(kw["metadata"]).spacing == SAMPLE_SPACING
    # a different subject from the lesion sample
    other = sample_with_lesions()[0][0]
    assert img.shape == other.shape and not np.array_equal(img > 0, other > 0)


def test_sample_module_does_not_import_torch():
    code = (
        "import sys, napari_vae_anomaly._sample_data as s; s.sample_normal(); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
