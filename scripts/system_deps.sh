#!/usr/bin/env bash
# Make sure the system packages napari needs to render under a virtual X server are present.
# Installs them when running as root; otherwise says which ones to install.
set -euo pipefail
PKGS=(xvfb xauth libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0
      libxkbcommon-x11-0 libxcb-xinerama0 libxcb-randr0 libxcb-shape0 libxcb-cursor0
      libgl1 libegl1 libfontconfig1 libdbus-1-3)
command -v dpkg-query >/dev/null 2>&1 || { echo "system_deps: not a Debian system; make sure Xvfb and the xcb libraries are installed"; exit 0; }
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = "0" ]; then
  echo "system_deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "system_deps: missing system packages: ${missing[*]}"
  echo "system_deps: install them with: sudo apt-get install ${missing[*]}"
  [ -n "${DISPLAY:-}" ] || exit 1
fi
