"""One node of a simulated cluster for tests/test_predict_multinode.py: run under ``torchrun``
like ``-m napari_vae_anomaly``, with faults the test asks for through its environment.

Test-only (the package never reads these variables):
``NVA_TEST_HOST``: the host name this process reports, so each simulated node tags its
temporaries as a host of its own (:mod:`napari_vae_anomaly.io.atomic`);
``NVA_TEST_SLOW``: ``rank:seconds``: every case of that rank takes that much longer (a slow
node);
``NVA_TEST_SKEW``: a rank whose own threshold calibration would give other values (as on
another device), to show that every rank uses rank 0's;
``NVA_TEST_DIE``: the rank whose process is killed (SIGKILL) when its second case starts, as
on a node that died mid-run.
"""

from __future__ import annotations

import os
import socket
import sys
import time


def _patch() -> None:
    rank = int(os.environ.get("RANK", "0"))
    host = os.environ.get("NVA_TEST_HOST")
    if host:
        socket.gethostname = lambda: host
    import napari_vae_anomaly.detection as detection

    real = detection.detect
    slow = os.environ.get("NVA_TEST_SLOW", "")
    delay = float(slow.split(":")[1]) if slow and int(slow.split(":")[0]) == rank else 0.0
    die = os.environ.get("NVA_TEST_DIE", "") == str(rank)
    done = []

    def detect(*args, **kwargs):
        if die and done:
            os.kill(os.getpid(), 9)  # the process dies, mid-cohort, with its heartbeat
        time.sleep(delay)
        out = real(*args, **kwargs)
        done.append(1)
        return out

    detection.detect = detect
    if os.environ.get("NVA_TEST_SKEW", "") == str(rank):
        calibrate = detection.calibrate

        def skewed(*args, **kwargs):
            from dataclasses import replace

            found = calibrate(*args, **kwargs)
            return replace(found, values={k: v * 0.5 for k, v in found.values.items()})

        detection.calibrate = skewed


if __name__ == "__main__":
    _patch()
    from napari_vae_anomaly.cli.main import main

    sys.exit(main())
