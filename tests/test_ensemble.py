"""Per-volume normalization and ensembles of predictors and models; OOM-safe chunking."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_vae_anomaly.predictors.batch import is_out_of_memory, run_chunked
from napari_vae_anomaly.predictors.ensemble import (
    ensemble_maps,
    ensemble_values,
    normalize_map,
    normalize_values,
)


def test_zscore_and_rank_normalization_over_foreground(rng):
    score = rng.gamma(2.0, 3.0, size=(6, 10, 10)).astype(np.float32)
    fg = np.zeros(score.shape, bool)
    fg[1:5, 2:8, 2:8] = True
    z = normalize_map(score * 7 + 100, fg, "zscore")
    assert z[fg].mean() == pytest.approx(0, abs=1e-5) and z[fg].std() == pytest.approx(1, abs=1e-4)
    assert np.all(z[~fg] == 0) and z.dtype == np.float32
    r = normalize_map(score, fg, "rank")
    assert 0 < r[fg].min() < r[fg].max() < 1
    # rank is invariant to monotone transforms, z-score to affine ones
    np.testing.assert_allclose(normalize_map(np.exp(score / 10), fg, "rank"), r, atol=1e-6)
    np.testing.assert_allclose(normalize_map(score * 7 + 100, fg, "zscore"), normalize_map(score, fg, "zscore"), atol=1e-4)
    with pytest.raises(ValueError, match="normalization"):
        normalize_values(score.ravel(), "minmax-ish")


def test_ensemble_averages_normalized_members(rng):
    a = rng.normal(size=(4, 8, 8)).astype(np.float32)
    b = 1000 * a + 5  # same ranking, other scale: its normalized map equals a's
    fg = np.ones(a.shape, bool)
    e = ensemble_maps([a, b], fg)
    np.testing.assert_allclose(e, normalize_map(a, fg), atol=1e-4)
    c = rng.normal(size=a.shape).astype(np.float32)
    e2 = ensemble_maps([a, c], fg, "rank")
    np.testing.assert_allclose(e2, (normalize_map(a, fg, "rank") + normalize_map(c, fg, "rank")) / 2, atol=1e-6)
    v = ensemble_values([a[fg], c[fg]], "rank")
    np.testing.assert_allclose(v, e2[fg], atol=1e-6)


def test_run_chunked_halves_on_oom_and_keeps_order():
    calls = []

    def fn(sl):
        calls.append((sl.start, sl.stop))
        if sl.stop - sl.start > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return list(range(sl.start, sl.stop))

    progress = []
    parts = run_chunked(fn, 10, 16, on_chunk=lambda sl, r: progress.append(sl.stop))
    assert sum(parts, []) == list(range(10))
    assert calls[:3] == [(0, 10), (0, 8), (0, 4)]  # 16 -> 8 -> 4 -> 2 then stays at 2
    assert all(b - a <= 2 for a, b in calls[4:])
    assert progress[-1] == 10


def test_run_chunked_gives_up_at_one_and_passes_other_errors():
    def always_oom(sl):
        raise RuntimeError("MPS backend out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        run_chunked(always_oom, 4, 4)

    def bad(sl):
        raise ValueError("not memory")

    with pytest.raises(ValueError):
        run_chunked(bad, 4, 4)
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("x"))
    assert not is_out_of_memory(ValueError("out of memory"))


def test_run_chunked_stops_when_asked():
    seen = []
    parts = run_chunked(lambda sl: seen.append(sl) or 1, 10, 2, should_stop=lambda: len(seen) >= 2)
    assert len(parts) == 2


@pytest.mark.parametrize("method", ["zscore", "rank", "reference"])
def test_running_sum_equals_the_mean_of_the_stacked_normalized_maps(method):
    """EnsembleSum (float64 over the foreground, one map at a time) gives the bytes of the
    float64 mean of every normalized map held at once."""
    from napari_vae_anomaly.predictors.ensemble import EnsembleSum

    rng = np.random.default_rng(4)
    fg = rng.random((6, 9, 7)) > 0.4
    maps = [rng.gamma(2.0, 1.0 + i, fg.shape).astype(np.float32) for i in range(5)]
    stats = [(1.0 + i, 0.5 + i) for i in range(5)] if method == "reference" else [None] * 5
    old = np.zeros(fg.shape, np.float64)
    for m, st in zip(maps, stats, strict=True):
        old += normalize_map(m, fg, method, st)
    expected = (old / len(maps)).astype(np.float32)
    acc = EnsembleSum(fg, method)
    for m, st in zip(maps, stats, strict=True):
        acc.add(m, st)
    assert acc.count == 5 and acc.sum.shape == (int(fg.sum()),)
    got = acc.take_mean()  # divided in place and released
    assert got.dtype == np.float32 and acc.sum is None
    assert got.tobytes() == expected.tobytes()
    assert not got[~fg].any() and got[fg].std() > 0
    assert ensemble_maps(maps, fg, method, stats).tobytes() == expected.tobytes()
    with pytest.raises(ValueError, match="mean was taken"):
        acc.add(maps[0])
