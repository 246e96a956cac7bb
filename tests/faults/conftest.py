"""Fault-injection suite: shared helpers (full disk by a patched writer, file snapshots)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/_models.py


@pytest.fixture
def after_write(monkeypatch):
    """Call ``hook(path)`` after every volume file a writer makes: SimpleITK's (NRRD,
    MetaImage; not its one-voxel NIfTI header probe) and the streaming NIfTI writer."""
    import SimpleITK as sitk

    from napari_vae_anomaly.io import nifti_stream

    real, real_stream = sitk.WriteImage, nifti_stream.write_nifti

    def install(hook) -> None:
        def writer(image, name, *args, **kwargs):
            real(image, name, *args, **kwargs)
            if not str(name).endswith("header-probe.nii"):
                hook(Path(name))

        def stream(path, *args, **kwargs):
            real_stream(path, *args, **kwargs)
            hook(Path(path))

        monkeypatch.setattr(sitk, "WriteImage", writer)
        monkeypatch.setattr(nifti_stream, "write_nifti", stream)

    return install


@pytest.fixture
def full_disk(after_write):
    """Make the writers behave as on a full disk: the write "succeeds" (no exception, like
    SimpleITK's NIfTI writer) but the files hold only the first ``keep`` bytes. Call with
    ``keep``."""

    def install(keep: int = 0, formats: tuple[str, ...] = ()) -> None:
        def cut(name: Path) -> None:
            for f in name.parent.iterdir():
                if not formats or str(f).endswith(formats):
                    with open(f, "r+b") as fh:
                        fh.truncate(min(keep, f.stat().st_size))
            print("NWAD: wrote only 0 of N bytes (simulated)", file=sys.stderr)

        after_write(cut)

    return install
