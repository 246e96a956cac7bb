"""Fault-injection suite: shared helpers (full disk by a patched writer, file snapshots)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/_models.py


@pytest.fixture
def full_disk(monkeypatch):
    """Make SimpleITK behave as on a full disk: the write "succeeds" (no exception, like its
    NIfTI writer) but the files hold only the first ``keep`` bytes. Call with ``keep``."""
    import SimpleITK as sitk

    real = sitk.WriteImage

    def install(keep: int = 0, formats: tuple[str, ...] = ()) -> None:
        def writer(image, name, *args, **kwargs):
            real(image, name, *args, **kwargs)
            folder = Path(name).parent
            for f in folder.iterdir():
                if not formats or str(f).endswith(formats):
                    with open(f, "r+b") as fh:
                        fh.truncate(min(keep, f.stat().st_size))
            print("NWAD: wrote only 0 of N bytes (simulated)", file=sys.stderr)

        monkeypatch.setattr(sitk, "WriteImage", writer)

    return install
