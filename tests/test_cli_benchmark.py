"""`benchmark --quick`: its help states the preset the code runs (betas, epochs, batch size),
and the preset trains for more than a handful of steps, so its beta comparison says something."""

from __future__ import annotations

import argparse
import math


def _help() -> str:
    from napari_vae_anomaly.cli import benchmark

    parser = argparse.ArgumentParser()
    benchmark.register(parser.add_subparsers())
    sub = parser._subparsers._group_actions[0].choices["benchmark"]
    return " ".join(sub.format_help().split())


def test_quick_help_matches_the_preset():
    from napari_vae_anomaly.study.config import StudyConfig

    quick = StudyConfig.quick("x")
    text = _help()
    assert quick.betas == (0.1, 5.0) and "betas 0.1 and 5" in text
    assert f"{quick.epochs} epochs in batches of {quick.batch_size}" in text
    assert f"size-{quick.size} model" in text
    assert "1.5 min on the phantom" in text and "5.5 min with --data mni" in text
    assert "a few minutes" not in text


def test_quick_preset_trains_enough_steps():
    from napari_vae_anomaly.study.config import StudyConfig

    quick = StudyConfig.quick("x")
    slices = quick.n_normal * quick.shape[0]  # an upper bound on the training slices
    steps = quick.epochs * math.ceil(slices / quick.batch_size)
    # the old preset: 6 epochs of batches of 64 from at most 96 slices, 12 steps at most
    assert steps >= 100, steps
