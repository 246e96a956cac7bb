#!/usr/bin/env bash
# Run a command with a display: the real one when DISPLAY is set, else a virtual X server.
set -euo pipefail
if [ -n "${DISPLAY:-}" ]; then
  exec "$@"
fi
export QT_QPA_PLATFORM=xcb
export NAPARI_VAE_ANOMALY_HEADLESS=${NAPARI_VAE_ANOMALY_HEADLESS:-1}
exec xvfb-run -a -s "-screen 0 1280x1024x24" "$@"
