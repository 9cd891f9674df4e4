#!/usr/bin/env bash
# Turn a fresh Raspberry Pi OS Lite (bookworm) into an onetap rating kiosk.
#
#   sudo deploy/pi/setup.sh --config kiosk.toml [--ca-file ca.crt] [--source DIR|WHEEL|SPEC]
#        [--wheelhouse DIR] [--ntp SERVER[,SERVER]] [--rotate 0|90|180|270]
#
# NTP servers come from --ntp, else from kiosk.toml's `ntp` key.
#
# kiosk.toml comes from `onetap-server provision --site S --terminal T ...` on
# the server (docs/deploy.md). Safe to run again: every step checks before it
# changes anything, so a re-run upgrades the app and re-installs the config.
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: setup.sh [--config FILE] [--ca-file FILE] [--source DIR|WHEEL|SPEC]
                [--wheelhouse DIR] [--ntp SERVERS] [--rotate DEGREES] [--no-apt]
                [--show-ntp]

  --config FILE     kiosk.toml from `onetap-server provision` (installed as
                    /etc/onetap/kiosk.toml, root only); needed on the first run
  --ca-file FILE    the CA certificate for an mqtts:// broker (/etc/onetap/ca.crt)
  --source X        what to pip-install (default: this repository's checkout)
  --wheelhouse DIR  closed network: install from the wheels in DIR only, never
                    from PyPI (docs/deploy.md, "A closed network")
  --ntp SERVERS     the institution's NTP servers, comma-separated (timesyncd);
                    without it, the `ntp` list in kiosk.toml; without both, the
                    distribution's pool (needs the internet)
  --show-ntp        print the timesyncd drop-in these settings give, change nothing
  --rotate DEGREES  turn the screen: 0 (default), 90, 180 or 270 clockwise
  --no-apt          skip apt-get (packages already installed, or offline)
USAGE
}

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_dir="$(cd "${script_dir}/../.." && pwd)"
source_spec="${repo_dir}"
config=""
ca_file=""
wheelhouse=""
ntp_servers=""
rotate=0
use_apt=1
show_ntp=0

while (($#)); do
    case "$1" in
        --config) config="${2:?--config needs a file}"; shift 2 ;;
        --ca-file) ca_file="${2:?--ca-file needs a file}"; shift 2 ;;
        --source) source_spec="${2:?--source needs a directory, wheel or spec}"; shift 2 ;;
        --wheelhouse) wheelhouse="${2:?--wheelhouse needs a directory}"; shift 2 ;;
        --ntp) ntp_servers="${2:?--ntp needs one or more servers}"; shift 2 ;;
        --rotate) rotate="${2:?--rotate needs 0, 90, 180 or 270}"; shift 2 ;;
        --no-apt) use_apt=0; shift ;;
        --show-ntp) show_ntp=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "setup.sh: error: unknown argument $1" >&2; usage >&2; exit 1 ;;
    esac
done

case "${rotate}" in
    0 | 90 | 180 | 270) ;;
    *) echo "setup.sh: error: --rotate ${rotate}: give 0, 90, 180 or 270" >&2; exit 1 ;;
esac
if [ -n "${wheelhouse}" ] && [ ! -d "${wheelhouse}" ]; then
    echo "setup.sh: error: --wheelhouse ${wheelhouse}: not a directory" >&2
    exit 1
fi
ntp_origin="--ntp"
kiosk_toml="${config:-/etc/onetap/kiosk.toml}"
if [ -z "${ntp_servers}" ] && [ -r "${kiosk_toml}" ]; then
    # The `ntp` key of kiosk.toml (a list of host names or addresses); the
    # kiosk's own --check-config validates it again after installing.
    ntp_servers="$(python3 -c '
import sys, tomllib
with open(sys.argv[1], "rb") as fh:
    servers = tomllib.load(fh).get("ntp", [])
if not isinstance(servers, list) or not all(isinstance(s, str) for s in servers):
    sys.exit("ntp must be a list of host names or addresses")
print(",".join(servers))
' "${kiosk_toml}")" || { echo "setup.sh: error: ${kiosk_toml}: cannot read its ntp key" >&2; exit 1; }
    ntp_origin="${kiosk_toml}: ntp"
fi
if [[ -n "${ntp_servers}" && ! "${ntp_servers}" =~ ^[A-Za-z0-9.:-]+(,[A-Za-z0-9.:-]+)*$ ]]; then
    echo "setup.sh: error: ${ntp_origin} ${ntp_servers}: host names or addresses, comma-separated" >&2
    exit 1
fi
timesyncd_dropin() { printf '[Time]\nNTP=%s\n' "${ntp_servers//,/ }"; }
if ((show_ntp)); then
    if [ -n "${ntp_servers}" ]; then timesyncd_dropin; else echo "# no NTP servers: the distribution's pool"; fi
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: error: run as root (sudo $0 ...)" >&2
    exit 1
fi
for file in "${config}" "${ca_file}"; do
    if [ -n "${file}" ] && [ ! -r "${file}" ]; then
        echo "setup.sh: error: cannot read ${file}" >&2
        exit 1
    fi
done
if [ -z "${config}" ] && [ ! -f /etc/onetap/kiosk.toml ]; then
    echo "setup.sh: error: first run needs --config kiosk.toml (onetap-server provision)" >&2
    exit 1
fi

kiosk_user=onetap-kiosk
venv=/opt/onetap/venv
unit_src="${repo_dir}/deploy/systemd/onetap-kiosk.service"

step() { printf '\n== %s\n' "$*"; }

# -- packages ------------------------------------------------------------------
if ((use_apt)); then
    step "packages"
    packages=(
        python3 python3-venv python3-pip    # the app's venv
        cage xwayland                       # the kiosk session: one fullscreen app
        libgl1-mesa-dri libegl1 libgles2 libmtdev1  # Kivy's GPU and touch libraries
        fonts-noto-cjk fonts-nanum          # Hangul and CJK (Kivy's own font has none)
        systemd-timesyncd                   # NTP: a Pi has no real-time clock
        espeak-ng                           # voice guidance prompts, rendered once here
    )
    missing=()
    for package in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "${package}" 2>/dev/null | grep -q "ok installed" \
            || missing+=("${package}")
    done
    if ((${#missing[@]})); then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}"
    fi
    # GPIO buttons: Raspberry Pi OS ships lgpio for gpiozero; elsewhere it is optional.
    if ! dpkg-query -W -f='${Status}' python3-lgpio 2>/dev/null | grep -q "ok installed"; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-lgpio \
            || echo "setup.sh: note: python3-lgpio not available; GPIO buttons disabled" >&2
    fi
fi

# -- the kiosk user --------------------------------------------------------------
step "user ${kiosk_user}"
if ! id -u "${kiosk_user}" >/dev/null 2>&1; then
    useradd --system --home-dir "/var/lib/${kiosk_user}" --no-create-home \
        --shell /usr/sbin/nologin --user-group "${kiosk_user}"
fi
# Display, GPU, touchscreen, GPIO buttons and sound ([ui] sound = true); each
# group only where it exists.
for group in video render input gpio audio; do
    if getent group "${group}" >/dev/null; then
        usermod -a -G "${group}" "${kiosk_user}"
    fi
done

# -- the app -----------------------------------------------------------------------
step "app in ${venv}"
if [ ! -x "${venv}/bin/python" ]; then
    mkdir -p "$(dirname "${venv}")"
    # System site packages: python3-lgpio comes from apt, not PyPI.
    python3 -m venv --system-site-packages "${venv}"
fi
pip_args=(-q)
if [ -n "${wheelhouse}" ]; then
    # Closed network: nothing from PyPI; every wheel (Kivy's included) was
    # fetched on a connected machine with `pip download` for this Pi.
    pip_args+=(--no-index --find-links "${wheelhouse}")
else
    "${venv}/bin/pip" install -q --upgrade pip
fi
if [ -d "${source_spec}" ]; then
    "${venv}/bin/pip" install "${pip_args[@]}" --upgrade "${source_spec}[kiosk]"
    # The docs the units point at (Documentation=file:///opt/onetap/src/...).
    mkdir -p /opt/onetap/src
    cp -r "${source_spec}/docs" /opt/onetap/src/
elif [ -f "${source_spec}" ]; then
    "${venv}/bin/pip" install "${pip_args[@]}" --upgrade "${source_spec}[kiosk]"   # a wheel
else
    "${venv}/bin/pip" install "${pip_args[@]}" --upgrade "onetap[kiosk] @ ${source_spec}"
fi

# -- configuration -------------------------------------------------------------------
step "configuration in /etc/onetap"
install -d -m 0755 /etc/onetap
if [ -n "${config}" ]; then
    # Root only: systemd hands it to the service through LoadCredential=.
    install -m 0600 -o root -g root "${config}" /etc/onetap/kiosk.toml
fi
if [ -n "${ca_file}" ]; then
    install -m 0644 -o root -g root "${ca_file}" /etc/onetap/ca.crt
fi
# The terminal's signing key (docs/audit.md), written by provision beside kiosk.toml:
# handed to the service as a credential too, so key_file = "audit.key" is found
# beside the config. A drop-in only when there is a key: older configs have none.
if [ -n "${config}" ] && [ -f "$(dirname "${config}")/audit.key" ]; then
    install -m 0600 -o root -g root "$(dirname "${config}")/audit.key" /etc/onetap/audit.key
fi
if [ -f /etc/onetap/audit.key ]; then
    install -d -m 0755 /etc/systemd/system/onetap-kiosk.service.d
    printf '[Service]\nLoadCredential=audit.key:/etc/onetap/audit.key\n' \
        > /etc/systemd/system/onetap-kiosk.service.d/audit-key.conf
fi

# -- clock -----------------------------------------------------------------------------
step "NTP"
# Ratings carry clock_synced; without NTP a Pi restarts at its last saved time.
if [ -n "${ntp_servers}" ]; then
    # A closed network: the institution's own servers instead of the pool.
    install -d -m 0755 /etc/systemd/timesyncd.conf.d
    timesyncd_dropin > /etc/systemd/timesyncd.conf.d/onetap.conf
    systemctl restart systemd-timesyncd.service
fi
systemctl enable --now systemd-timesyncd.service
timedatectl set-ntp true

# -- screen ---------------------------------------------------------------------------
step "screen blanking off"
if command -v raspi-config >/dev/null; then
    raspi-config nonint do_blanking 1   # 1 = disable blanking
fi
for cmdline in /boot/firmware/cmdline.txt /boot/cmdline.txt; do
    if [ -f "${cmdline}" ]; then
        if ! grep -q 'consoleblank=0' "${cmdline}"; then
            # cmdline.txt is a single line: append to it, never add a line.
            sed -i '1 s/$/ consoleblank=0/' "${cmdline}"
        fi
        break
    fi
done

# -- the kiosk session -----------------------------------------------------------------
step "kiosk service"
install -m 0644 "${unit_src}" /etc/systemd/system/onetap-kiosk.service
# Screen rotation: cage turns its output 90 degrees clockwise per -r.
install -d -m 0755 /etc/systemd/system/onetap-kiosk.service.d
cage_rotate=""
for ((turn = 0; turn < rotate / 90; turn++)); do cage_rotate+=" -r"; done
printf '[Service]\nEnvironment=ONETAP_CAGE_ARGS=%s\n' "${cage_rotate# }" \
    > /etc/systemd/system/onetap-kiosk.service.d/display.conf
systemctl daemon-reload
# Boot to the console, not a desktop: the kiosk unit is the only session on tty1.
systemctl set-default multi-user.target
systemctl enable onetap-kiosk.service

step "checking /etc/onetap/kiosk.toml"
"${venv}/bin/onetap-kiosk" run --config /etc/onetap/kiosk.toml --check-config

step "voice guidance prompts"
runuser -u "${kiosk_user}" -- "${venv}/bin/onetap-kiosk" voices --config /etc/onetap/kiosk.toml \
    || echo "setup.sh: note: voice prompts not rendered; run onetap-kiosk voices later" >&2

echo
echo "Done. Reboot; the kiosk starts on the screen. Logs: journalctl -u onetap-kiosk -f"
