"""Full disk: a write that does not complete never replaces an existing file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from faults_data import snapshot

from napari_vae_anomaly.errors import VolumeWriteError
from napari_vae_anomaly.io import Geometry, write_volume

FORMATS = [".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"]


@pytest.fixture
def geo() -> Geometry:
    return Geometry((1.0, 1.0, 2.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))


@pytest.mark.parametrize("ext", FORMATS)
@pytest.mark.parametrize("keep", [0, 200, 400])
@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_truncated_write_keeps_old_file(tmp_path, full_disk, geo, ext, keep, dtype):
    rng = np.random.default_rng(0)
    old = write_volume(tmp_path / f"out{ext}", np.ones((4, 5, 6), dtype), geo)
    before = snapshot(tmp_path)
    full_disk(keep)
    new = (rng.random((8, 20, 24)) * 200).astype(dtype)
    with pytest.raises(VolumeWriteError, match=r"^out.*: writing failed.*disk full"):
        write_volume(old, new, geo, overwrite=True)
    assert snapshot(tmp_path) == before  # byte for byte, no temporary left


def test_truncated_write_creates_nothing(tmp_path, full_disk, geo):
    full_disk(300)
    with pytest.raises(VolumeWriteError, match="Nothing was replaced"):
        write_volume(tmp_path / "new.nii.gz", np.random.default_rng(1).random((8, 9, 10)), geo)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("ext", [".nii", ".nii.gz"])
def test_mask_with_damaged_voxels_is_refused(tmp_path, after_write, geo, ext):
    """A mask is read back whole: corrupted voxels behind an intact header are caught."""
    import gzip

    def flipping(name):
        packed = name.suffix == ".gz"
        raw = gzip.decompress(name.read_bytes()) if packed else name.read_bytes()
        data = bytearray(raw)
        data[-20] ^= 0xFF  # inside the voxel data
        name.write_bytes(gzip.compress(bytes(data)) if packed else bytes(data))

    after_write(flipping)
    with pytest.raises(VolumeWriteError, match="differ"):
        write_volume(tmp_path / f"mask{ext}", np.ones((4, 5, 6), np.uint8), geo)
    assert list(tmp_path.iterdir()) == []


def test_extra_bytes_after_the_voxels_are_refused(tmp_path, after_write, geo):
    after_write(lambda name: open(name, "ab").write(b"\0" * 4))
    with pytest.raises(VolumeWriteError, match="differ"):
        write_volume(tmp_path / "mask.nii", np.ones((4, 5, 6), np.uint8), geo)
    assert list(tmp_path.iterdir()) == []


def test_predict_on_full_disk_fails_and_keeps_outputs(tmp_path, full_disk, capsys):
    from faults_data import checkpoint_and_scan

    from napari_vae_anomaly.cli.main import main

    ckpt, scan = checkpoint_and_scan(tmp_path)
    out = tmp_path / "out"
    argv = ["predict", str(scan), "--model", str(ckpt), "--threshold", "0.5", "--out-dir",
            str(out), "--no-progress"]
    assert main(argv) == 0
    before = snapshot(out)
    full_disk(100)
    capsys.readouterr()
    assert main([*argv, "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert "disk full" in err and "0 of 1 case(s) done" in err
    assert snapshot(out) == before


def _can_mount_tmpfs() -> bool:
    if sys.platform != "linux" or not shutil.which("unshare"):
        return False
    try:
        return subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs "
                               "/tmp 2>/dev/null"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="cannot mount a tmpfs (no user namespaces)")
def test_real_full_tmpfs(tmp_path):
    """A real small tmpfs (mounted in a private user namespace): the NIfTI writer's silent
    failure is caught and the existing file survives byte for byte."""
    disk = tmp_path / "disk"
    disk.mkdir()
    script = textwrap.dedent(f"""
        import os, numpy as np
        from napari_vae_anomaly.errors import VolumeWriteError
        from napari_vae_anomaly.io import Geometry, write_volume
        geo = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
        out = write_volume("{disk}/map.nii.gz", np.ones((8, 8, 8), np.float32), geo)
        old = open(out, "rb").read()
        fd = os.open("{disk}/filler", os.O_WRONLY | os.O_CREAT)  # fill the disk but 16 KiB
        try:
            while True:
                os.write(fd, b"x" * 4096)
        except OSError:
            os.close(fd)
        os.truncate("{disk}/filler", os.path.getsize("{disk}/filler") - 16384)
        noise = np.random.default_rng(0).random((32, 64, 64)).astype(np.float32)
        try:
            write_volume(out, noise, geo, overwrite=True)
            print("WROTE")
        except VolumeWriteError as exc:
            print("REFUSED", exc)
        same = open(out, "rb").read() == old
        left = sorted(os.listdir("{disk}"))
        print("SAME", same, left)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    r = subprocess.run(["unshare", "-rm", "sh", "-c", f'mount -t tmpfs -o size=256k tmpfs '
                        f'"{disk}" && exec "{sys.executable}" -c "$0"', script],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert "REFUSED" in r.stdout and "disk full" in r.stdout, r.stdout + r.stderr
    assert "SAME True ['filler', 'map.nii.gz']" in r.stdout, r.stdout


@pytest.mark.parametrize("ext", FORMATS)
@pytest.mark.parametrize("dtype", [np.float32, np.uint8, np.int16])
def test_every_truncation_point_is_caught(tmp_path, after_write, geo, ext, dtype):
    """The written file cut at 16 points from 0 bytes to one byte short: always refused."""
    data = (np.random.default_rng(1).random((5, 12, 14)) * 100).astype(dtype)
    probe = tmp_path / "probe"
    probe.mkdir()
    write_volume(probe / f"x{ext}", data, geo)
    sizes = {p.name: p.stat().st_size for p in probe.iterdir()}
    for victim, size in sizes.items():
        for keep in sorted({int(k) for k in np.linspace(0, size - 1, 16)}):
            hooked = []

            def cut(name, victim=victim, keep=keep, hooked=hooked):
                hooked.append(name.name)
                target = os.path.join(os.path.dirname(name), "y" + victim[1:])
                os.truncate(target, keep)

            after_write(cut)
            with pytest.raises(VolumeWriteError, match="writing failed"):
                write_volume(tmp_path / f"y{ext}", data, geo)
            assert hooked == [f"y{ext}"]  # the cut came after the whole file was written
            assert not list(tmp_path.glob("y*")), (victim, keep)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_text_reports_are_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    import errno
    import io

    from napari_vae_anomaly.io import atomic

    report = tmp_path / "results.md"
    report.write_text("old report\n")

    class Full(io.FileIO):
        def write(self, b):
            super().write(bytes(b[:5]))
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fdopen", lambda fd, mode: Full(fd, "wb"))
    with pytest.raises(OSError, match="No space"):
        atomic.atomic_write_text(report, "new report " * 1000)
    assert snapshot(tmp_path) == {"results.md": b"old report\n"}


@pytest.mark.parametrize("ext", [".nii", ".nii.gz"])
def test_streamed_nifti_raising_enospc_keeps_old_file(tmp_path, monkeypatch, geo, ext):
    """The streaming NIfTI writer meets a real ENOSPC (an OSError mid-file, after some slabs
    went out): refused with "disk full", the old file byte for byte, no temporary left."""
    import errno

    from napari_vae_anomaly.io import nifti_stream

    old = write_volume(tmp_path / f"map{ext}", np.ones((4, 5, 6), np.float32), geo)
    before = snapshot(tmp_path)
    real = nifti_stream._slabs

    def slabs_then_full(arr):
        for i, slab in enumerate(real(arr)):
            if i == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
            yield slab

    monkeypatch.setattr(nifti_stream, "_SLAB_BYTES", 64 * 64 * 4)  # one slice per slab
    monkeypatch.setattr(nifti_stream, "_slabs", slabs_then_full)
    big = np.random.default_rng(2).random((6, 64, 64)).astype(np.float32)
    with pytest.raises(VolumeWriteError, match=r"^map.*: writing failed \(disk full: No space"):
        write_volume(old, big, geo, overwrite=True)
    assert snapshot(tmp_path) == before
