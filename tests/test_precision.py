"""Reduced precision for prediction: the rule "only where the map stays within 1e-3 of its
float32 map's range", checked on whatever device is here (CUDA if present, else the CPU).

The maps come from the trained demo model on slices of the MNI sample subject: a random
model's gradients say nothing about a trained one's sensitivity to rounding.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

from napari_vae_anomaly.predictors import registry
from napari_vae_anomaly.predictors.batch import compute_maps
from napari_vae_anomaly.predictors.precision import (
    AutocastModel,
    exact_float32,
    input_grad,
    with_precision,
)
from napari_vae_anomaly.predictors.registry import PREDICTORS, PredictorOptions, precision_for

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
LIMIT = 1e-3
SMALL = PredictorOptions(energy_steps=2)  # a short projection keeps the test fast


@functools.lru_cache(maxsize=1)
def demo_slices() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The demo model on DEVICE and 4 preprocessed slices through the lesions (with masks)."""
    pytest.importorskip("nilearn")
    from napari_vae_anomaly._sample_data import MNI_LESION_KINDS, MNI_LESION_SEED
    from napari_vae_anomaly.data.realistic import make_subject
    from napari_vae_anomaly.models.bundled import bundled_model_path
    from napari_vae_anomaly.models.checkpoint import load_checkpoint
    from napari_vae_anomaly.predictors.pipeline import prepare_volume

    loaded = load_checkpoint(bundled_model_path(), device=DEVICE)
    subject = make_subject(MNI_LESION_SEED, MNI_LESION_KINDS)
    batch = prepare_volume(subject.volume, [loaded]).batches[0]
    lesion_slices = np.flatnonzero((subject.lesion_mask > 0).any(axis=(1, 2)))
    pick = np.linspace(lesion_slices[0], lesion_slices[-1], 4).round().astype(int)
    pick = np.searchsorted(batch.indices, pick).clip(0, len(batch) - 1)
    return loaded.model, torch.as_tensor(batch.images[pick]), torch.as_tensor(batch.masks[pick])


def rel_err(a: np.ndarray, ref: np.ndarray, region: np.ndarray) -> float:
    r = ref[region]
    return float(np.abs(a[region] - r).max()) / (float(r.max() - r.min()) or 1.0)


@pytest.fixture
def allow(monkeypatch):
    """Mark predictors ``reduced_precision`` for one test (the registry is restored after)."""

    def mark(*names: str) -> None:
        for n in names:
            monkeypatch.setitem(registry.PREDICTORS, n, replace(PREDICTORS[n], reduced_precision=True))

    return mark


def test_the_registry_flags_follow_the_rule_on_this_device(allow):
    """A flagged predictor stays within 1e-3 of its fp32 map in bf16 and fp16; an unflagged one
    leaves it in at least one of them (else its flag should be on)."""
    model, x, mask = demo_slices()
    flags = {n: info.reduced_precision for n, info in PREDICTORS.items()}
    names = list(PREDICTORS)
    region = mask[:, 0].numpy()
    ref = compute_maps(model, x, names, SMALL, mask=mask)
    allow(*names)
    worst = {n: 0.0 for n in names}
    for precision in ("bf16", "fp16"):
        got = compute_maps(model, x, names, SMALL.replace(precision=precision), mask=mask)
        for n in names:
            assert got[n].dtype == np.float32 and got[n].shape == ref[n].shape
            worst[n] = max(worst[n], rel_err(got[n], ref[n], region))
    for n in names:
        if flags[n]:
            assert worst[n] <= LIMIT, (n, worst[n])
        else:
            assert worst[n] > LIMIT, f"{n} stays within {LIMIT} ({worst[n]:.1e}): flag it"


def test_fp32_is_the_default_and_a_refused_precision_gives_the_fp32_maps_bit_for_bit():
    model, x, mask = demo_slices()
    names = list(PREDICTORS)
    assert PredictorOptions().precision == "fp32"
    default = compute_maps(model, x, names, SMALL, mask=mask)
    explicit = compute_maps(model, x, names, SMALL.replace(precision="fp32"), mask=mask)
    with pytest.warns(UserWarning, match=r"precision bf16 not used: .*rec.*computing in fp32"):
        refused = compute_maps(model, x, names, SMALL.replace(precision="bf16"), mask=mask)
    for n in names:
        assert np.array_equal(default[n], explicit[n]), n
        if not PREDICTORS[n].reduced_precision:
            assert np.array_equal(default[n], refused[n]), n


def test_one_unflagged_predictor_keeps_the_whole_batch_in_fp32(allow):
    model, x, mask = demo_slices()
    allow("kl_grad")
    assert precision_for(["kl_grad"], "fp16") == ("fp16", [])
    assert precision_for(["kl_grad", "rec"], "fp16") == ("fp32", ["rec"])
    fp32 = compute_maps(model, x, ["kl_grad", "rec"], SMALL, mask=mask)
    alone = compute_maps(model, x, ["kl_grad"], SMALL.replace(precision="fp16"), mask=mask)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        mixed = compute_maps(model, x, ["kl_grad", "rec"], SMALL.replace(precision="fp16"),
                             mask=mask)
    assert [str(w.message) for w in seen] == [
        "precision fp16 not used: rec does not stay within 1e-3 of float32 in reduced "
        "precision (docs/benchmarks.md, GPU); computing in fp32"]
    assert np.array_equal(mixed["kl_grad"], fp32["kl_grad"])
    assert not np.array_equal(alone["kl_grad"], fp32["kl_grad"])  # really ran in fp16


def test_autocast_runs_only_the_network_reduced_and_hands_back_float32():
    model, x, _ = demo_slices()
    run = with_precision(model, "bf16")
    assert with_precision(model, "fp32") is model and isinstance(run, AutocastModel)
    with torch.no_grad():
        mu, logvar = run.encode(x.to(DEVICE))
        x_hat = run.decode(mu)
        mu32, _ = model.encode(x.to(DEVICE))
    assert mu.dtype == logvar.dtype == x_hat.dtype == torch.float32
    assert run.beta == model.beta and run.kl is model.kl  # the loss terms are the model's own
    assert 0 < float((mu - mu32).abs().max()) < 0.1 * float(mu32.abs().max())
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, fp16"):
        with_precision(model, "fp8")


def _rec_grad(run, x: torch.Tensor, factor: float) -> torch.Tensor:
    xs = x.to(DEVICE).detach().requires_grad_(True)
    with torch.enable_grad():
        mu, _ = run.encode(xs)
        loss = factor * run.pixel_rec(xs, run.decode(mu)).sum()
        return input_grad(run, loss, xs)


@pytest.mark.parametrize("factor", [1e-8, 30.0])
def test_fp16_loss_scale_rescues_tiny_gradients_and_backs_off_on_overflow(factor, monkeypatch):
    """1e-8: the fp16 backward underflows without the scale; 30: the scale overflows fp16
    (inf) and is retried smaller. Both end close to float32."""
    from napari_vae_anomaly.predictors import precision

    model, x, mask = demo_slices()
    m = mask.to(DEVICE)
    ref = _rec_grad(model, x, factor)
    span = float(ref[m].abs().max())
    calls = []
    grad = torch.autograd.grad
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: calls.append(1) or grad(*a, **k))
    scaled = _rec_grad(with_precision(model, "fp16"), x, factor)
    assert len(calls) == (1 if factor < 1 else 3)  # 30: 2**12 and 2**8 overflow, 2**4 does not
    assert scaled.dtype == torch.float32 and bool(torch.isfinite(scaled).all())
    err = float((scaled - ref)[m].abs().max()) / span
    assert err < 0.1  # fp16 at a normal scale: ~0.06 of the range (unsmoothed)
    if factor < 1:
        monkeypatch.setattr(precision, "FP16_SCALE", 1.0)
        plain = _rec_grad(with_precision(model, "fp16"), x, factor)
        plain_err = float((plain - ref)[m].abs().max()) / span
        assert plain_err > 3 * err, (plain_err, err)


def test_exact_float32_turns_tf32_off_on_cuda_only_and_restores_it():
    cudnn = torch.backends.cudnn
    before = cudnn.allow_tf32
    try:
        cudnn.allow_tf32 = True
        with exact_float32(torch.device("cpu")):
            assert cudnn.allow_tf32 is True
        with exact_float32(torch.device("cuda")):
            assert cudnn.allow_tf32 is False
        assert cudnn.allow_tf32 is True
    finally:
        cudnn.allow_tf32 = before


def test_the_precision_option_is_checked_and_round_trips():
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, fp16, got 'half'"):
        PredictorOptions(precision="half")
    o = PredictorOptions(precision="fp16")
    assert PredictorOptions.from_dict(o.to_dict()) == o
    with pytest.raises(ValueError, match="precision must be one of"):
        precision_for(["rec"], "fp64")
