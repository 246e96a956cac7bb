"""The collectives ``predict`` uses under torchrun, on two Gloo processes of this machine:
rank 0's value everywhere, a check that every rank holds the same list, and the final
gather that waits for a slow rank but not for a dead one."""

from __future__ import annotations

import os
import socket
import time

import pytest
import torch.multiprocessing as mp

from napari_vae_anomaly.distributed import (
    Heartbeat,
    PeerLost,
    SharedCounter,
    first_differing_rank,
    from_main,
    gather_when_done,
    setup,
)


def _free_port() -> int:
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    except OSError as exc:
        pytest.skip(f"cannot bind a port on 127.0.0.1 ({exc})")


def _start_with_other_inputs(ctx, rank: int, folder: str) -> str:
    """``predict``'s start on a node given the inputs in another order: the message."""
    from napari_vae_anomaly.cli.main import build_parser
    from napari_vae_anomaly.cli.predict import start
    from napari_vae_anomaly.errors import AnomalyError

    inputs = [os.path.join(folder, f"{c}.nii.gz") for c in "ab"]
    args = build_parser().parse_args(["predict", *(inputs[::-1] if rank else inputs),
                                      "--model", os.path.join(folder, "m.safetensors"),
                                      "--threshold", "0.5", "--out-dir",
                                      os.path.join(folder, "out"), "--device", "cpu"])
    try:
        start(args, ctx)
    except AnomalyError as exc:
        return str(exc)
    return "started"


def _rank(rank: int, port: int, folder: str, results) -> None:
    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    ctx = setup("cpu")
    out: dict = {}
    try:
        out["main"] = from_main(ctx, {"threshold": 0.25 + rank})  # each rank its own value
        out["same"] = first_differing_rank(ctx, ["a", "b", "c"])
        out["differ"] = first_differing_rank(ctx, ["a", "b", "c"][: 3 - rank])
        out["start"] = _start_with_other_inputs(ctx, rank, folder)
        with Heartbeat(ctx, interval=0.05):
            if rank == 1:
                time.sleep(1.5)  # slower than the patience below, but beating
            out["counted"] = SharedCounter(ctx, "n").add(1 + rank)
            t = time.monotonic()
            out["slow"] = gather_when_done(ctx, {"rank": rank}, "slow", patience=0.5)
            out["waited"] = time.monotonic() - t
        if rank == 0:  # rank 1 has left without a word (and without beating)
            t = time.monotonic()
            try:
                gather_when_done(ctx, {"rank": rank}, "dead", patience=0.5)
            except PeerLost as exc:
                out["lost"], out["gave_up_after"] = str(exc), time.monotonic() - t
        results.put((rank, out))
    finally:
        if rank == 0:
            time.sleep(0.2)
        ctx.close()


def test_rank0s_value_same_lists_and_the_final_gather(tmp_path):
    from _models import tiny_vae
    from napari_vae_anomaly.data.phantom import make_phantom
    from napari_vae_anomaly.io.write import write_volume
    from napari_vae_anomaly.models.checkpoint import save_checkpoint
    from napari_vae_anomaly.preprocessing import PreprocessConfig

    save_checkpoint(tmp_path / "m.safetensors", tiny_vae(size=16), {"name": "tiny"},
                    PreprocessConfig(size=16))
    for c in "ab":
        p = make_phantom(seed=1, shape=(8, 16, 16))
        write_volume(tmp_path / f"{c}.nii.gz", p.image, p.geometry)
    port = _free_port()
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    mp.start_processes(_rank, args=(port, str(tmp_path), results), nprocs=2,
                       start_method="spawn")
    got = dict(results.get() for _ in range(2))
    for rank in (0, 1):
        assert got[rank]["main"] == {"threshold": 0.25}  # rank 0's, also on rank 1
        assert got[rank]["same"] is None and got[rank]["differ"] == 1
        assert got[rank]["start"] == (
            "rank 1 was given other inputs than rank 0 (or in another order), so the ranks' "
            "shares would not add up to the cohort; give every node the same list (e.g. "
            "sorted); no case was computed")
        assert got[rank]["slow"] == [{"rank": 0}, {"rank": 1}]
    assert list((tmp_path / "out").iterdir()) == []  # nothing written
    assert got[0]["waited"] > 1.0  # waited for rank 1 longer than the patience
    assert sorted([got[0]["counted"], got[1]["counted"]])[1] == 3  # 1 + 2 over both ranks
    assert got[0]["lost"].startswith("rank 1 has not answered for 0.5 s")
    assert 0.5 <= got[0]["gave_up_after"] < 10
