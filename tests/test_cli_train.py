"""The ``train`` sub-command end to end on built-in phantoms, and its one-line errors."""

from __future__ import annotations

import pytest
import torch

from napari_vae_anomaly.cli.main import main
from napari_vae_anomaly.models.checkpoint import load_checkpoint

TINY = ["--phantom-shape", "24,48,48", "--size", "32", "--features", "8,16,32", "--latent", "16",
        "--batch-size", "8", "--lr", "3e-3", "--device", "cpu", "--quiet"]


@pytest.fixture(autouse=True)
def _one_thread(_torch_threads):
    torch.set_num_threads(1)


def test_train_phantom_end_to_end(tmp_path, capsys):
    out = tmp_path / "cli.safetensors"
    rc = main(["train", "--phantom", "2", "--epochs", "2", "--beta", "0.5", "--likelihood",
               "laplace", "--skip-slices", "2", "--seed", "3", "--out", str(out), *TINY])
    assert rc == 0
    assert f"to {out}" in capsys.readouterr().out
    loaded = load_checkpoint(out)
    assert loaded.config.beta == 0.5 and loaded.config.likelihood == "laplace"
    assert loaded.config.features == (8, 16, 32) and loaded.preprocess.skip_slices == 2
    card = loaded.card["training"]
    assert card["seed"] == 3 and len(card["history"]) == 2 and card["data"]["volumes"] == 2
    # existing output is refused without --overwrite, and replaced with it
    rc = main(["train", "--phantom", "1", "--epochs", "1", "--out", str(out), *TINY])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "already exists" in err and "--overwrite" in err and "\n" not in err
    assert main(["train", "--phantom", "2", "--epochs", "1", "--out", str(out), "--overwrite",
                 "--resume", str(out), *TINY]) == 0
    assert len(load_checkpoint(out).card["training"]["history"]) == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "no input volumes"),
        (["{tmp}/none/*.nii.gz"], "no files match"),
        (["--phantom", "1", "--device", "tpu"], "unknown device 'tpu'"),
        (["--phantom", "1", "--size", "48"], "power of two"),
        (["{tmp}/missing.nii.gz"], "does not exist"),
    ],
)
def test_train_errors_are_one_line(tmp_path, capsys, args, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    rc = main(["train", *args, "--out", str(tmp_path / "m.safetensors"), "--epochs", "1"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("napari-vae-anomaly train: error:") and message in err and "\n" not in err
    assert not (tmp_path / "m.safetensors").exists()


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for opt in ("--out", "--beta", "--epochs", "--time-budget", "--size", "--latent", "--device",
                "--seed", "--masks", "--likelihood", "--batch-size", "--lr", "--axis",
                "--skip-slices", "--resume", "--overwrite", "--phantom", "torchrun"):
        assert opt in text, opt
