"""``predict`` under torchrun: two Gloo processes share the cases and write exactly the files
one process writes; a failing case on one rank is reported and the others carry on."""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from _models import save_phantom_checkpoint
from napari_vae_anomaly.distributed import shard

TORCHRUN = Path(sys.executable).with_name("torchrun")


def test_shard_is_deterministic_balanced_and_complete():
    items = list(range(7))
    parts = [shard(items, r, 3) for r in range(3)]
    assert parts == [[0, 3, 6], [1, 4], [2, 5]]
    assert sorted(x for p in parts for x in p) == items
    assert shard(items, 0, 1) == items
    with pytest.raises(ValueError, match="not in a world"):
        shard(items, 3, 3)


def _contents(folder: Path) -> dict[str, bytes]:
    """Every output file's uncompressed bytes (gzip headers carry a time stamp)."""
    return {p.name: gzip.decompress(p.read_bytes()) for p in sorted(folder.iterdir())}


@pytest.mark.skipif(not TORCHRUN.exists() and not shutil.which("torchrun"), reason="no torchrun")
def test_two_gloo_processes_write_the_files_of_one_process(tmp_path):

    from napari_vae_anomaly.data.phantom import make_phantom
    from napari_vae_anomaly.io.write import write_volume

    ckpt, loaded, _test = save_phantom_checkpoint(tmp_path / "tiny.safetensors")
    inputs = []
    for seed in (11, 12, 13):
        p = make_phantom(seed=seed, shape=(12, 40, 40), lesions=True)
        inputs.append(write_volume(tmp_path / f"case{seed}.nii.gz", p.image, p.geometry))
    bad = tmp_path / "broken.nii.gz"  # the second case: rank 1's share
    bad.write_bytes(b"\x1f\x8b not really a gzip file")
    inputs.insert(1, bad)
    args = ["predict", *map(str, inputs), "--model", str(ckpt), "--predictor", "rec",
            "--predictor", "elbo_grad", "--device", "cpu", "--no-progress"]
    import napari_vae_anomaly

    src = str(Path(napari_vae_anomaly.__file__).resolve().parents[1])  # this checkout's code
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))

    one = subprocess.run([sys.executable, "-m", "napari_vae_anomaly", *args, "--out-dir",
                          str(tmp_path / "one")], capture_output=True, text=True, timeout=180,
                         env=env, cwd=tmp_path)
    assert one.returncode == 1, one.stderr[-2000:]
    torchrun = str(TORCHRUN if TORCHRUN.exists() else shutil.which("torchrun"))
    two = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m",
                          "napari_vae_anomaly", *args, "--out-dir", str(tmp_path / "two")],
                         capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path)
    assert two.returncode != 0, two.stderr[-3000:]
    # every rank exits 1 (the failed case counts for the whole run) and none crashed; torchrun
    # may end a rank with SIGTERM (-15) once the first one has exited
    codes = re.findall(r"exitcode\s*: (-?\d+)", two.stderr)
    assert "1" in codes and set(codes) <= {"1", "-15"}, two.stderr[-3000:]
    assert "napari_vae_anomaly/cli" not in two.stderr, two.stderr[-3000:]  # no traceback of ours
    expected = _contents(tmp_path / "one")
    assert len(expected) == 3 * 4  # rec, elbo_grad, ensemble, mask for three good cases
    assert _contents(tmp_path / "two") == expected
    for run in (one, two):
        summary = [ln for ln in run.stderr.splitlines() if "case(s) done" in ln]
        assert summary == [f"predict: 3 of 4 case(s) done, written to {tmp_path / run_dir(run)}"
                           f"; failed: {bad}"], run.stderr
        assert sum(f"predict: {bad}:" in ln for ln in run.stderr.splitlines()) == 1


def run_dir(run: subprocess.CompletedProcess) -> str:
    return "two" if "torchrun" in run.args[0] else "one"
