"""Metrics: masking and pooling around scikit-learn, Dice and oracle Dice, slice detection."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from napari_vae_anomaly.errors import AnomalyError
from napari_vae_anomaly.metrics import (
    DatasetEvaluator,
    MetricsResult,
    SliceDetection,
    VoxelPool,
    dice,
    dice_at_threshold,
    evaluate_volume,
    oracle_best_dice,
    roc_pr_curves,
    slice_auroc,
    slice_labels,
    slice_scores,
    voxel_auprc,
    voxel_auroc,
)


def _random_case(rng, shape=(6, 12, 12), p=0.1):
    truth = (rng.random(shape) < p).astype(np.uint8) * rng.integers(1, 4, shape).astype(np.uint8)
    scores = (rng.normal(size=shape) + 1.2 * (truth > 0)).astype(np.float32)
    mask = rng.random(shape) < 0.8
    return scores, truth, mask


def _pairwise_auroc(s, y):
    """Mann-Whitney statistic by brute force: an implementation independent of sklearn."""
    pos, neg = s[y], s[~y]
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return (greater + 0.5 * ties) / (pos.size * neg.size)


# ------------------------------------------------------------------ voxel AUROC / AUPRC
def test_auroc_auprc_hand_computed_with_mask():
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.9])
    truth = np.array([0, 0, 1, 1, 0])
    mask = np.array([True, True, True, True, False])
    # inside the mask: the textbook example, AUROC 3/4 and AP = (1/2)(1) + (1/2)(2/3)
    assert voxel_auroc(scores, truth, mask) == pytest.approx(0.75)
    assert voxel_auprc(scores, truth, mask) == pytest.approx(0.5 + 1 / 3)
    # the masked-out confident negative counts without the mask: 3 of 6 pairs ordered
    assert voxel_auroc(scores, truth) == pytest.approx(0.5)


def test_voxel_metrics_match_sklearn_and_bruteforce_on_random_data(rng):
    scores, truth, mask = _random_case(rng)
    scores[0, :3, :3] = 0.0  # ties
    s, y = scores[mask].astype(np.float64), truth[mask] > 0
    assert voxel_auroc(scores, truth, mask) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert voxel_auroc(scores, truth, mask) == pytest.approx(_pairwise_auroc(s, y), abs=1e-12)
    assert voxel_auprc(scores, truth, mask) == pytest.approx(
        average_precision_score(y, s), abs=1e-12
    )
    assert 0.7 < voxel_auroc(scores, truth, mask) < 0.95  # the signal is there, not perfect


def test_labels_above_one_are_anomalous():
    scores = np.array([0.2, 0.9, 0.8])
    assert voxel_auroc(scores, np.array([0, 4, 2])) == 1.0


def test_shape_mismatch_and_nonfinite_raise():
    with pytest.raises(ValueError, match="shape"):
        voxel_auroc(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="NaN"):
        voxel_auroc(np.array([np.nan, 1.0]), np.array([0, 1]))
    # a NaN outside the foreground is fine
    assert voxel_auroc(np.array([np.nan, 0.0, 1.0]), np.array([0, 0, 1]), [0, 1, 1]) == 1.0


def test_pool_equals_concatenation_and_differs_from_mean(rng):
    cases = [_random_case(rng, shape=(4, 10, 10)) for _ in range(3)]
    pool = VoxelPool()
    for s, t, m in cases:
        pool.add(s, t, m)
    s_all = np.concatenate([s[m] for s, _, m in cases]).astype(np.float64)
    y_all = np.concatenate([t[m] > 0 for _, t, m in cases])
    assert not pool.subsampled
    assert pool.n_voxels == s_all.size and pool.n_positive == int(y_all.sum())
    assert pool.auroc() == pytest.approx(roc_auc_score(y_all, s_all), abs=1e-12)
    assert pool.auprc() == pytest.approx(average_precision_score(y_all, s_all), abs=1e-12)


def test_pooling_is_not_averaging():
    # each volume alone ranks perfectly, but volume 2's normal voxels outscore volume 1's lesion
    pool = VoxelPool()
    pool.add(np.array([0.0, 1.0]), np.array([0, 1]))
    pool.add(np.array([2.0, 3.0]), np.array([0, 1]))
    assert pool.auroc() == pytest.approx(0.75)  # 3 of 4 lesion/normal pairs ordered


def test_subsampled_pool_is_seeded_unbiased_and_keeps_lesions():
    rng = np.random.default_rng(7)
    cases = [_random_case(rng, shape=(10, 40, 40), p=0.05) for _ in range(4)]
    exact, a, b = VoxelPool(), VoxelPool(max_normal=8000, seed=3), VoxelPool(8000, seed=3)
    for s, t, m in cases:
        for pool in (exact, a, b):
            pool.add(s, t, m)
    assert a.subsampled and 0 < a.rate < 0.5
    s, y, w = a.arrays()
    assert int((~y).sum()) <= 8000
    assert int(y.sum()) == exact.n_positive  # every lesion voxel kept
    assert np.allclose(w[~y], 1 / a.rate) and np.all(w[y] == 1)
    assert a.auroc() == b.auroc()  # same seed, same answer
    assert a.auroc() == pytest.approx(exact.auroc(), abs=0.01)
    assert a.auprc() == pytest.approx(exact.auprc(), abs=0.02)
    estimate = oracle_best_dice(s, y, weights=w).dice
    assert estimate == pytest.approx(oracle_best_dice(*exact.arrays()[:2]).dice, abs=0.02)


def test_roc_pr_curves():
    curves = roc_pr_curves(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    assert curves["fpr"][0] == 0 and curves["tpr"][-1] == 1
    assert curves["recall"][-1] == 0 and curves["precision"][-1] == 1
    assert roc_pr_curves(np.ones(3), np.zeros(3)) is None


# ------------------------------------------------------------------ Dice
def test_dice_hand_computed():
    assert dice(np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0])) == pytest.approx(0.5)
    assert dice(np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0]), [1, 0, 0, 1]) == 1.0
    assert dice(np.array([1, 1, 1, 0]), np.array([1, 1, 1, 1])) == pytest.approx(6 / 7)
    assert dice(np.array([1, 0]), np.array([0, 0])) == 0.0
    assert math.isnan(dice(np.zeros(4), np.zeros(4)))


def test_dice_at_threshold_is_strictly_greater():
    scores = np.array([0.2, 0.5, 0.5, 0.9])
    truth = np.array([0, 1, 1, 1])
    assert dice_at_threshold(scores, truth, 0.5) == pytest.approx(2 * 1 / (1 + 3))
    assert dice_at_threshold(scores, truth, 0.49) == pytest.approx(1.0)
    assert dice_at_threshold(scores, truth, 0.0) == pytest.approx(2 * 3 / (4 + 3))


def test_oracle_dice_hand_computed():
    d, t = oracle_best_dice(np.array([0.9, 0.8, 0.7, 0.1]), np.array([1, 1, 0, 1]))
    assert d == pytest.approx(6 / 7) and t < 0.1  # everything marked beats stopping at 0.8
    d, t = oracle_best_dice(np.array([0.5, 0.5, 0.2]), np.array([1, 0, 0]))
    assert d == pytest.approx(2 / 3) and t == pytest.approx(0.35)  # ties move together


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_oracle_dice_bounds_every_fixed_threshold(seed):
    rng = np.random.default_rng(seed)
    scores, truth, mask = _random_case(rng, shape=(5, 9, 9), p=0.2)
    scores = np.round(scores, 1)  # many ties
    best, thr = oracle_best_dice(scores, truth, mask)
    grid = np.linspace(scores.min() - 1, scores.max() + 1, 57)
    fixed = [dice_at_threshold(scores, truth, t, mask) for t in grid]
    assert all(best >= f - 1e-12 for f in fixed if not math.isnan(f))
    # a grid holding every distinct value (and one below all) reaches the oracle exactly
    inside = scores[mask]
    full = np.append(np.unique(inside), inside.min() - 1)
    exhaustive = max(dice_at_threshold(scores, truth, t, mask) for t in full)
    assert best == pytest.approx(exhaustive, abs=1e-12)
    # the returned threshold reproduces it, with > and with >=
    assert dice_at_threshold(scores, truth, thr, mask) == pytest.approx(best, abs=1e-12)
    assert dice(scores >= thr, truth, mask) == pytest.approx(best, abs=1e-12)


def test_oracle_threshold_survives_float32():
    scores = np.array([1.0, np.nextafter(np.float32(1.0), np.float32(0))], dtype=np.float32)
    truth = np.array([1, 0])
    d, t = oracle_best_dice(scores, truth)
    assert d == 1.0
    assert dice(scores > np.float32(t), truth) == 1.0


def test_weighted_oracle_equals_duplicated_voxels():
    s = np.array([0.9, 0.6, 0.4, 0.3, 0.1])
    y = np.array([1, 0, 1, 0, 1])
    w = np.array([1.0, 3.0, 1.0, 1.0, 2.0])
    dup_s, dup_y = np.repeat(s, w.astype(int)), np.repeat(y, w.astype(int))
    assert oracle_best_dice(s, y, weights=w) == pytest.approx(oracle_best_dice(dup_s, dup_y))


# ------------------------------------------------------------------ slice detection
def _slice_volume():
    """6 slices along axis 0: lesions of 20 (slice 1), 5 (slice 2: excluded), 16 (slice 4)."""
    truth = np.zeros((6, 8, 8), np.uint8)
    truth[1, :4, :5] = 1
    truth[2, 0, :5] = 1
    truth[4, 4:, 4:] = 2
    scores = np.full(truth.shape, 0.1, np.float32)
    scores[truth > 0] = 1.0
    scores[3, 0, 0] = 5.0  # one hot voxel in a normal slice: fools max, not mean
    return scores, truth


def test_slice_labels_and_scores():
    scores, truth = _slice_volume()
    assert slice_labels(truth).tolist() == [0, 1, -1, 0, 1, 0]
    assert slice_labels(truth, min_lesion_voxels=4).tolist() == [0, 1, 1, 0, 1, 0]
    assert slice_scores(scores, reduce="max").tolist() == pytest.approx([0.1, 1, 1, 5, 1, 0.1])
    mean = slice_scores(scores)
    assert mean[1] == pytest.approx((20 * 1.0 + 44 * 0.1) / 64)


def test_slice_auroc_constructed_volume():
    scores, truth = _slice_volume()
    # mean: both abnormal slices above all normal ones; max: slice 3 (5.0) beats both
    assert slice_auroc(scores, truth, reduce="mean") == 1.0
    # normal maxima 0.1, 5.0, 0.1 vs abnormal 1.0, 1.0: 4 of 6 pairs ordered
    assert slice_auroc(scores, truth, reduce="max") == pytest.approx(4 / 6)
    # the same volume sliced along another axis gives the same answer
    moved = np.moveaxis(scores, 0, 2), np.moveaxis(truth, 0, 2)
    assert slice_auroc(*moved, axis=2, reduce="max") == pytest.approx(4 / 6)


def test_slice_detection_uses_foreground_and_skips_empty_slices():
    scores, truth = _slice_volume()
    mask = np.ones(truth.shape, bool)
    mask[3, 0, 0] = False  # hide the hot voxel
    mask[5] = False  # a slice outside the body
    det = SliceDetection.from_volume(scores, truth, mask)
    assert det.labels.tolist() == [0, 1, -1, 0, 1, -1]
    assert det.auroc("max") == 1.0
    assert math.isnan(slice_scores(scores, mask)[5])


def test_slice_auroc_nan_without_both_classes():
    truth = np.zeros((4, 5, 5), np.uint8)
    det = SliceDetection.from_volume(np.zeros(truth.shape), truth)
    assert math.isnan(det.auroc("mean")) and "no abnormal slice" in det.undefined_reason()


# ------------------------------------------------------------------ undefined cases
def test_no_positives_no_negatives_give_nan_with_notes():
    scores = np.linspace(0, 1, 4 * 4 * 4).reshape(4, 4, 4)
    normal = np.zeros(scores.shape, np.uint8)
    assert math.isnan(voxel_auroc(scores, normal)) and math.isnan(voxel_auprc(scores, normal))
    assert all(math.isnan(v) for v in oracle_best_dice(scores, normal))
    assert dice_at_threshold(scores, normal, 0.5) == 0.0  # false positives: a real 0
    assert math.isnan(dice_at_threshold(scores, normal, 2.0))  # nothing at all: undefined
    res = evaluate_volume(scores, normal, threshold=0.5, case="healthy")
    row = res.rows[0]
    assert math.isnan(row["auroc"]) and math.isnan(row["oracle_dice"]) and row["dice"] == 0.0
    assert any("healthy: no lesion voxels" in n for n in res.notes)
    lesion = np.ones(scores.shape, np.uint8)
    assert math.isnan(voxel_auroc(scores, lesion))
    res = evaluate_volume(scores, lesion, mask=np.zeros(scores.shape, bool))
    assert res.rows[0]["voxels"] == 0
    assert any("no voxels inside the foreground" in n for n in res.notes)


# ------------------------------------------------------------------ data-set evaluation
def test_dataset_evaluator_pooled_and_mean_rows(rng):
    cases = [_random_case(rng, shape=(4, 10, 10)) for _ in range(3)]
    ev = DatasetEvaluator("rec", threshold=0.8, max_pooled_normal=None)
    for i, (s, t, m) in enumerate(cases):
        ev.add(f"c{i}", s, t, m)
    res = ev.result()
    assert [r["case"] for r in res.rows] == ["c0", "c1", "c2", "pooled", "mean"]
    s_all = np.concatenate([s[m] for s, _, m in cases])
    y_all = np.concatenate([t[m] for _, t, m in cases])
    pooled = res.row("pooled", "rec")
    assert pooled["auroc"] == pytest.approx(voxel_auroc(s_all, y_all), abs=1e-12)
    assert pooled["dice"] == pytest.approx(dice_at_threshold(s_all, y_all, 0.8), abs=1e-12)
    assert pooled["oracle_dice"] == pytest.approx(oracle_best_dice(s_all, y_all)[0], abs=1e-12)
    assert res.row("mean")["auprc"] == pytest.approx(np.mean([r["auprc"] for r in res.rows[:3]]))
    assert pooled["voxels"] == s_all.size


# ------------------------------------------------------------------ reports
def _result():
    rows = [
        {"predictor": "rec", "case": "a", "auroc": 0.91234, "oracle_dice": 0.5, "dice": math.nan},
        {"predictor": "rec", "case": "pooled", "auroc": 0.8, "oracle_dice": 0.4, "dice": 0.25},
    ]
    return MetricsResult(rows, ["a: no lesion voxels"])


def test_report_formats():
    res = _result()
    assert res.columns == ["predictor", "case", "auroc", "dice", "oracle_dice"]
    md = res.to_markdown()
    assert "| predictor | case | auroc | dice | oracle_dice |" in md
    assert "| rec | a | 0.9123 | n/a | 0.5000 |" in md
    assert md.rstrip().endswith("- a: no lesion voxels")
    csv_lines = res.to_csv().splitlines()
    assert csv_lines[0] == "predictor,case,auroc,dice,oracle_dice"
    assert csv_lines[1] == "rec,a,0.91234,,0.5"
    d = json.loads(res.to_json())
    assert d["rows"][0]["dice"] is None and d["rows"][1]["oracle_dice"] == 0.4
    back = MetricsResult.from_dict(d)
    assert math.isnan(back.rows[0]["dice"]) and back.notes == res.notes


def test_report_write_refuses_to_overwrite(tmp_path):
    res = _result()
    paths = res.write(tmp_path / "out")
    assert sorted(p.name for p in paths.values()) == ["metrics.csv", "metrics.json", "metrics.md"]
    (tmp_path / "out" / "metrics.md").write_text("keep me")
    with pytest.raises(AnomalyError, match="refusing to overwrite .*metrics.md"):
        res.write(tmp_path / "out")
    assert (tmp_path / "out" / "metrics.md").read_text() == "keep me"
    res.write(tmp_path / "out", overwrite=True)
    assert "oracle_dice" in (tmp_path / "out" / "metrics.md").read_text()


def test_every_oracle_key_says_oracle(rng):
    s, t, m = _random_case(rng)
    row = evaluate_volume(s, t, m, threshold=0.5).rows[0]
    best_keys = [k for k in row if "dice" in k or k.endswith("threshold")]
    assert set(best_keys) == {"dice", "threshold", "oracle_dice", "oracle_threshold"}
    # Dice at the user's threshold never exceeds the oracle
    assert row["dice"] <= row["oracle_dice"]
