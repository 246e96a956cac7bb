"""Shared fixtures: small deterministic data and a quiet torch."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("NAPARI_VAE_ANOMALY_TESTING", "1")


@pytest.fixture(autouse=True)
def _torch_threads():
    """Tiny models on a shared 2-core machine: one torch thread is several times faster."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def oblique_geometry():
    """Anisotropic, non-zero origin, oblique (rotated about z and x) 3-D geometry."""
    from napari_vae_anomaly.io import Geometry

    a, b = np.deg2rad(20.0), np.deg2rad(-12.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    d = rz @ rx
    return Geometry((0.9, 1.1, 3.0), (-91.5, 12.25, 40.0), tuple(d.ravel()))


@pytest.fixture
def notes(monkeypatch):
    """Capture every napari notification the widgets send, by severity."""
    from napari.utils import notifications

    seen: dict[str, list[str]] = {"info": [], "warning": [], "error": []}
    monkeypatch.setattr(notifications, "show_info", lambda m: seen["info"].append(str(m)))
    monkeypatch.setattr(notifications, "show_warning", lambda m: seen["warning"].append(str(m)))
    monkeypatch.setattr(notifications, "show_error", lambda m: seen["error"].append(str(m)))
    return seen


@pytest.fixture
def records():
    """Notifications napari itself received (through its notification manager), as
    ``(severity, message)`` pairs: for code paths that use napari's own reporting."""
    from napari.utils.notifications import notification_manager

    notification_manager.records.clear()
    yield lambda: [(str(n.severity), n.message) for n in notification_manager.records]
    notification_manager.records.clear()
