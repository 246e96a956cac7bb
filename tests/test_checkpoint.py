"""Checkpoints: exact round trip, atomic and non-destructive writes, and refusal of bad files."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from napari_vae_anomaly.devices import available_devices, release_model, resolve_device
from napari_vae_anomaly.errors import CheckpointError, DeviceError
from napari_vae_anomaly.models.checkpoint import (
    FORMAT_NAME,
    MAX_REFERENCE,
    load_checkpoint,
    read_card,
    save_checkpoint,
)
from napari_vae_anomaly.models.vae import VAE, VAEConfig
from napari_vae_anomaly.preprocessing import PreprocessConfig


@pytest.fixture(autouse=True)
def _one_thread(_torch_threads):
    """One torch thread: on 2 shared cores, 2 threads per process thrash (10x slower)."""
    torch.set_num_threads(1)


class _Ref:
    def __init__(self, images, masks):
        self.images, self.masks = images, masks


def _model(seed: int = 0, latent: int = 16) -> VAE:
    torch.manual_seed(seed)
    return VAE(VAEConfig(size=32, features=(8, 16, 32), latent=latent, beta=0.5, likelihood="laplace"))


@pytest.fixture
def saved(tmp_path, rng):
    model = _model()
    pre = PreprocessConfig(size=32, axis=1, skip_slices=2)
    images = rng.normal(size=(80, 1, 32, 32)).astype(np.float32)
    masks = rng.random((80, 1, 32, 32)) > 0.3
    card = {"name": "tiny", "training": {"history": [{"epoch": 1, "val_loss": 3.5}], "seed": 7}}
    path = save_checkpoint(tmp_path / "m.safetensors", model, card, pre, _Ref(images, masks))
    return path, model, pre, images, masks


def _rewrite(src: Path, dst: Path, edit_meta=None, edit_tensors=None) -> Path:
    """Re-save a checkpoint's tensors/metadata with edits (to forge bad files)."""
    from safetensors import safe_open

    with safe_open(str(src), "pt") as f:
        meta = dict(f.metadata())
    tensors = st_load(src.read_bytes())
    if edit_meta:
        edit_meta(meta)
    if edit_tensors:
        edit_tensors(tensors)
    dst.write_bytes(st_save(tensors, metadata=meta))
    return dst


def test_round_trip_is_exact(saved):
    path, model, pre, images, masks = saved
    loaded = load_checkpoint(path)
    assert not loaded.model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.model.state_dict()[k]), k
    assert loaded.config == model.config
    assert loaded.preprocess == pre
    assert loaded.card["name"] == "tiny" and loaded.name == "tiny"
    assert loaded.card["training"]["history"] == [{"epoch": 1, "val_loss": 3.5}]
    assert loaded.card["architecture"] == model.config.to_dict()
    assert loaded.card["beta"] == 0.5 and loaded.card["likelihood"] == "laplace"
    assert loaded.card["preprocessing"]["axis"] == 1
    assert "torch" in loaded.card["environment"] and loaded.card["created"]
    assert read_card(path) == loaded.card
    # reference slices: at most MAX_REFERENCE, evenly spaced, float16 precision, masks exact
    keep = np.linspace(0, 79, MAX_REFERENCE).round().astype(int)
    assert loaded.normal_images.shape == (MAX_REFERENCE, 1, 32, 32)
    assert loaded.normal_images.dtype == np.float32 and loaded.normal_masks.dtype == bool
    np.testing.assert_array_equal(loaded.normal_images, images[keep].astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(loaded.normal_masks, masks[keep])
    x = torch.as_tensor(images[:4])
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x)[0], loaded.model(x)[0])
    assert "latent 16" in loaded.summary()


def test_refuses_overwrite_and_writes_atomically(saved, tmp_path):
    path, model, pre, *_ = saved
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match="already exists.*overwrite"):
        save_checkpoint(path, _model(seed=3), {}, pre)
    assert path.read_bytes() == before
    save_checkpoint(path, _model(seed=3), {}, pre, overwrite=True)
    assert path.read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]  # no temp files left
    with pytest.raises(CheckpointError, match="does not exist"):
        save_checkpoint(tmp_path / "missing" / "m.safetensors", model, {}, pre)


def test_truncated_file(saved, tmp_path):
    path = saved[0]
    raw = path.read_bytes()
    for cut in (len(raw) // 2, 100, 5):
        bad = tmp_path / f"cut{cut}.safetensors"
        bad.write_bytes(raw[:cut])
        with pytest.raises(CheckpointError, match="truncated") as err:
            load_checkpoint(bad)
        assert str(bad) in str(err.value) and "\n" not in str(err.value)


def test_random_and_empty_and_missing(tmp_path):
    noise = tmp_path / "noise.safetensors"
    noise.write_bytes(np.random.default_rng(5).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(CheckpointError, match="not a safetensors checkpoint"):
        load_checkpoint(noise)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(empty)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_foreign_safetensors(tmp_path):
    foreign = tmp_path / "foreign.safetensors"
    foreign.write_bytes(st_save({"weight": torch.zeros(3, 3)}, metadata={"format": "pt"}))
    with pytest.raises(CheckpointError, match="not a napari-vae-anomaly checkpoint"):
        load_checkpoint(foreign)


def test_newer_format_version(saved, tmp_path):
    bad = _rewrite(saved[0], tmp_path / "v99.safetensors",
                   edit_meta=lambda m: m.update(format_version="99"))
    with pytest.raises(CheckpointError, match="format version 99, newer"):
        load_checkpoint(bad)


def test_architecture_mismatch(saved, tmp_path):
    def shrink(meta):
        card = json.loads(meta["card"])
        card["architecture"]["latent"] = 8
        meta["card"] = json.dumps(card)

    bad = _rewrite(saved[0], tmp_path / "mismatch.safetensors", edit_meta=shrink)
    with pytest.raises(CheckpointError, match="does not match its architecture.*shape mismatch"):
        load_checkpoint(bad)
    missing = _rewrite(saved[0], tmp_path / "missing.safetensors",
                       edit_tensors=lambda t: t.pop("model.decoder.0.weight"))
    with pytest.raises(CheckpointError, match="missing 1 tensor.*decoder.0.weight"):
        load_checkpoint(missing)


class _Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("kind", ["torch_zip", "raw_pickle"])
def test_pickle_is_refused_and_never_executed(tmp_path, kind):
    marker = tmp_path / "pwned"
    evil = tmp_path / "model.pt"
    if kind == "torch_zip":
        torch.save({"state": _Payload(marker)}, evil)
    else:
        evil.write_bytes(pickle.dumps(_Payload(marker), protocol=4))
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="looks like a PyTorch pickle.*convert"):
        load_checkpoint(evil)
    with pytest.raises(CheckpointError, match="PyTorch pickle"):
        read_card(evil)
    assert not marker.exists()
    # sanity: the payload is real (unpickling it does create the file)
    pickle.loads(pickle.dumps(_Payload(marker)))
    assert marker.exists()


def test_format_name_in_metadata(saved):
    from safetensors import safe_open

    with safe_open(str(saved[0]), "pt") as f:
        assert f.metadata()["format"] == FORMAT_NAME


def test_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    assert available_devices()[-1] == "cpu"
    assert str(resolve_device("auto")) == available_devices()[0]
    with pytest.raises(DeviceError, match="unknown device 'tpu'.*cpu"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match=r"'cuda' is not available.*available: .*cpu"):
            resolve_device("cuda")
    with pytest.raises(DeviceError, match="cuda:7"):
        resolve_device("cuda:7") if torch.cuda.device_count() < 8 else resolve_device("tpu:7")
    model = _model()
    release_model(model)
    assert next(model.parameters()).device.type == "cpu"
