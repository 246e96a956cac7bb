"""Every file the CLI commands and the demo write is named in the README's output table."""

from __future__ import annotations

from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _outputs_section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("### What each command writes")
    return text[start: text.index("**Metrics.**", start)]


def test_every_written_file_is_documented():
    from napari_vae_anomaly.cli.evaluate import FORMATS
    from napari_vae_anomaly.study.runner import OUTPUTS

    section = _outputs_section()
    names = [*OUTPUTS, "roc_pr.png", "bars.png", "examples.png", "models/beta_<beta>.safetensors",
             *(f"metrics.{f}" for f in FORMATS), "summary.json", "viewer.png",
             "<case>_<predictor>.nii.gz", "<case>_ensemble.nii.gz", "<case>_mask.nii.gz",
             "<case>_mask.dcm", "M.safetensors"]
    missing = [n for n in names if n not in section]
    assert missing == []
    for command in ("train", "predict", "evaluate", "benchmark", "demo"):
        assert f"| `{command}" in section
