"""deploy/: scripts pass shellcheck, units pass systemd-analyze, the Caddyfile and the bridge work."""

from __future__ import annotations

import os
import queue
import shutil
import stat
import subprocess
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.broker import Mosquitto

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
TIMERS = sorted((DEPLOY / "systemd").glob("*.timer"))
#: Every unit that runs onetap-server, the facility's and the central office's.
SERVER_UNITS = [DEPLOY / "systemd" / "onetap-server.service", *sorted((DEPLOY / "central").glob("*.service"))]
SCRIPTS = sorted(DEPLOY.rglob("*.sh"))


def need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} not installed here (apt-get install {package})")
    return path


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_scripts_pass_shellcheck(script):
    need("shellcheck", "shellcheck")
    result = subprocess.run(["shellcheck", "--severity=style", str(script)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    text = script.read_text()
    assert "set -euo pipefail" in text
    assert stat.S_IMODE(script.stat().st_mode) & 0o111, f"{script} is not executable"


def test_pi_setup_stops_before_changing_anything_without_a_config(tmp_path):
    setup = DEPLOY / "pi" / "setup.sh"
    assert subprocess.run(["bash", str(setup), "--help"], capture_output=True).returncode == 0
    wrong = subprocess.run(["bash", str(setup), "--bogus"], capture_output=True, text=True)
    assert wrong.returncode == 1 and "unknown argument --bogus" in wrong.stderr
    missing = subprocess.run(["bash", str(setup), "--config", str(tmp_path / "nope.toml")],
                             capture_output=True, text=True)
    assert missing.returncode == 1
    assert "cannot read" in missing.stderr or "run as root" in missing.stderr
    if os.geteuid() == 0 and not Path("/etc/onetap/kiosk.toml").exists():
        first = subprocess.run(["bash", str(setup), "--no-apt"], capture_output=True, text=True)
        assert first.returncode == 1 and "first run needs --config" in first.stderr


def test_units_pass_systemd_analyze_verify(tmp_path):
    need("systemd-analyze", "systemd")
    # The venv exists only on a deployed machine: point at stand-ins so that
    # verify still checks that every ExecStart names an executable.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("onetap-server", "onetap-kiosk"):
        stub = bin_dir / name
        stub.write_text("#!/bin/sh\n")
        stub.chmod(0o755)
    copies = []
    for unit in sorted(set(UNITS) | set(SERVER_UNITS) | set(TIMERS)):
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text().replace("/opt/onetap/venv/bin/", f"{bin_dir}/"))
        copies.append(str(copy))
    result = subprocess.run(["systemd-analyze", "verify", *copies],
                            capture_output=True, text=True)
    ours = [line for line in (result.stdout + result.stderr).splitlines()
            if str(tmp_path) in line or any(u.name in line for u in (*UNITS, *SERVER_UNITS, *TIMERS))]
    assert result.returncode == 0 and not ours, result.stdout + result.stderr


@pytest.mark.parametrize("unit", SERVER_UNITS, ids=lambda p: p.name)
def test_server_units_use_the_watchdog_and_give_sigterm_its_time(unit):
    from server.config import ServerConfig

    lines = {line.split("=", 1)[0]: line.split("=", 1)[1]
             for line in unit.read_text().splitlines() if "=" in line and not line.startswith("#")}
    # The server sends READY=1 and WATCHDOG=1 itself (server/watchdog.py), from its main process.
    assert lines["Type"] == "notify" and lines["NotifyAccess"] == "main"
    watchdog_s = int(lines["WatchdogSec"])
    # Petted every WatchdogSec/3 while healthy; a stuck ingest is seen after
    # ingest_stall_s and the process restarted at most WatchdogSec later.
    assert ServerConfig().ingest_stall_s <= watchdog_s <= 60
    # SIGTERM ends the process within 10 s (tests/test_health.py); systemd waits a little longer.
    assert 10 < int(lines["TimeoutStopSec"]) <= 30
    assert lines["KillSignal"] == "SIGTERM" and lines["Restart"] == "always"
    assert "AF_UNIX" in lines["RestrictAddressFamilies"]  # $NOTIFY_SOCKET is a unix socket


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_units_are_hardened_and_take_secrets_as_credentials(unit):
    lines = {line.split("=", 1)[0]: line.split("=", 1)[1]
             for line in unit.read_text().splitlines() if "=" in line and not line.startswith("#")}
    if lines.get("Type") != "oneshot":  # a one-shot job (the backup) is run again by its timer
        assert lines["Restart"] == "always"
    assert lines["NoNewPrivileges"] == "yes"
    assert lines["ProtectSystem"] == "strict"
    assert lines["PrivateTmp"] == "yes"
    assert lines["User"] not in ("root", "0")
    assert lines["LoadCredential"].startswith(("kiosk.toml:", "server.toml:"))
    assert "%d/" in lines["ExecStart"]  # the config is read from the credential
    assert lines["ReadWritePaths"] == f"/var/lib/{lines['StateDirectory'].split()[0]}"


def test_sysusers_creates_the_server_user_and_setup_sh_the_kiosk_user(tmp_path):
    need("systemd-sysusers", "systemd")
    (tmp_path / "etc").mkdir()
    subprocess.run(["systemd-sysusers", f"--root={tmp_path}",
                    str(DEPLOY / "systemd" / "onetap.sysusers.conf")],
                   check=True, capture_output=True)
    users = {line.split(":")[0]: line.split(":")[6]
             for line in (tmp_path / "etc" / "passwd").read_text().splitlines()}
    owners = {u.name: u.read_text().split("\nUser=")[1].split("\n")[0] for u in UNITS}
    kiosk_user = owners.pop("onetap-kiosk.service")
    # The server machine gets only the server's user, with no login shell.
    assert set(owners.values()) == {"onetap"} and set(users) == {"onetap"}
    assert users["onetap"] == "/usr/sbin/nologin"
    # The kiosk's user is made on the Pi by setup.sh.
    setup = (DEPLOY / "pi" / "setup.sh").read_text()
    assert f"kiosk_user={kiosk_user}" in setup and "--shell /usr/sbin/nologin" in setup


def test_setup_sh_refuses_bad_closed_network_and_display_options():
    setup = DEPLOY / "pi" / "setup.sh"
    for argv, message in ((["--rotate", "45"], "give 0, 90, 180 or 270"),
                          (["--wheelhouse", "/nonexistent"], "not a directory"),
                          (["--ntp", "ntp.example;reboot"], "comma-separated")):
        result = subprocess.run(["bash", str(setup), *argv], capture_output=True, text=True)
        assert result.returncode == 1 and message in result.stderr, result.stderr


def test_the_kiosk_unit_lets_the_app_read_the_clock_state():
    """ProtectClock= filters adjtimex() even for reading (EPERM): the kiosk's
    clock_synced would then rest on a fallback."""
    unit = (DEPLOY / "systemd" / "onetap-kiosk.service").read_text()
    settings = [line for line in unit.splitlines() if not line.startswith("#")]
    assert not any(line.startswith("ProtectClock=") for line in settings)
    assert "CapabilityBoundingSet=" in settings  # and still no CAP_SYS_TIME


def test_caddyfile_is_valid():
    caddy = need("caddy", "caddy")
    result = subprocess.run([caddy, "validate", "--adapter", "caddyfile",
                             "--config", str(DEPLOY / "caddy" / "Caddyfile")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "reverse_proxy 127.0.0.1:8080" in (DEPLOY / "caddy" / "Caddyfile").read_text()


def _client(port: int) -> tuple[mqtt.Client, queue.Queue]:
    messages: queue.Queue = queue.Queue()
    connected: queue.Queue = queue.Queue()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.on_connect = lambda c, u, f, rc, p: connected.put(rc)
    client.on_message = lambda c, u, m: messages.put((m.topic, m.payload))
    client.connect("127.0.0.1", port)
    client.loop_start()
    assert not connected.get(timeout=10).is_failure
    return client, messages


def test_bridge_forwards_ratings_out_and_acks_in(tmp_path):
    need("mosquitto", "mosquitto")
    central = Mosquitto(tmp_path / "central").start()
    settings = []
    for line in (DEPLOY / "mosquitto" / "onetap-bridge.conf.example").read_text().splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "address":
            line = f"address 127.0.0.1:{central.port}"
        elif words[0] in ("bridge_cafile", "bridge_insecure"):
            continue  # the test's central broker speaks plain MQTT on loopback
        settings.append(line)
    site = Mosquitto(tmp_path / "site", extra="\n".join(settings)).start()
    try:
        central_client, at_central = _client(central.port)
        site_client, at_site = _client(site.port)
        central_client.subscribe("onetap/v1/#", qos=1)
        site_client.subscribe("onetap/v1/#", qos=1)
        # The bridge connects on its own schedule: wait for its retained state.
        central_client.subscribe("$SYS/broker/connection/+/state", qos=1)
        while True:
            state_topic, payload = at_central.get(timeout=10)
            if state_topic.endswith("/bridge-gangnam-office/state") and payload == b"1":
                break
        site_client.publish("onetap/v1/seocho-office/a/ratings", b"other site", qos=1)
        site_client.publish("onetap/v1/gangnam-office/a/ratings", b"batch", qos=1)
        # In order over one bridge: had the other site's batch crossed, it would come first.
        assert at_central.get(timeout=10) == ("onetap/v1/gangnam-office/a/ratings", b"batch")
        central_client.publish("onetap/v1/seocho-office/a/ack", b"not ours", qos=1)
        central_client.publish("onetap/v1/gangnam-office/a/ack", b"ack", qos=1)
        seen = []
        while (message := at_site.get(timeout=10)) != ("onetap/v1/gangnam-office/a/ack", b"ack"):
            seen.append(message)
        # Another site's traffic never crossed, in either direction.
        assert ("onetap/v1/seocho-office/a/ack", b"not ours") not in seen
        for client in (central_client, site_client):
            client.disconnect()
            client.loop_stop()
    finally:
        site.stop()
        central.stop()


def test_the_server_unit_leaves_db_and_listen_to_server_toml():
    """The unit once passed --db and --listen, which silently replaced a
    PostgreSQL `db` in server.toml by SQLite: the config file is the one source."""
    for path in [DEPLOY / "systemd" / "onetap-server.service",
                 *sorted((DEPLOY / "central").glob("*.service"))]:
        exec_start = next(line for line in path.read_text().splitlines()
                          if line.startswith("ExecStart="))
        for flag in ("--db", "--listen", "--broker", "--api-token", "--role"):
            assert flag not in exec_start, f"{path.name} overrides the config with {flag}"
    unit = (DEPLOY / "systemd" / "onetap-server.service").read_text()
    from server.config import ServerConfig

    default = ServerConfig().db
    assert default.is_absolute() and str(default) == "/var/lib/onetap/onetap.db"
    assert f"ReadWritePaths={default.parent}" in unit


def test_setup_sh_takes_the_ntp_servers_from_kiosk_toml_unless_ntp_is_given(tmp_path):
    setup = DEPLOY / "pi" / "setup.sh"
    kiosk_toml = tmp_path / "kiosk.toml"
    kiosk_toml.write_text('site = "s"\nntp = ["ntp1.gov.example", "10.0.0.5"]\n')

    def show(*argv):
        return subprocess.run(["bash", str(setup), "--config", str(kiosk_toml), "--show-ntp", *argv],
                              capture_output=True, text=True)

    assert show().stdout == "[Time]\nNTP=ntp1.gov.example 10.0.0.5\n"
    assert show("--ntp", "time.example").stdout == "[Time]\nNTP=time.example\n"
    kiosk_toml.write_text('site = "s"\n')
    assert show().stdout.startswith("# no NTP servers")
    kiosk_toml.write_text('ntp = ["ntp.example;reboot"]\n')
    refused = show()
    assert refused.returncode == 1 and "kiosk.toml: ntp" in refused.stderr
