"""Hostile and damaged checkpoints: one clear CheckpointError, nothing built, bounded memory."""

from __future__ import annotations

import json
import math
import random
import resource
import struct
import time

import pytest
import torch

from _models import tiny_vae
from napari_vae_anomaly.errors import CheckpointError
from napari_vae_anomaly.models import checkpoint as ckpt_mod
from napari_vae_anomaly.models.card_schema import expected_shapes
from napari_vae_anomaly.models.checkpoint import load_checkpoint, save_checkpoint
from napari_vae_anomaly.models.vae import VAE, VAEConfig
from napari_vae_anomaly.preprocessing import PreprocessConfig


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> bytes:
    d = tmp_path_factory.mktemp("ckpt")
    return save_checkpoint(d / "m.safetensors", tiny_vae(size=16), {"name": "tiny"},
                           PreprocessConfig(size=16)).read_bytes()


def split(raw: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def join(header: dict | str, data: bytes) -> bytes:
    text = (header if isinstance(header, str) else json.dumps(header)).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def with_card(raw: bytes, card: dict | str) -> bytes:
    header, data = split(raw)
    header["__metadata__"]["card"] = card if isinstance(card, str) else json.dumps(card)
    return join(header, data)


def card_of(raw: bytes) -> dict:
    return json.loads(split(raw)[0]["__metadata__"]["card"])


@pytest.fixture
def never_built(monkeypatch):
    """Fail the test if a VAE is constructed: refusals must happen before allocation."""
    def refuse(*_a, **_k):
        raise AssertionError("a VAE was built from a card that should have been refused")

    monkeypatch.setattr(ckpt_mod, "VAE", refuse)


@pytest.mark.parametrize("config", [
    VAEConfig(size=16, features=(4, 8), latent=4),
    VAEConfig(size=64, features=(16, 32, 64, 256), latent=256),
    VAEConfig(size=32, in_channels=2, features=(3,), latent=7),
    VAEConfig(size=8, features=(5, 6, 7), latent=1),
    VAEConfig(size=16, features=(4, 6), latent=3, decoder_head="conv3"),
    VAEConfig(size=32, in_channels=2, features=(3,), latent=5, decoder_head="conv3"),
])
def test_expected_shapes_match_the_model(config):
    model_shapes = {k: tuple(v.shape) for k, v in VAE(config).state_dict().items()}
    assert expected_shapes(config) == model_shapes


@pytest.mark.parametrize("change, message", [
    ({"features": [16, 32, 64, 20000]}, r"features must be integers between 1 and 4096"),
    ({"features": [16, 32, 64, 4096], "size": 64}, r"preprocessing size 16 differs"),
    ({"features": [16, 32, 64, 4096]}, r"does not match its architecture"),
    ({"latent": 10**9}, r"latent must be between 1 and 8192"),
    ({"latent": 8192, "features": [4096] * 8, "size": 1024}, r"more than the 100,000,000"),
    ({"features": [-4, 8]}, r"features must be integers"),
    ({"features": [4.5, 8]}, r"features must be integers"),
    ({"features": [True, 8]}, r"features must be integers"),
    ({"size": 17}, r"size must be a power of two"),
    ({"size": "16"}, r"size must be an integer"),
    ({"beta": float("nan")}, r"beta must be a number"),
    ({"beta": float("inf")}, r"beta must be a number"),
    ({"likelihood": ["gaussian"]}, r"likelihood must be one of"),
    ({"latent": 8}, r"shape mismatch\(es\) e\.g\. decoder\.0\.weight"),
])
def test_hostile_architecture_refused_before_building(good, tmp_path, never_built, change,
                                                      message):
    card = card_of(good)
    card["architecture"].update(change)
    path = tmp_path / "h.safetensors"
    path.write_bytes(with_card(good, card))
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize("card_text, message", [
    ('{"architecture": {}}', r"size must be an integer"),
    (None, r"preprocessing must be an object"),
    ('{"architecture": ' + "[" * 100_000 + "]" * 100_000 + "}", r"invalid JSON"),
    ('{"architecture": {"size": 16}, "training": [1]}', r"training must be an object"),
    ('{"architecture": {"size": 16}, "name": {"a": 1}}', r"name must be text"),
])
def test_hostile_card_entries(good, tmp_path, never_built, card_text, message):
    if card_text is None:
        card = card_of(good)
        card["preprocessing"] = [1, 2]
        card_text = json.dumps(card)
    path = tmp_path / "h.safetensors"
    path.write_bytes(with_card(good, card_text))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_cli_reports_hostile_model_on_one_line(good, tmp_path, capsys):
    from napari_vae_anomaly.cli.main import main

    card = card_of(good)
    card["architecture"]["features"] = [16, 32, 64, 200000]
    path = tmp_path / "hostile.safetensors"
    path.write_bytes(with_card(good, card))
    scan = tmp_path / "scan.nii.gz"
    scan.write_bytes(b"not read: the model is refused first")
    assert main(["predict", str(scan), "--model", str(path), "--out-dir", str(tmp_path / "o"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "hostile.safetensors" in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------ seeded fuzzing
_VALUES = [-1, 0, 1, 3, 16, 2**31, 10**12, -(10**12), 1e308, 0.5, -0.0, float("nan"),
           float("inf"), "16", "", "x" * 300, None, True, False, [], [1, 2], [16, 16, 16],
           [[1]], {}, {"a": 1}, ["gaussian"], "gaussian", "laplace", [0.5, 99.5], [99, 1]]
_ARCH = ["size", "in_channels", "features", "latent", "likelihood", "beta", "extra"]
_PRE = ["axis", "skip_slices", "size", "clip_percentiles", "z_clip", "background",
        "min_foreground_fraction", "foreground", "extra"]
_TOP = ["architecture", "preprocessing", "name", "created", "training", "environment",
        "normal_stats", "beta", "likelihood"]


def _mutate_card(card: dict, rnd: random.Random) -> None:
    for _ in range(rnd.randint(1, 3)):
        where = rnd.random()
        value = rnd.choice(_VALUES)
        if where < 0.45:
            card["architecture"][rnd.choice(_ARCH)] = value
        elif where < 0.6 and card["architecture"]["features"]:
            feats = list(card["architecture"]["features"]) if isinstance(
                card["architecture"]["features"], list) else [4, 8]
            feats[rnd.randrange(len(feats))] = value
            card["architecture"]["features"] = feats
        elif where < 0.8 and isinstance(card.get("preprocessing"), dict):
            card["preprocessing"][rnd.choice(_PRE)] = value
        elif rnd.random() < 0.5:
            card[rnd.choice(_TOP)] = value
        else:
            card.pop(rnd.choice(_TOP), None)


def _mutate_header(header: dict, rnd: random.Random) -> None:
    names = [k for k in header if k != "__metadata__"]
    key = rnd.choice(names)
    what = rnd.choice(["dtype", "shape", "data_offsets", "drop", "rename", "meta"])
    if what == "drop":
        del header[key]
    elif what == "rename":
        header["model.x" + key] = header.pop(key)
    elif what == "meta":
        header["__metadata__"][rnd.choice(["format", "format_version", "card"])] = rnd.choice(
            ["1", "2", "0", "napari-vae-anomaly.vae", "", "{}", "null"])
    else:
        header[key][what] = rnd.choice(
            _VALUES + ["F16", "I64", "U8", "BOOL", [0, 10**15], [5, 1], [1, 2, 3, 4]])


def _outcome(path) -> str:
    try:
        loaded = load_checkpoint(path)
        loaded.summary()
        assert isinstance(loaded.name, str)
        return "loaded"
    except CheckpointError as exc:
        assert "\n" not in str(exc) and str(exc), repr(exc)
        return "refused"


def test_fuzz_card_fields_and_header_bytes(good, tmp_path):
    """Hundreds of seeded mutations: each loads or gives one CheckpointError line, never
    another exception; the process' peak memory grows by less than 200 MB in all."""
    rnd = random.Random(20261204)
    path = tmp_path / "fuzz.safetensors"
    peak0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    header0, data = split(good)
    (n,) = struct.unpack("<Q", good[:8])
    counts = {"loaded": 0, "refused": 0}
    t0 = time.perf_counter()
    for i in range(450):
        kind = i % 3
        if kind == 0:  # card fields
            card = card_of(good)
            _mutate_card(card, rnd)
            raw = with_card(good, json.dumps(card))
        elif kind == 1:  # header structure
            header = json.loads(json.dumps(header0))
            _mutate_header(header, rnd)
            raw = join(header, data)
        else:  # raw header bytes: flips, length field, truncation
            b = bytearray(good)
            for _ in range(rnd.randint(1, 4)):
                b[rnd.randrange(8 + n)] = rnd.randrange(256)
            if rnd.random() < 0.2:
                b[:8] = struct.pack("<Q", rnd.choice([0, 7, n - 1, n + 8, 2**40, 2**64 - 1]))
            if rnd.random() < 0.2:
                b = b[: rnd.randrange(len(b))]
            raw = bytes(b)
        path.write_bytes(raw)
        counts[_outcome(path)] += 1
    elapsed = time.perf_counter() - t0
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak0) / 1024
    print(counts, f"{grown_mb:.0f} MB")
    assert counts["refused"] > 300 and grown_mb < 200, (counts, grown_mb)
    assert elapsed < 30
    torch.set_num_threads(1)
    assert math.isfinite(elapsed)
