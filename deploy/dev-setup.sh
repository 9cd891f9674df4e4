#!/usr/bin/env bash
# Set up a development / CI / demo machine (Debian 12 or Raspberry Pi OS bookworm):
# the system packages the app and its tests use, and a virtualenv in .venv with
# every extra. Idempotent: run it again at any time.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
    python3 python3-venv python3-pip   # the app
    mosquitto mosquitto-clients        # the broker (tests start private ones)
    xvfb xauth                         # the kiosk window in tests and screenshots
    libmtdev1 libgl1 libegl1 libgles2 libsdl2-2.0-0  # Kivy's runtime libraries
    fonts-noto-cjk                     # CJK fallback for zh/ja text
    chromium                           # the dashboard in headless browser tests
    shellcheck                         # lints deploy scripts in tests
    openssl                            # throwaway CAs for the TLS tests
    caddy                              # validates deploy/caddy/Caddyfile
    systemd                            # systemd-analyze verify on deploy units
)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" \
        || missing+=("$package")
done
if ((${#missing[@]})); then
    sudo_cmd=()
    if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}"
fi
# The distribution's broker service is not needed (and tests never use it).
python_bin="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$python_bin" -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e ".[kiosk,server,dev]"
