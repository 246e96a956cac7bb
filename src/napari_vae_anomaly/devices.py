"""Choosing the compute device and giving its memory back.

``auto`` prefers CUDA, then Apple MPS, then the CPU. An explicit device that is not present is a
user error (:class:`~napari_vae_anomaly.errors.DeviceError`) naming what *is* available, so a
typo or a missing driver is reported instead of silently training on the CPU.

A top-level module (not under ``training/``) because loading a model, predicting and training
all choose a device; ``training.devices`` re-exports it for older imports.
"""

from __future__ import annotations

import gc
from typing import Any

import torch

from .errors import DeviceError

DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def available_devices() -> list[str]:
    """Devices usable now, best first: ``cuda:0``, ``cuda:1``, ..., ``mps``, ``cpu``."""
    devices: list[str] = []
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        devices.append("mps")
    devices.append("cpu")
    return devices


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """Turn ``auto``/``cpu``/``cuda``/``cuda:N``/``mps`` into an available :class:`torch.device`."""
    if isinstance(name, torch.device):
        name = str(name)
    text = (name or "auto").strip().lower()
    if text == "auto":
        return torch.device(available_devices()[0])
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise DeviceError(
            f"unknown device {name!r}: use one of auto, cpu, cuda, cuda:N, mps "
            f"(available here: {', '.join(available_devices())})"
        ) from None
    ok = True
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = 0 if device.index is None else device.index
        ok = index < count
        if ok and device.index is None:
            device = torch.device("cuda", 0)
    elif device.type == "mps":
        ok = _mps_available()
    elif device.type != "cpu":
        ok = False
    if not ok:
        raise DeviceError(
            f"device {name!r} is not available on this machine "
            f"(available: {', '.join(available_devices())})"
        )
    return device


def release_model(model: Any) -> None:
    """Move a model off the accelerator and return cached memory to the driver.

    Called when a model is replaced or unloaded, so a GUI session does not keep GPU memory.
    Accepts an ``nn.Module`` or anything with a ``.model`` attribute (a loaded checkpoint).
    """
    module = getattr(model, "model", model)
    if isinstance(module, torch.nn.Module):
        module.cpu()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if _mps_available() and hasattr(torch, "mps"):
        try:
            torch.mps.empty_cache()
        except RuntimeError:  # pragma: no cover - MPS quirks
            pass
