"""``predict`` on two simulated nodes writing into one shared output folder.

Two separate ``torchrun`` launches (``--nnodes 2 --node_rank 0/1 --nproc_per_node 1``, a
static rendezvous on 127.0.0.1, Gloo on the CPU), each reporting a host name of its own
(``tests/_torchrun_node.py``), as the README's multi-node command runs on two machines. What is
on disk must be what one process writes; a slow node is waited for, a dead one is not.
"""

from __future__ import annotations

import gzip
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _models import save_phantom_checkpoint

NODE = Path(__file__).with_name("_torchrun_node.py")
BAR = re.compile(r"predict:\s+\d+%\|[^|]*\|\s*(\d+)/(\d+)")


def free_port() -> int:
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    except OSError as exc:  # no loopback networking here: torchrun could not rendezvous
        pytest.skip(f"cannot bind a port on 127.0.0.1 ({exc})")


def _env(**extra: str) -> dict[str, str]:
    import napari_vae_anomaly

    src = str(Path(napari_vae_anomaly.__file__).resolve().parents[1])  # this checkout's code
    return dict(os.environ, OMP_NUM_THREADS="1", **extra,
                PYTHONPATH=os.pathsep.join([src, str(NODE.parent),
                                            os.environ.get("PYTHONPATH", "")]))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Six inputs (the fourth, rank 1's, broken), a tiny checkpoint, and the files one
    process writes for them."""
    from napari_vae_anomaly.data.phantom import make_phantom
    from napari_vae_anomaly.io.write import write_volume

    tmp = tmp_path_factory.mktemp("cohort")
    ckpt, _loaded, _test = save_phantom_checkpoint(tmp / "tiny.safetensors")
    inputs = [str(write_volume(tmp / f"case{s}.nii.gz",
                               (p := make_phantom(seed=s, shape=(8, 32, 32), lesions=True)).image,
                               p.geometry)) for s in (21, 22, 23, 24, 25)]
    bad = tmp / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b not really a gzip file")
    inputs.insert(3, str(bad))
    args = ["predict", *inputs, "--model", str(ckpt), "--predictor", "rec", "--predictor",
            "elbo_grad", "--device", "cpu"]
    one = subprocess.run([sys.executable, "-m", "napari_vae_anomaly", *args, "--no-progress",
                          "--out-dir", str(tmp / "one")], capture_output=True, encoding="utf-8",
                         errors="replace", timeout=180, env=_env(), cwd=tmp)
    assert one.returncode == 1, one.stderr[-2000:]
    expected = contents(tmp / "one")
    assert len(expected) == 5 * 4  # rec, elbo_grad, ensemble, mask of five good cases
    return args, str(bad), expected


def contents(folder: Path) -> dict[str, bytes]:
    """Every file's uncompressed bytes (gzip headers carry a time stamp), hidden ones too."""
    return {p.name: gzip.decompress(p.read_bytes()) if p.name.endswith(".gz") else b"temp"
            for p in sorted(folder.iterdir())}


def two_nodes(args: list[str], out: Path, *extra: str, timeout: float = 120,
              **faults: str) -> list[subprocess.CompletedProcess]:
    """Launch node 0 and node 1 (hosts node-a, node-b) as two torchruns; both results."""
    port = free_port()
    procs = []
    for node, host in enumerate(("node-a", "node-b")):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank",
               str(node), "--nproc_per_node", "1", "--master_addr", "127.0.0.1",
               "--master_port", str(port), str(NODE), *args, *extra, "--out-dir", str(out)]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      encoding="utf-8", errors="replace", cwd=out.parent,
                                      env=_env(NVA_TEST_HOST=host, **faults)))
    done = []
    for p in procs:
        try:
            stdout, stderr = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        done.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return done


def worker_codes(run: subprocess.CompletedProcess) -> list[str]:
    """The exit codes torchrun reports for its workers (none when all of them exit 0)."""
    return re.findall(r"exitcode\s+: (-?\d+)", run.stderr)


def our_traceback(run: subprocess.CompletedProcess) -> bool:
    """Whether a traceback through the package's code was printed (torchrun prints its own)."""
    return re.search(r'File ".*napari_vae_anomaly[/\\]', run.stderr) is not None


def summaries(runs: list[subprocess.CompletedProcess]) -> list[str]:
    return [ln for r in runs for ln in r.stderr.splitlines() if "case(s) done" in ln]


def test_two_nodes_write_one_shared_folder_as_one_process(cohort, tmp_path):
    """Node 1 is slower than the peer timeout per case, yet waited for (it still beats), and
    would calibrate other thresholds, yet uses rank 0's; rank 0's bar counts node 1's cases
    up to 6/6; one summary; one failure line."""
    args, bad, expected = cohort
    out = tmp_path / "shared"
    runs = two_nodes(args, out, "--peer-timeout", "2", NVA_TEST_SLOW="1:2.5", NVA_TEST_SKEW="1")
    for r in runs:  # every node ends alike: its one worker exited 1 (a case failed)
        assert r.returncode == 1 and worker_codes(r) == ["1"], r.stderr[-3000:]
        assert not our_traceback(r), r.stderr[-3000:]
    assert contents(out) == expected  # no temporaries, nothing twice, bytes of one process
    assert summaries(runs) == [f"predict: 5 of 6 case(s) done, written to {out}; "
                               f"failed: {bad}"]
    assert "case(s) done" in runs[0].stderr  # printed by rank 0, on node 0
    failures = [ln for r in runs for ln in r.stderr.splitlines() if ln.startswith(
        f"predict: {bad}:")]
    assert len(failures) == 1 and failures[0] in runs[1].stderr  # by its own rank
    counts = [(int(n), int(t)) for n, t in BAR.findall(runs[0].stderr)]
    assert counts and counts[-1] == (6, 6), runs[0].stderr[-2000:]
    assert not BAR.findall(runs[1].stderr)  # one bar, on rank 0


def test_a_dead_node_stops_the_others_and_a_rerun_finishes_the_cohort(cohort, tmp_path):
    """Node 1's process is killed after its first case: node 0 gives up after the peer
    timeout with one line (no hang, no traceback); rerunning the command keeps what was
    written, cleans node 1's leftovers and ends with the files of one process."""
    args, bad, expected = cohort
    out = tmp_path / "shared"
    t0 = time.monotonic()
    runs = two_nodes(args, out, "--peer-timeout", "3", "--no-progress", NVA_TEST_DIE="1")
    assert time.monotonic() - t0 < 90
    assert worker_codes(runs[0]) == ["2"] and not our_traceback(runs[0]), runs[0].stderr[-3000:]
    lost = [ln for ln in runs[0].stderr.splitlines() if "has not answered" in ln]
    assert lost == ["napari-vae-anomaly predict: error: rank 1 has not answered for 3 s (its "
                    "process or node stopped); the cases written so far are complete, run the "
                    "same command again to do the rest (existing outputs are kept)"]
    assert worker_codes(runs[1]) == ["-9"], runs[1].stderr[-3000:]
    partial = {k: v for k, v in contents(out).items() if not k.startswith(".")}
    assert partial and all(expected[k] == v for k, v in partial.items())
    assert len(partial) < len(expected) and len(partial) % 4 == 0  # whole cases only

    runs = two_nodes(args, out, "--no-progress")
    assert [r.returncode for r in runs] == [1, 1], runs[0].stderr[-3000:]
    assert contents(out) == expected  # node 1's staging leftovers are gone too
    kept = len(partial) // 4
    assert summaries(runs) == [f"predict: {5 - kept} of 6 case(s) done, written to {out}; "
                               f"{kept} kept (outputs exist); failed: {bad}"]


def test_peer_timeout_must_be_positive(tmp_path, capsys):
    from napari_vae_anomaly.cli.main import main

    out = tmp_path / "maps"
    assert main(["predict", str(tmp_path / "scan.nii.gz"), "--model", "m.safetensors",
                 "--peer-timeout", "0", "--out-dir", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["napari-vae-anomaly predict: error: --peer-timeout must be positive (got 0)"]
    assert not out.exists()
