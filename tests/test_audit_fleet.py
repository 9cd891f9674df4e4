"""The audit chain end to end: provisioned kiosks (`simulate --config`), a real mosquitto, the real server.

A kiosk that loses ratings from its outbox shows the missing range on /api/v1/terminals and raises
the alert; a kiosk provisioned before keys (no [audit]) still delivers; the export verifies.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import requests

from kiosk.simulator import outbox_path
from tests.backends import BACKENDS, make_backend, query
from tests.broker import Mosquitto, free_port
from tests.server_process import TOKEN, ServerProcess
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SITE = "audit-site"

pytestmark = pytest.mark.slow


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path):
    postgres = request.getfixturevalue("postgres_database") if request.param == "postgres" else None
    made = make_backend(request.param, tmp_path, postgres, name="server.db")
    yield made
    made.close()


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def provision(tmp_path: Path, terminal: str, broker_url: str) -> Path:
    out = tmp_path / "kiosks" / terminal
    done = run(str(BIN / "onetap-server"), "provision", "--site", SITE, "--terminal", terminal,
               "--broker", broker_url, "--passwd", str(tmp_path / "passwd"), "--acl", str(tmp_path / "acl"),
               "--out", str(out))
    assert done.returncode == 0, done.stderr
    return out / "kiosk.toml"


def simulate(config: Path, data: Path, taps: int, timeout: float) -> subprocess.CompletedProcess:
    return run(str(BIN / "onetap-kiosk"), "simulate", "--config", str(config), "--taps", str(taps),
               "--data-dir", str(data), "--timeout", str(timeout))


def test_lost_outbox_rows_show_as_missing_and_alert_and_a_keyless_kiosk_delivers(backend, tmp_path):
    port = free_port()
    url = f"mqtt://127.0.0.1:{port}"
    lossy = provision(tmp_path, "lossy", url)
    older = provision(tmp_path, "older", url)
    # "older": provisioned before keys existed: no [audit] in its kiosk.toml, no public key.
    text = older.read_text()
    older.write_text(text[:text.index("[audit]")])
    (tmp_path / "keys" / SITE / "older.pub").unlink()
    data = tmp_path / "data"
    # The broker is not there yet: 12 taps wait in the outbox, chained and released.
    done = simulate(lossy, data, 12, 0.5)
    assert done.returncode == 1, done.stderr
    with sqlite3.connect(outbox_path(data, SITE, "lossy")) as conn:
        conn.execute("DELETE FROM ratings WHERE seq BETWEEN 5 AND 7")
    config = tmp_path / "server.toml"
    config.write_text(f'registry = "{tmp_path / "acl"}"\n'
                      '[alerts]\ninterval_s = 1\nmissing_minutes = 0\nopening_hours = ["mon-sun 00:00-24:00"]\n')
    with Mosquitto(tmp_path / "broker", port=port) as broker:
        server = ServerProcess(broker, tmp_path, args=("--config", str(config), "--db", str(backend.db))).start()
        try:
            base = f"http://127.0.0.1:{server.port}"
            wait_for(lambda: requests.get(f"{base}/healthz", timeout=5).json().get("broker") == "connected",
                     "the server connected to the broker", timeout=30)
            done = simulate(lossy, data, 12, 30)
            assert done.returncode == 0, done.stderr
            done = simulate(older, tmp_path / "data-older", 5, 30)
            assert done.returncode == 0, done.stderr
            headers = {"Authorization": f"Bearer {TOKEN}"}
            terminals = {t["terminal"]: t for t in requests.get(f"{base}/api/v1/terminals", headers=headers,
                                                               timeout=10).json()}
            assert terminals["lossy"]["missing_ranges"] == [[5, 7]]
            assert terminals["lossy"]["contiguous_seq"] == 4
            assert terminals["lossy"]["chain_status"] == "ok"
            assert terminals["lossy"]["verified_head_seq"] == 12  # signed by its provisioned key
            assert terminals["older"]["chain_status"] == "ok" and terminals["older"]["missing_ranges"] == []
            assert terminals["older"]["verified_head_seq"] is None  # no key: nothing signed

            def missing_alert():
                store = backend.open()
                try:
                    return query(store, "SELECT message FROM alerts WHERE kind = 'missing' AND terminal = 'lossy'")
                finally:
                    store.close()

            wait_for(lambda: missing_alert(), "the missing-range alert", timeout=30)
            assert "seq 5-7 missing" in missing_alert()[0]["message"]
        finally:
            server.stop()
    # The evaluator's view: the export names the three ratings the kiosk lost.
    out = tmp_path / "export.json"
    done = run(str(BIN / "onetap-server"), "audit", "export", "--config", str(config), "--db", str(backend.db),
               "--site", SITE, "--from", "2020-01-01", "--to", "2100-01-01", "--out", str(out))
    assert done.returncode == 0, done.stderr
    document = json.loads(out.read_text())
    lossy_entry = next(t for t in document["terminals"] if t["terminal"] == "lossy")
    assert lossy_entry["public_key"] == (tmp_path / "keys" / SITE / "lossy.pub").read_text().strip()
    done = run(str(BIN / "onetap-server"), "audit", "verify", str(out))
    assert done.returncode == 1
    findings = [line for line in done.stdout.splitlines() if not line.startswith("note:")][:-1]
    assert findings == [f"{SITE}/lossy seq 5-7: missing"], done.stdout
    assert f"note: {SITE}/older: no public key" in done.stdout
    assert tomllib.loads(lossy.read_text())["audit"]["key_file"] == "audit.key"
