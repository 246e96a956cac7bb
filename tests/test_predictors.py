"""Gradient predictors against finite differences, and the registry's contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _models import random_batch, tiny_vae
from napari_vae_anomaly.predictors.batch import compute_maps
from napari_vae_anomaly.predictors.gradients import frozen, input_gradients
from napari_vae_anomaly.predictors.reconstruction import forward_terms
from napari_vae_anomaly.predictors.registry import (
    GRADIENT_PREDICTORS,
    PREDICTORS,
    PredictorOptions,
    check_names,
)
from napari_vae_anomaly.predictors.smoothing import minmax, smooth2d

RAW = PredictorOptions(sigma=0.0)
PIXELS = [(0, 3, 5), (1, 8, 8), (2, 15, 0), (0, 10, 12)]


def _fd(fn, x, pixels, h=1e-6):
    """Central differences of a scalar function of x at a few pixels."""
    out = []
    for n, i, j in pixels:
        xp, xm = x.clone(), x.clone()
        xp[n, 0, i, j] += h
        xm[n, 0, i, j] -= h
        out.append((fn(xp) - fn(xm)).item() / (2 * h))
    return np.array(out)


@pytest.mark.parametrize("likelihood", ["gaussian", "laplace"])
def test_gradients_match_finite_differences(likelihood):
    model = tiny_vae(likelihood=likelihood, dtype=torch.float64)
    x = random_batch(dtype=torch.float64)
    terms = input_gradients(model, x, RAW)

    def rec_sum(v):
        return forward_terms(model, v)[0].sum()

    def kl_sum(v):
        return forward_terms(model, v)[1].sum()

    with torch.no_grad():
        fd_rec = _fd(rec_sum, x, PIXELS)
        fd_kl = _fd(kl_sum, x, PIXELS)
    an_rec = np.array([terms.g_rec[n, 0, i, j].item() for n, i, j in PIXELS])
    an_kl = np.array([terms.g_kl[n, 0, i, j].item() for n, i, j in PIXELS])
    np.testing.assert_allclose(an_rec, fd_rec, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(an_kl, fd_kl, rtol=1e-5, atol=1e-7)
    assert np.abs(an_kl).max() > 0  # not trivially zero

    maps = compute_maps(model, x, ["rec_grad", "kl_grad"], RAW)
    for (n, i, j), r, k in zip(PIXELS, fd_rec, fd_kl, strict=True):
        assert maps["rec_grad"][n, i, j] == pytest.approx(abs(r), rel=1e-4, abs=1e-6)
        assert maps["kl_grad"][n, i, j] == pytest.approx(abs(k), rel=1e-4, abs=1e-6)


def test_elbo_gradient_is_rec_plus_beta_kl():
    model = tiny_vae(beta=0.37, dtype=torch.float64)
    x = random_batch(dtype=torch.float64)
    terms = input_gradients(model, x, RAW)
    xr = x.clone().requires_grad_(True)
    (g_loss,) = torch.autograd.grad(model.loss_terms(xr, sample=False)["loss"].sum(), xr)
    torch.testing.assert_close(terms.g_rec + 0.37 * terms.g_kl, g_loss)
    maps = compute_maps(model, x, ["elbo_grad"], RAW)
    np.testing.assert_allclose(maps["elbo_grad"], g_loss.abs()[:, 0].numpy(), rtol=1e-5)


def test_per_image_gradients_independent_of_batch():
    model = tiny_vae()
    x = random_batch(n=4)
    full = compute_maps(model, x, list(GRADIENT_PREDICTORS), PredictorOptions())
    single = compute_maps(model, x[2:3], list(GRADIENT_PREDICTORS), PredictorOptions())
    for name in GRADIENT_PREDICTORS:
        np.testing.assert_allclose(full[name][2], single[name][0], rtol=1e-4, atol=1e-6)


def test_combi_definitions_and_shapes():
    model = tiny_vae()
    x = random_batch()
    o = PredictorOptions(sigma=1.5, kernel=5)
    maps = compute_maps(model, x, ["rec", "kl_grad", "combi", "combi_add"], o)
    assert all(m.shape == (3, 16, 16) and m.dtype == np.float32 for m in maps.values())
    with torch.no_grad():
        rec = torch.as_tensor(maps["rec"])
        x_hat, _, _ = model(x)
        torch.testing.assert_close(rec, ((x - x_hat) ** 2)[:, 0])
    terms = input_gradients(model, x, o)
    expect = rec * smooth2d(minmax(terms.g_kl.abs()), 1.5, 5)[:, 0]
    np.testing.assert_allclose(maps["combi"], expect.numpy(), rtol=1e-4, atol=1e-6)
    kg = torch.as_tensor(maps["kl_grad"])
    expect_add = minmax(kg) + minmax(rec)
    np.testing.assert_allclose(maps["combi_add"], expect_add.numpy(), rtol=1e-4, atol=1e-6)
    assert maps["combi_add"].max() <= 2.0 + 1e-6 and maps["combi_add"].min() >= 0


def test_smoothing_is_normalized_gaussian():
    m = torch.zeros(1, 1, 15, 15)
    m[0, 0, 7, 7] = 1.0
    s = smooth2d(m, 3.0, 7)
    assert s.sum().item() == pytest.approx(1.0, rel=1e-5)
    assert s[0, 0, 7, 7] == s.max()
    torch.testing.assert_close(s[0, 0], s[0, 0].T)  # isotropic
    assert smooth2d(m, 0.0, 7) is m


def test_parameters_frozen_and_restored():
    model = tiny_vae()
    model.train()
    compute_maps(model, random_batch(), ["elbo_grad", "energy"], PredictorOptions(energy_steps=2))
    assert model.training
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    with frozen(model):
        assert not any(p.requires_grad for p in model.parameters())


def test_smoothgrad_and_latent_samples_run_deterministically():
    model = tiny_vae()
    x = random_batch()
    o = PredictorOptions(smoothgrad_n=3, n_latent_samples=2, seed=5)
    a = compute_maps(model, x, ["rec", "kl_grad", "elbo_grad"], o)
    b = compute_maps(model, x, ["rec", "kl_grad", "elbo_grad"], o)
    plain = compute_maps(model, x, ["kl_grad"], PredictorOptions())
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.allclose(a["kl_grad"], plain["kl_grad"])


def test_registry_names_formulas_and_validation():
    assert list(PREDICTORS) == ["rec", "rec_grad", "kl_grad", "elbo_grad", "combi", "combi_add", "energy"]
    for info in PREDICTORS.values():
        assert info.formula and "\n" not in info.formula
    assert not PREDICTORS["rec"].needs_grad and PREDICTORS["energy"].needs_grad
    assert check_names(["kl_grad", "rec", "kl_grad"]) == ["kl_grad", "rec"]
    with pytest.raises(ValueError, match="unknown predictor 'grad'"):
        check_names(["grad"])
    with pytest.raises(ValueError, match="energy_variant"):
        PredictorOptions(energy_variant="bad")
