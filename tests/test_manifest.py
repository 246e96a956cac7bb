"""The npe2 manifest: valid in the editable install, and shipped intact inside a wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "napari.yaml"
PLUGIN = "napari-vae-anomaly"
BIN = Path(sys.executable).parent


def test_npe2_validate_in_the_editable_install():
    npe2_cli = BIN / "npe2"
    if not npe2_cli.exists():
        pytest.skip("npe2 command not installed next to this Python")
    res = subprocess.run([str(npe2_cli), "validate", PLUGIN], capture_output=True, text=True, encoding="utf-8", errors="replace",
                         timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "valid" in res.stdout


def test_installed_manifest_is_the_top_level_file():
    import npe2

    pm = npe2.PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest(PLUGIN)
    assert manifest == npe2.PluginManifest.from_file(MANIFEST)
    import napari_vae_anomaly

    packaged = Path(napari_vae_anomaly.__file__).parent / "napari.yaml"
    assert packaged.read_bytes() == MANIFEST.read_bytes()


@pytest.mark.parametrize(
    "command",
    ["napari-vae-anomaly.get_reader", "napari-vae-anomaly.write_labels",
     "napari-vae-anomaly.write_image", "napari-vae-anomaly.write_labels_dicom",
     "napari-vae-anomaly.write_image_dicom"],
)
def test_io_commands_resolve(command):
    import npe2

    manifest = npe2.PluginManifest.from_file(MANIFEST)
    (contrib,) = [c for c in manifest.contributions.commands if c.id == command]
    assert callable(_resolve(contrib.python_name))


def _resolve(python_name: str):
    import importlib

    module, attr = python_name.split(":")
    return getattr(importlib.import_module(module), attr)


def test_manifest_declares_the_readable_and_writable_formats():
    import npe2

    from napari_vae_anomaly.io import supported_extensions, writable_extensions
    from napari_vae_anomaly.io.dicom_seg import DICOM_OUT_EXTENSIONS

    manifest = npe2.PluginManifest.from_file(MANIFEST)
    (reader,) = manifest.contributions.readers
    assert reader.accepts_directories
    patterns = {p.lower() for p in reader.filename_patterns}
    for ext in (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm", ".png", ".tif"):
        assert f"*{ext}" in patterns and ext in supported_extensions()
    dicom_writers = []
    for writer in manifest.contributions.writers:
        if writer.command.endswith("_dicom"):  # DICOM SEG / Parametric Map
            assert tuple(writer.filename_extensions) == DICOM_OUT_EXTENSIONS
            dicom_writers.append(tuple(writer.layer_types))
            continue
        assert set(writer.filename_extensions) <= set(writable_extensions())
        assert writer.filename_extensions[0] == ".nii.gz"
    assert sorted(dicom_writers) == [("image",), ("labels",)]


def test_wheel_ships_the_manifest_once_as_a_real_file(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir",
         str(tmp_path), str(ROOT)],
        capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=300,
    )
    assert res.returncode == 0, "wheel build failed:\n" + (res.stdout + res.stderr)[-3000:]
    (wheel,) = tmp_path.glob("napari_vae_anomaly-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert names.count("napari_vae_anomaly/napari.yaml") == 1
        info = zf.getinfo("napari_vae_anomaly/napari.yaml")
        assert (info.external_attr >> 28) != 0o12  # a regular file, not a symlink entry
        assert zf.read("napari_vae_anomaly/napari.yaml") == MANIFEST.read_bytes()
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        text = zf.read(entry_points).decode()
    assert "[napari.manifest]" in text
    assert "napari-vae-anomaly = napari_vae_anomaly:napari.yaml" in text
    for module in ("_reader.py", "_writer.py", "io/read.py", "io/write.py", "io/dicom.py",
                   "io/dicom_seg.py"):
        assert f"napari_vae_anomaly/{module}" in names
