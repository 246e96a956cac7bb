"""The registry dispatches: maps unchanged from the former per-name formulas, every gradient
predictor against finite differences, and a new predictor added by one table entry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _models import random_batch, tiny_vae, untrained_loaded
from napari_vae_anomaly.io import Geometry, Volume
from napari_vae_anomaly.predictors import registry, terms
from napari_vae_anomaly.predictors.batch import compute_maps
from napari_vae_anomaly.predictors.energy import energy_projection
from napari_vae_anomaly.predictors.gradients import frozen, input_gradients
from napari_vae_anomaly.predictors.reconstruction import forward_terms
from napari_vae_anomaly.predictors.registry import (
    GRADIENT_PREDICTORS,
    KL_GRADIENT,
    PREDICTORS,
    PROJECTION,
    REC_GRADIENT,
    RECONSTRUCTION,
    PredictorInfo,
    PredictorOptions,
    terms_needed,
)
from napari_vae_anomaly.predictors.smoothing import minmax, smooth2d
from napari_vae_anomaly.predictors.terms import SharedTerms, compute_terms

ALL = list(PREDICTORS)


def _former_maps(model, x, names, o, mask):
    """The maps as the per-name if-chains computed them before the table dispatched."""
    sm = lambda m: smooth2d(m, o.sigma, o.kernel)  # noqa: E731
    absmap = lambda g: g.abs().sum(dim=1, keepdim=True)  # noqa: E731
    out = {}
    with frozen(model):
        need_rec = any(n in ("rec_grad", "elbo_grad") for n in names)
        need_kl = any(n in ("kl_grad", "elbo_grad", "combi", "combi_add") for n in names)
        if need_rec or need_kl:
            t = input_gradients(model, x, o, need_rec=need_rec, need_kl=need_kl)
            rec = t.rec.sum(dim=1, keepdim=True)
            kl_grad = sm(absmap(t.g_kl)) if t.g_kl is not None else None
            full = {
                "rec": lambda: rec, "rec_grad": lambda: sm(absmap(t.g_rec)), "kl_grad": lambda: kl_grad,
                "elbo_grad": lambda: sm(absmap(t.g_rec + model.beta * t.g_kl)),
                "combi": lambda: rec * sm(minmax(absmap(t.g_kl))),
                "combi_add": lambda: minmax(kl_grad) + minmax(rec),
            }
            out.update({n: full[n]()[:, 0] for n in names if n in full})
        elif "rec" in names:
            with torch.no_grad():
                out["rec"] = forward_terms(model, x, o.n_latent_samples)[0].sum(dim=1)
        if "energy" in names:
            out["energy"] = energy_projection(model, x, o, mask=mask).map
    return {n: out[n].detach().to("cpu", torch.float32).numpy() for n in names}


@pytest.mark.parametrize("likelihood", ["gaussian", "laplace"])
@pytest.mark.parametrize(("names", "options"), [
    (ALL, PredictorOptions(energy_steps=2)),
    (ALL, PredictorOptions(sigma=0.0, energy_steps=1, energy_variant="x0_fxT")),
    (["combi_add", "rec", "elbo_grad"], PredictorOptions(smoothgrad_n=2, n_latent_samples=2, seed=3)),
    (["combi", "rec_grad"], PredictorOptions(sigma=1.5, kernel=5)),
    (["rec"], PredictorOptions()),
    (["energy", "rec"], PredictorOptions(energy_steps=2)),
])
def test_dispatched_maps_are_bit_identical_to_the_former_formulas(likelihood, names, options):
    model = tiny_vae(likelihood=likelihood)
    x = random_batch(n=4)
    mask = (x > -1.0).to(torch.float32)
    new = compute_maps(model, x, names, options, mask=mask)
    old = _former_maps(model, x, names, options, mask)
    assert list(new) == names
    for n in names:
        assert new[n].dtype == np.float32 and new[n].shape == (4, 16, 16)
        np.testing.assert_array_equal(new[n], old[n], err_msg=n)


def _fd_gradients(model, x, h=1e-6):
    """Central finite differences of Σ L_rec and Σ KL w.r.t. every pixel (images are independent,
    so one perturbed pixel position is evaluated for the whole batch at once)."""
    n, c, s, _ = x.shape
    g_rec, g_kl = torch.zeros_like(x), torch.zeros_like(x)
    with torch.no_grad():
        for ch in range(c):
            for i in range(s):
                for j in range(s):
                    xp, xm = x.clone(), x.clone()
                    xp[:, ch, i, j] += h
                    xm[:, ch, i, j] -= h
                    rp, kp = forward_terms(model, torch.cat([xp, xm]))
                    rp = rp.flatten(1).sum(dim=1)
                    g_rec[:, ch, i, j] = (rp[:n] - rp[n:]) / (2 * h)
                    g_kl[:, ch, i, j] = (kp[:n] - kp[n:]) / (2 * h)
    return g_rec, g_kl


def test_terms_are_exact_input_gradients():
    model = tiny_vae(size=8, beta=0.37, dtype=torch.float64)
    x = random_batch(n=2, size=8, dtype=torch.float64)
    with frozen(model):
        t = compute_terms(model, x, (REC_GRADIENT, KL_GRADIENT), PredictorOptions(sigma=0.0))
    fd_rec, fd_kl = _fd_gradients(model, x)
    torch.testing.assert_close(t.g_rec, fd_rec, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(t.g_kl, fd_kl, rtol=1e-5, atol=1e-8)
    assert t.g_kl.abs().max() > 0 and t.projection is None


@pytest.mark.parametrize("name", [n for n, p in PREDICTORS.items() if p.needs_grad and PROJECTION not in p.needs])
def test_every_gradient_predictor_matches_finite_differences(name):
    """Each registered map built from gradient terms, unsmoothed and in float64, equals the same
    map function applied to finite-difference gradients, so a wrong gradient term shows; the
    formulas themselves are pinned by the bit-identical test and the loss-gradient test."""
    model = tiny_vae(size=8, beta=0.37, dtype=torch.float64)
    x = random_batch(n=2, size=8, dtype=torch.float64)
    raw = PredictorOptions(sigma=0.0)
    with frozen(model):
        auto = compute_terms(model, x, terms_needed([name]), raw)
    fd_rec, fd_kl = _fd_gradients(model, x)
    fd = SharedTerms(model, x, raw, rec=auto.rec, g_rec=fd_rec, g_kl=fd_kl)
    got, want = auto.map(name), fd.map(name)
    assert got.shape == (2, 8, 8) and got.abs().max() > 0
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)
    assert name in GRADIENT_PREDICTORS


def test_elbo_gradient_map_is_the_loss_gradient():
    model = tiny_vae(size=8, beta=0.37, dtype=torch.float64)
    x = random_batch(n=2, size=8, dtype=torch.float64)
    xr = x.clone().requires_grad_(True)
    (g_loss,) = torch.autograd.grad(model.loss_terms(xr, sample=False)["loss"].sum(), xr)
    maps = compute_maps(model, x, ["elbo_grad"], PredictorOptions(sigma=0.0))
    np.testing.assert_allclose(maps["elbo_grad"], g_loss.abs()[:, 0].numpy().astype(np.float32), rtol=1e-5)


def test_terms_needed_follows_the_table():
    assert terms_needed(["rec"]) == (RECONSTRUCTION,)
    assert terms_needed(["combi", "rec_grad"]) == (RECONSTRUCTION, REC_GRADIENT, KL_GRADIENT)
    assert terms_needed(["energy"]) == (PROJECTION,)
    assert registry.GRADIENT_PREDICTORS == ("rec_grad", "kl_grad", "elbo_grad", "combi", "combi_add")
    assert PREDICTORS["elbo_grad"].module == "gradients" and PREDICTORS["energy"].module == "energy"
    with pytest.raises(ValueError, match="unknown term 'gradient'"):
        PredictorInfo("bad", "f", ("gradient",), "d", "gradients:kl_grad_map")


def _rec_doubled(t: SharedTerms) -> torch.Tensor:
    """A toy predictor: twice the per-pixel reconstruction error (linear, so it commutes with
    the pipeline's resampling back to the scan's grid)."""
    return 2 * t.rec.sum(dim=1)


@pytest.fixture
def toy_predictor(monkeypatch):
    """A predictor added the documented way: its function plus one registry entry."""
    info = PredictorInfo("rec2", "2 (x - x̂)²", (RECONSTRUCTION,), "Toy: doubled rec.", _rec_doubled)
    monkeypatch.setitem(registry.PREDICTORS, "rec2", info)

    def no_backward(*args, **kwargs):
        raise AssertionError("a reconstruction-only predictor ran a backward pass")

    monkeypatch.setattr(terms, "input_gradients", no_backward)
    return info


def test_added_predictor_runs_through_compute_maps(toy_predictor):
    model = tiny_vae()
    x = random_batch()
    maps = compute_maps(model, x, ["rec2", "rec"], PredictorOptions())
    assert set(maps) == {"rec2", "rec"} and maps["rec2"].dtype == np.float32
    np.testing.assert_allclose(maps["rec2"], 2 * maps["rec"], rtol=1e-6)
    assert toy_predictor.module == "test_registry" and not toy_predictor.needs_grad


def test_added_predictor_runs_through_predict_volume(toy_predictor):
    from napari_vae_anomaly.predictors.pipeline import predict_volume

    rng = np.random.default_rng(0)
    data = np.zeros((6, 20, 20), np.float32)
    data[:, 3:17, 3:17] = 500 + 50 * rng.standard_normal((6, 14, 14))
    vol = Volume(data, Geometry.identity(3))
    opts = PredictorOptions(median=0, chunk=4)
    res = predict_volume(vol, [untrained_loaded()], ["rec2", "rec"], opts)
    toy, rec = res.maps["rec2"], res.maps["rec"]
    assert toy.shape == vol.shape and np.isfinite(toy).all()
    assert (toy[~res.foreground] == 0).all() and (toy[res.foreground] > 0).any()
    np.testing.assert_allclose(toy[res.foreground], 2 * rec[res.foreground], rtol=1e-5)


def test_the_documented_example_is_all_a_predictor_needs(tmp_path, monkeypatch):
    """docs/adding_a_predictor.md's module and registry entry, as written there, make a working
    predictor: the module goes on the ``predictors`` package path, the entry into the table."""
    import re
    import sys
    import textwrap
    from pathlib import Path

    import napari_vae_anomaly.predictors as package
    from napari_vae_anomaly.predictors.pipeline import predict_volume

    doc = (Path(__file__).resolve().parents[1] / "docs" / "adding_a_predictor.md").read_text("utf-8")
    module_code, entry_code = (textwrap.dedent(b) for b in re.findall(r"```python\n(.*?)```", doc, re.S))
    (tmp_path / "rec_elbo.py").write_text(module_code, encoding="utf-8")
    monkeypatch.setattr(package, "__path__", [*package.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, "napari_vae_anomaly.predictors.rec_elbo", raising=False)
    info = eval(entry_code.strip().rstrip(","), vars(registry))  # the entry exactly as documented
    assert isinstance(info, PredictorInfo) and info.module == "rec_elbo"
    monkeypatch.setitem(registry.PREDICTORS, info.name, info)

    rng = np.random.default_rng(0)
    data = np.zeros((5, 18, 18), np.float32)
    data[:, 3:15, 3:15] = 500 + 50 * rng.standard_normal((5, 12, 12))
    vol = Volume(data, Geometry.identity(3))
    try:
        res = predict_volume(vol, [untrained_loaded()], ["rec_elbo"], PredictorOptions(median=0, chunk=4))
    finally:  # the documented module is imported from tmp_path: leave no trace of it
        sys.modules.pop("napari_vae_anomaly.predictors.rec_elbo", None)
        package.__dict__.pop("rec_elbo", None)
    m = res.maps["rec_elbo"]
    assert m.shape == vol.shape and np.isfinite(m).all() and (m >= 0).all()
    assert (m[~res.foreground] == 0).all() and (m[res.foreground] > 0).any()
