"""onetap-kiosk simulate, run as the real command against a real mosquitto."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
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
