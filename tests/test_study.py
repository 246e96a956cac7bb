"""The study as one command, reduced: tiny models on small phantoms, two betas, short projection."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from napari_vae_anomaly.cli.main import main
from napari_vae_anomaly.study.config import ALL_PREDICTORS, StudyConfig
from napari_vae_anomaly.study.runner import BASELINES, TABLE_COLUMNS, run_study

TINY = dict(
    n_normal=2,
    n_test=2,
    shape=(24, 48, 48),
    betas=(0.1, 1.0),
    energy_steps=3,
    epochs=3,
    size=32,
    features=(8, 16, 32),
    latent=16,
    batch_size=64,
    extra={"n_reference": 1},
)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    lines: list[str] = []
    result = run_study(StudyConfig.quick(out, **TINY), lines.append)
    return out, result, lines


def test_table_has_every_row_and_column(study):
    out, result, lines = study
    keys = {(r["model"], r["predictor"]) for r in result.rows}
    for beta in ("beta=0.1", "beta=1"):
        for p in (*ALL_PREDICTORS, "ensemble"):
            assert (beta, p) in keys
    for p in (*ALL_PREDICTORS, "ensemble"):
        assert ("all", p) in keys
    for b in BASELINES:
        assert ("baseline", b) in keys
    assert len(result.rows) == 2 * 8 + 8 + 3
    for r in result.rows:
        assert set(TABLE_COLUMNS) <= set(r)
        assert r["seconds_per_volume"] >= 0
        assert 0.0 <= r["auroc"] <= 1.0 and 0.0 <= r["auprc"] <= 1.0
        assert r["oracle_dice"] >= r["dice"] - 1e-9 or math.isnan(r["dice"])
    header = (out / "results.md").read_text().splitlines()
    assert any("oracle Dice" in h for h in header)
    csv_head = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert "oracle_dice" in csv_head and "dice" in csv_head and "seconds_per_volume" in csv_head
    data = json.loads((out / "results.json").read_text())
    assert len(data["rows"]) == len(result.rows) and any("oracle" in n for n in data["notes"])
    assert (out / "per_case.csv").read_text().count("\n") == 1 + 2 * len(result.rows)
    assert any("test 2/2" in line for line in lines)


def test_plots_are_readable_pngs(study):
    out, result, _ = study
    import matplotlib.image as mpimg

    for name in ("roc_pr.png", "bars.png", "examples.png"):
        p = out / name
        assert p.is_file() and 1000 < p.stat().st_size < 200_000, name
        img = mpimg.imread(p)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
        assert np.ptp(img) > 0.1  # not a blank image


def test_best_predictor_beats_chance(study):
    _, result, _ = study
    model_rows = [r for r in result.rows if r["model"] != "baseline"]
    best = max(model_rows, key=lambda r: r["auroc"])
    assert best["auroc"] > 0.8, best  # measured about 0.95 with these settings
    assert best["oracle_dice"] > 0.3


def test_refuses_to_overwrite_results(study, capsys):
    out, _, _ = study
    before = (out / "results.md").read_text()
    status = main(["benchmark", "--quick", "--out", str(out)])
    assert status == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "results.md").read_text() == before


def test_same_seed_same_numbers(tmp_path):
    cfg = dict(TINY, betas=(1.0,), predictors=("rec", "kl_grad", "energy"), plots=False)
    a = run_study(StudyConfig.quick(tmp_path / "a", **cfg), lambda _m: None)
    b = run_study(StudyConfig.quick(tmp_path / "b", **cfg), lambda _m: None)
    assert a.numbers() == b.numbers()
    assert not (tmp_path / "a" / "roc_pr.png").exists()


def test_config_validation():
    with pytest.raises(ValueError, match="unknown predictor"):
        StudyConfig.quick("x", predictors=("nope",))
    with pytest.raises(ValueError, match="beta or one model"):
        StudyConfig.quick("x", betas=())


def test_study_defaults_follow_the_package_defaults():
    """One source of truth: the study's threshold fraction is the CLI's and the widget's."""
    from napari_vae_anomaly.postprocessing.threshold import DEFAULT_NORMAL_FRACTION
    from napari_vae_anomaly.study.config import StudyConfig

    assert StudyConfig(out="x").normal_fraction == DEFAULT_NORMAL_FRACTION
    assert StudyConfig.default_realistic("x").normal_fraction == DEFAULT_NORMAL_FRACTION
