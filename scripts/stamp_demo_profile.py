"""Add the training data profile to the bundled demo model's card, without retraining.

The demo model (``scripts/train_demo_model.py``) was trained before training recorded a data
profile (``training.data.profile``, see ``napari_vae_anomaly.models.domain``). This script
rebuilds the same 24 training subjects (same seeds), computes their profile exactly as
training now does, and rewrites only the card in the checkpoint's safetensors header: the
tensor data block is copied verbatim, so every weight stays byte-identical. It checks that
(sha256 of the data block, and every tensor compared byte for byte after reloading) before
replacing the file, and refuses to change anything else in the card.

    .venv/bin/python scripts/stamp_demo_profile.py            # stamps the bundled model
    .venv/bin/python scripts/stamp_demo_profile.py --check    # only prints the profile
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import struct
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_demo_model import DEFAULT_OUT, SEEDS  # noqa: E402 - the script next to this one


def demo_profile() -> dict[str, Any]:
    """The data profile of the demo model's training subjects (what training records)."""
    from napari_vae_anomaly.data.realistic import make_subject
    from napari_vae_anomaly.models.domain import data_profile, volume_profile

    profiles = []
    for seed in SEEDS:
        volume = make_subject(seed, ()).volume
        profiles.append(volume_profile(volume.data, volume.geometry.scale))
    return data_profile(profiles)


def split_file(raw: bytes) -> tuple[dict[str, Any], bytes]:
    """(header JSON, tensor data block) of a safetensors file."""
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n].decode("utf-8")), raw[8 + n :]


def join_file(header: dict[str, Any], data: bytes) -> bytes:
    """A safetensors file from a header and a data block (header padded to 8 bytes)."""
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def stamped(raw: bytes, profile: dict[str, Any]) -> bytes:
    """``raw`` with ``profile`` as ``training.data.profile`` of its card; nothing else changed."""
    header, data = split_file(raw)
    card = json.loads(header["__metadata__"]["card"])
    card["training"]["data"]["profile"] = profile
    header["__metadata__"]["card"] = json.dumps(card)
    return join_file(header, data)


def verify(old: bytes, new: bytes, path: Path) -> None:
    """Same data block, same tensors byte for byte, same card apart from the profile."""
    from safetensors.numpy import load

    (h_old, d_old), (h_new, d_new) = split_file(old), split_file(new)
    assert hashlib.sha256(d_old).digest() == hashlib.sha256(d_new).digest(), "data block changed"
    t_old, t_new = load(old), load(new)
    assert t_old.keys() == t_new.keys()
    for key in t_old:
        assert t_old[key].tobytes() == t_new[key].tobytes(), f"tensor {key} changed"
    c_old = json.loads(h_old["__metadata__"]["card"])
    c_new = json.loads(h_new["__metadata__"]["card"])
    c_new["training"]["data"].pop("profile")
    c_old["training"]["data"].pop("profile", None)
    assert c_old == c_new, "the card changed beyond the profile"
    from napari_vae_anomaly.models.checkpoint import load_checkpoint

    with tempfile.TemporaryDirectory() as tmp:  # the package's own loader accepts it
        probe = Path(tmp) / path.name
        probe.write_bytes(new)
        load_checkpoint(probe)
    print(f"verified: {len(t_new)} tensors byte-identical, data block sha256 "
          f"{hashlib.sha256(d_new).hexdigest()[:16]}..., card unchanged but for the profile")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=DEFAULT_OUT)
    p.add_argument("--check", action="store_true", help="print the profile, change nothing")
    args = p.parse_args(argv)
    profile = demo_profile()
    print(json.dumps(profile, indent=1))
    if args.check:
        return 0
    old = args.model.read_bytes()
    new = stamped(old, profile)
    verify(old, new, args.model)
    tmp = args.model.with_suffix(".stamping")
    tmp.write_bytes(new)
    os.chmod(tmp, 0o644)
    os.replace(tmp, args.model)
    print(f"wrote {args.model} ({len(old)} -> {len(new)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
