"""onetap-kiosk simulate, run as the real command against a real mosquitto."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from kiosk.simulator import outbox_path, terminal_ids
from tests.broker import Mosquitto, free_port
from tests.kiosk.test_uplink import Peer
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
EXE = ROOT / ".venv" / "bin" / "onetap-kiosk"
COMMAND = [str(EXE)] if EXE.exists() else [sys.executable, "-m", "kiosk"]


def simulate(*args: str, timeout: float = 60) -> tuple[int, dict | None, str]:
    done = subprocess.run([*COMMAND, "simulate", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
    lines = done.stdout.strip().splitlines()
    assert len(lines) <= 1, done.stdout
    return done.returncode, json.loads(lines[0]) if lines else None, done.stderr


def seqs_in(data_dir: Path, site: str, terminal: str) -> list[int]:
    with sqlite3.connect(outbox_path(data_dir, site, terminal)) as conn:
        return [r[0] for r in conn.execute("SELECT seq FROM ratings ORDER BY seq")]


def test_simulate_delivers_every_tap_once(mosquitto, tmp_path):
    peer = Peer(mosquitto)
    try:
        code, result, err = simulate("--broker", mosquitto.url, "--site", "sim-site",
                                     "--terminals", "2", "--taps", "300",
                                     "--data-dir", str(tmp_path / "d"))
        assert code == 0, err
        assert result["taps"] == 600 and result["confirmed"] == 600 and result["pending"] == 0
        assert result["seconds"] > 0
        assert "simulate:" in err  # progress on stderr
        for terminal in terminal_ids(2):
            assert sorted(set(peer.received(terminal))) == list(range(1, 301))
        # Some low scores came with follow-up answers, through hold/annotate/release.
        reasons = [r.reason for b in peer.batches for r in b.ratings if r.reason]
        assert reasons
        # Ran again: nothing to tap or send, still all confirmed.
        code, result, _ = simulate("--broker", mosquitto.url, "--site", "sim-site",
                                   "--terminals", "2", "--taps", "300",
                                   "--data-dir", str(tmp_path / "d"))
        assert (code, result["taps"], result["pending"]) == (0, 600, 0)
    finally:
        peer.close()


def test_offline_terminals_keep_tapping_then_drain(tmp_path):
    port = free_port()
    url = f"mqtt://127.0.0.1:{port}"
    data = tmp_path / "d"
    code, result, err = simulate("--broker", url, "--site", "s", "--terminals", "2",
                                 "--taps", "50", "--data-dir", str(data), "--timeout", "0.5")
    assert code == 1
    assert result == {"taps": 100, "confirmed": 0, "pending": 100, "seconds": result["seconds"]}
    broker = Mosquitto(tmp_path / "broker", port=port).start()
    peer = Peer(broker)
    try:
        code, result, err = simulate("--broker", url, "--site", "s", "--terminals", "2",
                                     "--taps", "0", "--data-dir", str(data), "--timeout", "30")
        assert code == 0, err
        assert (result["taps"], result["confirmed"], result["pending"]) == (100, 100, 0)
        for terminal in terminal_ids(2):
            assert sorted(set(peer.received(terminal))) == list(range(1, 51))
    finally:
        peer.close()
        broker.stop()


def test_kill_9_mid_burst_then_resume(mosquitto, tmp_path):
    peer = Peer(mosquitto)
    data = tmp_path / "d"
    args = ["--broker", mosquitto.url, "--site", "s", "--terminals", "2", "--taps", "2000",
            "--data-dir", str(data)]
    try:
        proc = subprocess.Popen([*COMMAND, "simulate", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, cwd=ROOT)
        first = outbox_path(data, "s", "sim-001")

        def some_taps() -> bool:
            try:
                with sqlite3.connect(first, timeout=5) as conn:
                    return conn.execute("SELECT count(*) FROM ratings").fetchone()[0] >= 200
            except sqlite3.OperationalError:
                return False

        wait_for(some_taps, "taps before the kill", timeout=30)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.stdout.read() == b""  # killed before its final line
        partial = seqs_in(data, "s", "sim-001")
        assert 200 <= len(partial) < 2000, "kill came too late to test a resume"
        code, result, err = simulate(*args)
        assert code == 0, err
        assert (result["taps"], result["confirmed"], result["pending"]) == (4000, 4000, 0)
        for terminal in terminal_ids(2):
            assert seqs_in(data, "s", terminal) == list(range(1, 2001))
            assert sorted(set(peer.received(terminal))) == list(range(1, 2001))
    finally:
        peer.close()


def test_rate_paces_taps(mosquitto, tmp_path):
    peer = Peer(mosquitto)
    try:
        code, result, _ = simulate("--broker", mosquitto.url, "--site", "s", "--terminals", "1",
                                   "--taps", "5", "--rate", "20", "--data-dir", str(tmp_path))
        assert code == 0 and result["taps"] == 5
        # 5 taps at 20/s take at least 4 intervals.
        assert result["seconds"] >= 0.2
    finally:
        peer.close()


@pytest.mark.parametrize("args, message", [
    (["--broker", "http://x", "--site", "s", "--terminals", "1", "--taps", "1"], "--broker"),
    (["--broker", "mqtt://127.0.0.1:1", "--site", "Bad Site", "--terminals", "1", "--taps", "1"], "site"),
    (["--broker", "mqtt://127.0.0.1:1", "--site", "s", "--terminals", "0", "--taps", "1"], "--terminals"),
    (["--broker", "mqtt://127.0.0.1:1", "--site", "s", "--terminals", "1", "--taps", "-1"], "--taps"),
])
def test_bad_arguments_exit_1_with_a_clear_error(tmp_path, args, message):
    code, result, err = simulate(*args, "--data-dir", str(tmp_path))
    assert code == 1 and result is None
    assert err.startswith("onetap-kiosk: error:") and message in err


def test_unwritable_data_dir_is_an_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code, result, err = simulate("--broker", "mqtt://127.0.0.1:1", "--site", "s", "--terminals", "1",
                                 "--taps", "1", "--data-dir", str(blocker / "d"))
    assert code == 1 and "onetap-kiosk: error:" in err


# -- a provisioned terminal (--config) against the facility's broker: accounts, ACL, TLS ------------

FACILITY, NEIGHBOUR = "gangnam-office", "seocho-office"


@pytest.fixture
def facility(tmp_path, pki):
    """The deploy broker settings (password file, ACL, use_username_as_clientid, TLS) and provisioned accounts."""
    from server import provision
    from tests.broker import wait_for_port
    from tests.deploy.test_broker_security import secure_settings

    passwd, acl = tmp_path / "onetap.passwd", tmp_path / "onetap.acl"
    tls_port = free_port()
    broker = Mosquitto(tmp_path / "broker", anonymous=False,
                       extra=secure_settings(passwd, acl, pki, tls_port))
    tls_url = f"mqtts://localhost:{tls_port}"
    kiosks = {site: provision.provision_terminal(site, "counter-01", tls_url, passwd, acl,
                                                 tmp_path / f"kiosk-{site}", ca_file=str(pki.ca))
              for site in (FACILITY, NEIGHBOUR)}
    service = provision.provision_service("onetap-server", passwd, acl, tmp_path / "server",
                                          broker=broker.url)
    broker.start()
    wait_for_port(tls_port)
    yield {"broker": broker, "kiosks": kiosks, "service": service}
    broker.stop()


def edited(config: Path, tmp_path: Path, name: str, **changes: str) -> Path:
    """A copy of a provisioned kiosk.toml with some top-level or [mqtt] string values changed."""
    text = config.read_text()
    for key, value in changes.items():
        text, count = re.subn(rf'(?m)^{key} = ".*"$', f'{key} = "{value}"', text)
        assert count == 1, key
    out = tmp_path / name
    out.write_text(text)
    key = config.parent / "audit.key"  # [audit] key_file is read beside the config
    if key.exists():
        (tmp_path / "audit.key").write_bytes(key.read_bytes())
        (tmp_path / "audit.key").chmod(0o600)
    return out


def test_simulate_config_is_the_provisioned_terminal_through_tls_acl_and_the_registry(facility, tmp_path):
    from tests.server_process import TOKEN, ServerProcess

    server = ServerProcess(facility["broker"], tmp_path,
                           args=("--config", str(facility["service"].config_path))).start()
    try:
        data = tmp_path / "d"
        runs = [simulate("--config", str(facility["kiosks"][site].config_path), "--taps", "15",
                         "--data-dir", str(data / site)) for site in (FACILITY, NEIGHBOUR)]
        for code, result, err in runs:
            assert code == 0, err
            assert (result["taps"], result["confirmed"], result["pending"]) == (15, 15, 0)
            assert "refused" not in err
        # The terminal's own name and site, not sim-NNN; its outbox under --data-dir.
        assert seqs_in(data / FACILITY, FACILITY, "counter-01") == list(range(1, 16))
        # Counted by the server (its registry is the ACL file) for each site's counter-01.
        for site in (FACILITY, NEIGHBOUR):
            request = urllib.request.Request(f"http://127.0.0.1:{server.port}/api/v1/summary?site={site}",
                                             headers={"Authorization": f"Bearer {TOKEN}"})
            with urllib.request.urlopen(request, timeout=10) as response:
                assert json.load(response)["count"] == 15, site
    finally:
        server.stop()


def test_simulate_config_refuses_two_terminals_on_one_account(facility, tmp_path):
    code, result, err = simulate("--config", str(facility["kiosks"][FACILITY].config_path),
                                 "--terminals", "2", "--taps", "1", "--data-dir", str(tmp_path / "d"))
    assert code == 1 and result is None
    assert err.startswith("onetap-kiosk: error: --config is one provisioned terminal (gangnam-office/counter-01)")
    assert "session over" in err and not (tmp_path / "d").exists()


def test_simulate_says_why_the_broker_refuses_a_terminal(facility, tmp_path):
    config = facility["kiosks"][FACILITY].config_path
    cases = {
        "a wrong password": (edited(config, tmp_path, "bad.toml", password="not-the-password"),
                             "the broker refused the connection: Not authorized"),
        "a terminal its account may not speak for": (
            edited(config, tmp_path, "other.toml", terminal="counter-09"),
            f"the broker refused to take onetap/v1/{FACILITY}/counter-09/"),
    }
    for case, (path, message) in cases.items():
        code, result, err = simulate("--config", str(path), "--taps", "2", "--timeout", "3",
                                     "--data-dir", str(tmp_path / case.replace(" ", "-")))
        assert code == 1 and result["pending"] == 2, case
        lines = [line for line in err.splitlines() if message in line]
        assert lines, f"{case}: {err[-2000:]}"
        # Said while running (progress) and again in the final errors.
        assert any(line.startswith("simulate: ") for line in lines), case
        assert any(line.startswith("onetap-kiosk: error: ") for line in lines), case


def test_sim_terminals_on_a_terminal_account_are_refused_aloud(facility, tmp_path):
    """The old silent case: sim-001 with a real terminal's account; the ACL drops its taps."""
    account = facility["kiosks"][FACILITY]
    code, result, err = simulate("--broker", facility["broker"].url, "--site", FACILITY,
                                 "--username", account.username, "--password", account.password,
                                 "--terminals", "1", "--taps", "2", "--timeout", "3",
                                 "--data-dir", str(tmp_path / "d"))
    assert code == 1 and result["pending"] == 2, (code, result, err[-2000:])
    assert f"simulate: {FACILITY}/sim-001: the broker refused to take onetap/v1/{FACILITY}/sim-001/" in err
    assert "Not authorized" in err


def test_two_runs_of_one_kiosk_toml_say_that_one_took_the_others_session(facility, tmp_path):
    config = str(facility["kiosks"][FACILITY].config_path)
    args = ["--taps", "10", "--rate", "1", "--timeout", "2"]
    first = subprocess.Popen([*COMMAND, "simulate", "--config", config, *args, "--data-dir", str(tmp_path / "1")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        code, _, second_err = simulate("--config", config, *args, "--data-dir", str(tmp_path / "2"))
        _, first_err = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    said = "another connection took this terminal's session over"
    assert said in first_err + second_err
    assert "account 'counter-01@gangnam-office'" in first_err + second_err
