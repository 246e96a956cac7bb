"""Temporaries in an output folder that several nodes share: a node cleans the leftovers of
its own dead processes, never another node's live staging folder, even when both nodes carry
the same host name."""

from __future__ import annotations

import os
import re
import tempfile
import time

from napari_vae_anomaly.io import atomic
from napari_vae_anomaly.io.atomic import TEMP_SUFFIX, clean_stale_temps, temp_prefix

NOT_RUNNING = 2**22 + 7  # above Linux's largest pid: no process has it here


def _staging(folder, name: str, pid: int) -> str:
    """A staging folder as ``predict``'s writer makes it, as if made by process ``pid``."""
    prefix = temp_prefix(name).replace(f".{os.getpid()}-", f".{pid}-")
    return tempfile.mkdtemp(prefix=prefix, suffix=TEMP_SUFFIX, dir=folder)


def test_a_node_with_the_same_host_name_keeps_its_staging_folder(tmp_path, monkeypatch):
    real = atomic._machine_identity()
    hostname = real.splitlines()[0]
    # node B: the same host name, another machine (another boot id and pid namespace)
    monkeypatch.setattr(atomic, "_machine_identity",
                        lambda: f"{hostname}\nanother-boot-id\npid:[4026531999]")
    theirs = _staging(tmp_path, "case1_rec.nii.gz", NOT_RUNNING)  # live there, unknown here
    (tmp_path / os.path.basename(theirs) / "case1_rec.nii.gz").write_bytes(b"half written")
    monkeypatch.setattr(atomic, "_machine_identity", lambda: real)  # back on node A
    ours_dead = _staging(tmp_path, "case2_rec.nii.gz", NOT_RUNNING)  # a killed run here
    ours_live = _staging(tmp_path, "case3_rec.nii.gz", os.getpid())
    removed = clean_stale_temps(tmp_path)
    assert [p.name for p in removed] == [os.path.basename(ours_dead)]
    assert os.path.isdir(theirs) and os.path.isdir(ours_live)
    assert (tmp_path / os.path.basename(theirs) / "case1_rec.nii.gz").read_bytes() == (
        b"half written")
    old = time.time() - 2 * atomic.FOREIGN_AGE_S  # a day later it is a leftover too
    os.utime(theirs, (old, old))
    assert [p.name for p in clean_stale_temps(tmp_path)] == [os.path.basename(theirs)]
    assert os.path.isdir(ours_live)


def test_tags_name_the_machine_and_older_names_are_still_recognised(tmp_path):
    tag = re.search(r"\.\d+-([0-9a-f]+)\.$", temp_prefix("m.nii.gz")).group(1)
    assert len(tag) == 12
    legacy = tmp_path / f".m.nii.gz.{NOT_RUNNING}-0a1b2c.k3.tmp"  # 6 digits: an older version
    legacy.mkdir()
    assert clean_stale_temps(tmp_path) == [] and legacy.exists()  # another host's, recent
    old = time.time() - 2 * atomic.FOREIGN_AGE_S
    os.utime(legacy, (old, old))
    assert clean_stale_temps(tmp_path) == [legacy] and not legacy.exists()
