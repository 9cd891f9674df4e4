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
    libpango-1.0-0 libpangoft2-1.0-0   # WeasyPrint: the report's PDF
    poppler-utils                      # pdftotext/pdftoppm: tests read the report's PDF
    espeak-ng                          # voice guidance prompts (onetap-kiosk voices)
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

# PostgreSQL for the store and API tests on the second backend (tests/backends.py
# finds it through ONETAP_TEST_POSTGRES, default
# postgresql://postgres@127.0.0.1:5432/postgres, and creates and drops its own
# onetap_test_* database there). Use the server already running, else install
# and start the distribution's. Tests fail, not skip, without one.
if ! pg_isready -q -h 127.0.0.1 2>/dev/null; then
    sudo_cmd=()
    if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
    if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
        "${sudo_cmd[@]}" apt-get update -qq
        DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq postgresql
        fresh_cluster=1
    fi
    pg_version=$(find /etc/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n 1)
    "${sudo_cmd[@]}" pg_ctlcluster --skip-systemctl-redirect "$pg_version" main start || true
    for _ in $(seq 1 30); do
        pg_isready -q -h 127.0.0.1 && break
        sleep 1
    done
    pg_isready -h 127.0.0.1
    if [ "${fresh_cluster:-0}" = 1 ] && [ -z "${ONETAP_TEST_POSTGRES:-}" ]; then
        # A cluster installed just now for tests: let the postgres role in over
        # 127.0.0.1 without a password (Debian's default asks for one).
        hba="/etc/postgresql/$pg_version/main/pg_hba.conf"
        "${sudo_cmd[@]}" sed -i '1i host all postgres 127.0.0.1/32 trust' "$hba"
        "${sudo_cmd[@]}" pg_ctlcluster --skip-systemctl-redirect "$pg_version" main reload
    fi
fi
python_bin="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$python_bin" -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e ".[kiosk,server,dev]"
