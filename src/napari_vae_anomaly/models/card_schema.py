"""Strict validation of a checkpoint's model card and tensor table, before anything is built.

Why: a model file may come from anyone. Its card decides the architecture, hence how much
memory building the VAE takes, so every field is checked against types and bounds first, the
tensor shapes the architecture needs are computed arithmetically and compared with the file's
header, and only then is a single weight allocated. Every failure is one line (a
:class:`~napari_vae_anomaly.errors.CheckpointError` raised by the caller with the file name).
"""

from __future__ import annotations

import math
from typing import Any

from .vae import DECODER_HEADS, LIKELIHOODS, VAEConfig

MAX_SIZE = 1024
MAX_CHANNELS = 16
MAX_LEVELS = 8
MAX_FEATURES = 4096
MAX_LATENT = 8192
MAX_BETA = 1e6
MAX_PARAMETERS = 100_000_000  # 400 MB of float32 weights
FLOAT_DTYPES = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8}

# optional card entries read by summaries, training resumption and calibration
_DICT_KEYS = ("training", "environment", "normal_stats", "preprocessing")
_TEXT_KEYS = ("name", "created")


class CardError(ValueError):
    """One readable reason why a card or tensor table is refused (file name added by caller)."""


def _int(d: dict[str, Any], key: str, lo: int, hi: int, default: int | None = None,
         what: str = "architecture") -> int:
    value = d.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise CardError(f"{what} {key} must be an integer, got {_show(value)}")
    if not lo <= value <= hi:
        raise CardError(f"{what} {key} must be between {lo} and {hi}, got {value}")
    return value


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_card(card: dict[str, Any]) -> None:
    """Types of the optional entries other parts of the package read."""
    for key in _TEXT_KEYS:
        if card.get(key) is not None and not isinstance(card[key], str):
            raise CardError(f"model card {key} must be text, got {_show(card[key])}")
    for key in _DICT_KEYS:
        if card.get(key) is not None and not isinstance(card[key], dict):
            raise CardError(f"model card {key} must be an object, got {_show(card[key])}")
    training = card.get("training") or {}
    history = training.get("history")
    if history is not None and (
        not isinstance(history, list) or not all(isinstance(h, dict) for h in history)
    ):
        raise CardError("model card training history must be a list of objects")
    if training.get("data") is not None and not isinstance(training["data"], dict):
        raise CardError("model card training data must be an object")
    profile = (training.get("data") or {}).get("profile")
    if profile is not None and not isinstance(profile, dict):
        raise CardError("model card training data profile must be an object")


def architecture_from_card(card: dict[str, Any]) -> VAEConfig:
    """A :class:`VAEConfig` from the card's ``architecture``, within strict bounds."""
    d = card.get("architecture")
    if not isinstance(d, dict):
        raise CardError("the model card has no architecture")
    size = _int(d, "size", 8, MAX_SIZE)
    if size & (size - 1):
        raise CardError(f"architecture size must be a power of two, got {size}")
    in_channels = _int(d, "in_channels", 1, MAX_CHANNELS, default=1)
    latent = _int(d, "latent", 1, MAX_LATENT)
    features = d.get("features")
    if not isinstance(features, list) or not 1 <= len(features) <= MAX_LEVELS:
        raise CardError(f"architecture features must be a list of 1 to {MAX_LEVELS} integers, "
                        f"got {_show(features)}")
    for f in features:
        if isinstance(f, bool) or not isinstance(f, int) or not 1 <= f <= MAX_FEATURES:
            raise CardError(f"architecture features must be integers between 1 and "
                            f"{MAX_FEATURES}, got {_show(features)}")
    likelihood = d.get("likelihood", "gaussian")
    if likelihood not in LIKELIHOODS:
        raise CardError(f"architecture likelihood must be one of {LIKELIHOODS}, "
                        f"got {_show(likelihood)}")
    beta = d.get("beta", 1.0)
    if isinstance(beta, bool) or not isinstance(beta, int | float) or not (
        math.isfinite(beta) and 0 <= beta <= MAX_BETA
    ):
        raise CardError(f"architecture beta must be a number between 0 and {MAX_BETA:g}, "
                        f"got {_show(beta)}")
    head = d.get("decoder_head", "transpose")  # cards older than the option: transpose
    if head not in DECODER_HEADS:
        raise CardError(f"architecture decoder_head must be one of {DECODER_HEADS}, got {_show(head)}")
    extra = d.get("extra", {})
    if not isinstance(extra, dict):
        raise CardError(f"architecture extra must be an object, got {_show(extra)}")
    config = VAEConfig(size=size, in_channels=in_channels, features=tuple(features),
                       latent=latent, likelihood=likelihood, beta=float(beta),
                       decoder_head=head, extra=extra)
    n = sum(math.prod(s) for s in expected_shapes(config).values())
    if n > MAX_PARAMETERS:
        raise CardError(f"the architecture has {n:,} parameters, more than the "
                        f"{MAX_PARAMETERS:,} this package loads")
    return config


def expected_shapes(config: VAEConfig) -> dict[str, tuple[int, ...]]:
    """The state-dict shapes :class:`~.vae.VAE` has for ``config``, computed without building it."""
    feats = config.level_features()
    shapes: dict[str, tuple[int, ...]] = {}
    ch = config.in_channels
    for i, f in enumerate(feats):
        shapes[f"encoder.{2 * i}.weight"], shapes[f"encoder.{2 * i}.bias"] = (f, ch, 4, 4), (f,)
        ch = f
    last = 2 * len(feats)
    shapes[f"encoder.{last}.weight"] = (2 * config.latent, ch, 4, 4)
    shapes[f"encoder.{last}.bias"] = (2 * config.latent,)
    shapes["decoder.0.weight"], shapes["decoder.0.bias"] = (config.latent, feats[-1], 4, 4), (
        feats[-1],)
    ch, idx = feats[-1], 2
    for f in reversed(feats[:-1]):
        shapes[f"decoder.{idx}.weight"], shapes[f"decoder.{idx}.bias"] = (ch, f, 4, 4), (f,)
        ch, idx = f, idx + 2
    if config.decoder_head == "conv3":
        shapes[f"decoder.{idx}.weight"], shapes[f"decoder.{idx}.bias"] = (ch, feats[0], 4, 4), (
            feats[0],)
        shapes[f"decoder.{idx + 2}.weight"] = (config.in_channels, feats[0], 3, 3)
        shapes[f"decoder.{idx + 2}.bias"] = (config.in_channels,)
        return shapes
    shapes[f"decoder.{idx}.weight"] = (ch, config.in_channels, 4, 4)
    shapes[f"decoder.{idx}.bias"] = (config.in_channels,)
    return shapes


def check_tensor_table(header: dict[str, Any], config: VAEConfig, prefix: str) -> None:
    """The file's tensors (from its header) are exactly the float tensors ``config`` needs."""
    found: dict[str, tuple[int, ...]] = {}
    for key, info in header.items():
        if key == "__metadata__" or not key.startswith(prefix):
            continue
        shape = info.get("shape") if isinstance(info, dict) else None
        if not isinstance(shape, list) or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape
        ):
            raise CardError(f"tensor {_show(key)} has an invalid shape")
        dtype = info.get("dtype")
        if not isinstance(dtype, str) or dtype not in FLOAT_DTYPES:
            raise CardError(f"tensor {_show(key)} is not floating point "
                            f"({_show(info.get('dtype'))})")
        found[key[len(prefix):]] = tuple(shape)
    expected = expected_shapes(config)
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = [f"{k} {found[k]} != {expected[k]}" for k in sorted(set(found) & set(expected))
             if found[k] != expected[k]]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensor(s) e.g. {missing[0]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s) e.g. {_show(unexpected[0])}")
    if wrong:
        problems.append(f"{len(wrong)} shape mismatch(es) e.g. {wrong[0]}")
    if problems:
        raise CardError(
            f"does not match its architecture (size {config.size}, features "
            f"{list(config.features)}, latent {config.latent}): " + "; ".join(problems))


_PRE_NUMBERS = ("z_clip", "background", "min_foreground_fraction")
_PRE_INTS = {"axis": (0, 2), "skip_slices": (0, 100_000), "size": (4, MAX_SIZE)}


def preprocessing_from_card(card: dict[str, Any], size: int) -> dict[str, Any]:
    """The card's preprocessing settings, type-checked (values are checked by their class)."""
    d = card.get("preprocessing") or {"size": size}
    if not isinstance(d, dict):
        raise CardError(f"preprocessing must be an object, got {_show(d)}")
    for key, (lo, hi) in _PRE_INTS.items():
        if key in d:
            _int(d, key, lo, hi, what="preprocessing")
    for key in _PRE_NUMBERS:
        v = d.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)
                              or not math.isfinite(v)):
            raise CardError(f"preprocessing {key} must be a finite number, got {_show(v)}")
    clip = d.get("clip_percentiles", [0.5, 99.5])
    if not isinstance(clip, list) or len(clip) != 2 or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in clip
    ):
        raise CardError(f"preprocessing clip_percentiles must be two numbers, got {_show(clip)}")
    if not isinstance(d.get("foreground", "auto"), str):
        raise CardError(f"preprocessing foreground must be text, got {_show(d['foreground'])}")
    if not isinstance(d.get("extra", {}), dict):
        raise CardError(f"preprocessing extra must be an object, got {_show(d['extra'])}")
    if d.get("size", size) != size:
        raise CardError(f"preprocessing size {d['size']} differs from the architecture's {size}")
    return d
