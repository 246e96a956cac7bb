"""Saving checkpoints: full disk, short writes, umask, killed writers and their leftovers."""

from __future__ import annotations

import errno
import io
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from faults_data import snapshot

from _models import tiny_vae
from napari_vae_anomaly.errors import CheckpointError
from napari_vae_anomaly.models import checkpoint as ckpt_mod
from napari_vae_anomaly.models.checkpoint import load_checkpoint, save_checkpoint
from napari_vae_anomaly.preprocessing import PreprocessConfig


def _save(path, seed=0, overwrite=True):
    return save_checkpoint(path, tiny_vae(size=16, seed=seed), {"name": f"m{seed}"},
                           PreprocessConfig(size=16), overwrite=overwrite)


class _Limited(io.FileIO):
    """A file that accepts ``room`` bytes, then fails (ENOSPC) or silently stops (short)."""

    room = 100
    silent = False

    def write(self, b):
        n = min(len(b), self.room)
        _Limited.room -= n
        if n < len(b) and not self.silent:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(bytes(b[:n]))


@pytest.mark.parametrize("silent", [False, True])
def test_disk_full_keeps_previous_checkpoint(tmp_path, monkeypatch, silent):
    path = _save(tmp_path / "m.safetensors")
    before = snapshot(tmp_path)
    _Limited.room, _Limited.silent = 100, silent
    monkeypatch.setattr(ckpt_mod.os, "fdopen", lambda fd, mode: _Limited(fd, "wb"))
    with pytest.raises(CheckpointError, match=r"disk full.*nothing was replaced"):
        _save(path, seed=1)
    assert snapshot(tmp_path) == before
    assert load_checkpoint(path).name == "m0"


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_checkpoint_follows_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path = _save(tmp_path / "m.safetensors")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode


def test_permission_error_says_so(tmp_path, monkeypatch):
    path = _save(tmp_path / "m.safetensors")

    def denied(self):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(type(path), "read_bytes", denied)
    with pytest.raises(CheckpointError, match=r"cannot read .*m\.safetensors: permission denied"):
        load_checkpoint(path)


def test_stale_temporaries_of_dead_runs_are_cleaned(tmp_path):
    from napari_vae_anomaly.io.atomic import _host_tag

    host = _host_tag()
    dead = tmp_path / f".m.safetensors.999999999-{host}.abc123_x.tmp"
    live = tmp_path / f".m.safetensors.{os.getpid()}-{host}.zz9.tmp"
    foreign = tmp_path / ".m.safetensors.999999999-000000.q1.tmp"  # other host, recent
    foreign_old = tmp_path / ".m.safetensors.999999999-000000.q2.tmp"  # other host, 2 days
    other = tmp_path / ".notes.tmp"  # not ours: never touched
    for p in (dead, live, foreign, foreign_old, other):
        p.write_bytes(b"partial")
    old = time.time() - 2 * 86400
    os.utime(foreign_old, (old, old))
    _save(tmp_path / "m.safetensors")
    assert not dead.exists() and not foreign_old.exists()
    assert live.exists() and foreign.exists() and other.exists()


def test_sigkill_mid_write_keeps_old_file_and_next_run_cleans(tmp_path):
    """A writer killed after writing its temporary file but before the rename: the old
    checkpoint is untouched byte for byte, and the next save removes the leftover."""
    path = _save(tmp_path / "m.safetensors")
    before = path.read_bytes()
    child = textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {os.path.dirname(os.path.dirname(__file__))!r})
        from _models import tiny_vae
        from napari_vae_anomaly.models import checkpoint as c
        from napari_vae_anomaly.preprocessing import PreprocessConfig
        def hang(fd):
            print("WRITING", flush=True)
            time.sleep(60)
        c.os.fsync = hang
        c.save_checkpoint({str(path)!r}, tiny_vae(size=16, seed=5), {{}},
                          PreprocessConfig(size=16), overwrite=True)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True,
                            env=env)
    try:
        assert proc.stdout.readline().strip() == "WRITING"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    leftovers = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == 1 and path.read_bytes() == before
    time.sleep(0.01)
    _save(tmp_path / "m.safetensors", seed=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
