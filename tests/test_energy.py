"""Energy-based projection: energy decreases, gradients flow through the network, lesion
pixels move more than normal ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _models import random_batch, tiny_vae
from napari_vae_anomaly.predictors.batch import compute_maps
from napari_vae_anomaly.predictors.energy import _energy, energy_projection
from napari_vae_anomaly.predictors.registry import PredictorOptions


def test_energy_decreases_on_an_untrained_model():
    model = tiny_vae()
    x = random_batch(n=4)
    res = energy_projection(model, x, PredictorOptions(energy_steps=15, energy_alpha=0.05))
    assert res.trace.shape == (16, 4)
    assert torch.all(res.trace[-1] < res.trace[0])
    assert res.map.shape == (4, 16, 16) and torch.all(res.map >= 0)
    # x_T stays within each slice's input range
    assert res.x_T.min() >= x.min() - 1e-6 and res.x_T.max() <= x.max() + 1e-6


def test_zero_steps_is_identity_and_variants_differ():
    model = tiny_vae()
    x = random_batch()
    r0 = energy_projection(model, x, PredictorOptions(energy_steps=0))
    assert torch.all(r0.map == 0)
    a = energy_projection(model, x, PredictorOptions(energy_steps=3, energy_variant="x0_xT"))
    b = energy_projection(model, x, PredictorOptions(energy_steps=3, energy_variant="x0_fxT"))
    torch.testing.assert_close(b.map, (x - b.f_x_T).abs()[:, 0])
    assert not torch.allclose(a.map, b.map)


def test_gradient_flows_through_decoder_and_encoder():
    """∇E must include the path through f(x): compare with a detached-decoder gradient."""
    model = tiny_vae(dtype=torch.float64)
    x = random_batch(dtype=torch.float64)
    xt = (x + 0.1).requires_grad_(True)
    e, _ = _energy(model, xt, x, 0.1)
    (g,) = torch.autograd.grad(e.sum(), xt)
    # finite difference of the energy at one pixel
    h = 1e-6
    xp, xm = xt.detach().clone(), xt.detach().clone()
    xp[1, 0, 4, 7] += h
    xm[1, 0, 4, 7] -= h
    with torch.no_grad():
        fd = (_energy(model, xp, x, 0.1)[0].sum() - _energy(model, xm, x, 0.1)[0].sum()) / (2 * h)
    assert g[1, 0, 4, 7].item() == pytest.approx(fd.item(), rel=1e-5)


def test_mask_keeps_background_fixed():
    model = tiny_vae()
    x = random_batch(n=2)
    mask = torch.zeros_like(x, dtype=torch.bool)
    mask[:, :, 4:12, 4:12] = True
    res = energy_projection(model, x, PredictorOptions(energy_steps=5, energy_alpha=0.05), mask=mask)
    assert torch.all(res.map[~mask[:, 0]] == 0)
    assert res.map[mask[:, 0]].max() > 0
    maps = compute_maps(model, x, ["energy"], PredictorOptions(energy_steps=5, energy_alpha=0.05), mask=mask)
    np.testing.assert_allclose(maps["energy"], res.map.numpy(), atol=1e-6)


def test_projection_on_phantom_lowers_energy_and_moves_lesions_most():
    """A briefly trained model: lesion pixels move more than normal tissue."""
    from _models import phantom_setup
    from napari_vae_anomaly.preprocessing import preprocess_volume, slice_masks

    loaded, test = phantom_setup()
    batch = preprocess_volume(test.image, loaded.preprocess, training=False)
    lesion = slice_masks(test.lesion_mask > 0, batch)[:, 0]
    keep = lesion.reshape(len(lesion), -1).any(axis=1)  # slices holding a lesion
    x = torch.as_tensor(batch.images[keep])
    m = torch.as_tensor(batch.masks[keep])
    res = energy_projection(loaded.model, x, PredictorOptions(energy_steps=20), mask=m)
    trace = res.trace.numpy()
    assert np.all(trace[-1] < trace[0])  # every slice's energy went down
    assert np.mean(np.diff(trace.sum(axis=1)) < 0) >= 0.9  # and nearly monotonically
    moved = res.map.numpy()
    les, tissue = lesion[keep], batch.masks[keep, 0] & ~lesion[keep]
    print("moved: lesion", moved[les].mean(), "tissue", moved[tissue].mean())
    assert moved[les].mean() > 2.0 * moved[tissue].mean()


def _phantom_slices():
    from _models import phantom_setup
    from napari_vae_anomaly.preprocessing import preprocess_volume, slice_masks

    loaded, test = phantom_setup()
    batch = preprocess_volume(test.image, loaded.preprocess, training=False)
    lesion = slice_masks(test.lesion_mask > 0, batch)[:, 0]
    tissue = batch.masks.reshape(len(lesion), -1).any(axis=1)  # slices with foreground
    return (loaded.model, torch.as_tensor(batch.images[tissue]), torch.as_tensor(batch.masks[tissue]),
            lesion[tissue])


def _auroc(scores: np.ndarray, truth: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(truth, scores))


@pytest.mark.parametrize("alpha", [0.2, 2.0])
def test_more_steps_do_not_collapse_the_map(alpha):
    """Regression: the plain update overshot (2α r² > 1) and oscillated with period 2, so the
    map was good after 3 steps and near chance after 20. With the residual bound and the
    backtracking the energy never rises and 20 / 50 steps are about as good as 3."""
    model, x, m, lesion = _phantom_slices()
    fg = m[:, 0].numpy()
    auroc = {}
    for steps in (3, 20, 50):
        res = energy_projection(model, x, PredictorOptions(energy_steps=steps, energy_alpha=alpha), mask=m)
        trace = res.trace.numpy()
        assert np.all(np.diff(trace, axis=0) <= 0)  # non-increasing for every slice
        assert np.all(trace[-1] < trace[0])
        moved = res.map.numpy()
        assert moved[lesion].mean() > 2.0 * moved[fg & ~lesion].mean()
        auroc[steps] = _auroc(moved[fg], lesion[fg])
    print(alpha, auroc)
    assert auroc[3] > 0.85
    assert auroc[20] >= auroc[3] - 0.02 and auroc[50] >= auroc[3] - 0.03


def test_plain_update_oscillates_without_the_safeguards():
    """The failure the safeguards fix, reproduced: α 0.5 without them raises the energy on
    alternate steps and the 20-step map loses most of its AUROC."""
    model, x, m, lesion = _phantom_slices()
    fg = m[:, 0].numpy()
    o = PredictorOptions(energy_alpha=0.5)
    plain = {t: energy_projection(model, x, o.replace(energy_steps=t), mask=m, backtrack=False, bound=False)
             for t in (3, 20)}
    assert np.any(np.diff(plain[20].trace.numpy(), axis=0) > 0)
    a3, a20 = (_auroc(plain[t].map.numpy()[fg], lesion[fg]) for t in (3, 20))
    assert a3 > 0.85 and a20 < a3 - 0.15
    fixed = energy_projection(model, x, o.replace(energy_steps=20), mask=m)
    assert _auroc(fixed.map.numpy()[fg], lesion[fg]) > a3 - 0.03
    assert torch.all(fixed.alpha <= 0.5) and torch.all(fixed.alpha > 0)


def test_early_stop_ends_slices_whose_energy_no_longer_falls():
    from napari_vae_anomaly.predictors.energy import energy_projection

    model, x = tiny_vae(), random_batch(6)
    mask = (x > -0.5).float()
    o = PredictorOptions(energy_steps=15, energy_alpha=0.5)
    full = energy_projection(model, x, o, mask)
    assert full.steps.tolist() == [15] * 6  # off by default: every slice, every step
    early = energy_projection(model, x, o.replace(energy_tol=1e-3), mask)
    assert early.steps.max() < 15 and early.steps.min() >= 1
    t = int(early.steps.max())
    assert early.trace.shape == (t + 1, 6)  # the run ends when every slice has stopped
    # a slice follows the full run until it stops, then keeps its energy
    for i, n in enumerate(early.steps.tolist()):
        assert torch.allclose(early.trace[: n + 1, i], full.trace[: n + 1, i], rtol=1e-4)
        assert torch.allclose(early.trace[n:, i], full.trace[n, i].expand(t + 1 - n))
        # it stopped because its last step lowered the energy by less than 0.1 %
        fell = full.trace[n - 1, i] - full.trace[n, i]
        assert 0 <= fell < 1e-3 * full.trace[n, i].abs() * 1.01
