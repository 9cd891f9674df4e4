"""Rotating the server's broker password as docs/deploy.md says, on the installed broker: no rating lost or doubled."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import requests

from kiosk.config import load_config as load_kiosk_config
from kiosk.outbox import Outbox
from kiosk.uplink import Uplink
from server import provision
from tests.broker import free_port, wait_for_port
from tests.deploy.installed_broker import InstalledMosquitto, login
from tests.waiting import wait_for

SITE, TERMINAL = "gangnam-office", "counter-04"
BIN = Path(sys.executable).parent
DEADLINE = 20.0

pytestmark = pytest.mark.skipif(shutil.which("mosquitto") is None,
                                reason="mosquitto not installed (apt-get install mosquitto)")


class Kiosk:
    """The real kiosk's outbox and uplink, from the kiosk.toml provision wrote."""

    def __init__(self, kiosk_toml: Path, outbox: Path):
        self.config = load_kiosk_config(kiosk_toml, env={})
        self.outbox = Outbox.open(outbox)
        # A short Ack timeout: what the broker drops is resent within the test.
        self.uplink = Uplink.from_config(self.config, outbox_factory=lambda: Outbox.open(outbox),
                                         ack_timeout=2.0, reconnect_delay=(0.2, 1.0)).start()

    def tap(self) -> str:
        rating = self.outbox.record(4, clock_synced=True)
        self.uplink.notify()
        return rating.id

    def drained(self) -> None:
        assert self.uplink.wait_idle(60), "the kiosk's outbox did not drain"
        assert self.outbox.stats().backlog == 0

    def close(self) -> None:
        self.uplink.stop()
        self.outbox.close()


class Server:
    """`onetap-server run --config server.toml`, as the unit runs it."""

    def __init__(self, config: Path, directory: Path):
        self.config, self.directory = config, directory
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def start(self) -> "Server":
        self.process = subprocess.Popen(
            [str(BIN / "onetap-server"), "run", "--config", str(self.config),
             "--listen", f"127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=open(self.directory / "server.log", "ab"),
            env={**os.environ, "ONETAP_API_TOKEN": "test-token"})
        wait_for_port(self.port, timeout=30)
        wait_for(lambda: self.health().get("broker") == "connected",
                 "the server connected to the broker", timeout=DEADLINE)
        return self

    def health(self) -> dict:
        return requests.get(f"http://127.0.0.1:{self.port}/healthz", timeout=5).json()

    def restart(self) -> None:
        """systemctl restart onetap-server: SIGTERM, then start again."""
        self.process.terminate()
        self.process.wait(30)
        self.start()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


def test_rotating_the_server_password_loses_and_doubles_nothing(pki, tmp_path):
    broker = InstalledMosquitto(pki)
    etc_onetap = tmp_path / "etc-onetap"
    db = tmp_path / "onetap.db"
    try:
        first = provision.provision_service("onetap-server", broker.passwd, broker.acl, etc_onetap,
                                            broker=f"mqtt://127.0.0.1:{broker.plain_port}")
        config = etc_onetap / "server.toml"
        config.write_text(config.read_text() + f'db = "{db}"\n')
        terminal = provision.provision_terminal(SITE, TERMINAL, f"mqtt://127.0.0.1:{broker.plain_port}",
                                                broker.passwd, broker.acl, tmp_path / "kiosk")
        broker.start()
        server = Server(config, tmp_path).start()
        kiosk = Kiosk(terminal.config_path, tmp_path / "outbox.db")
        try:
            taps = {kiosk.tap() for _ in range(3)}
            kiosk.drained()

            # docs/deploy.md: provision --service again, reload mosquitto, restart the server.
            code = subprocess.run(
                [str(BIN / "onetap-server"), "provision", "--service", "onetap-server",
                 "--passwd", str(broker.passwd), "--acl", str(broker.acl), "--out", str(etc_onetap)],
                capture_output=True, text=True)
            assert code.returncode == 0, code.stderr
            assert f"127.0.0.1:{broker.plain_port}" in config.read_text(), "the broker was rewritten"
            broker.reload()
            # Taps while the rotation is under way: the broker drops what it
            # gets for the server between the reload and the restart; the
            # kiosk's outbox resends it after its Ack timeout.
            taps |= {kiosk.tap() for _ in range(3)}
            server.restart()
            taps |= {kiosk.tap() for _ in range(3)}
            kiosk.drained()
            assert server.health()["broker"] == "connected"
        finally:
            kiosk.close()
            server.stop()
        # The old password is dead at the broker, the new one lives.
        assert login(broker.plain_port, "onetap-server", first.password).is_failure
        new_password = tomllib.loads(config.read_text())["password"]
        assert not login(broker.plain_port, "onetap-server", new_password).is_failure
        with sqlite3.connect(db) as conn:
            rows = conn.execute("SELECT id FROM ratings").fetchall()
        assert sorted(row[0] for row in rows) == sorted(taps), \
            "a rating was lost or counted twice across the rotation"
    finally:
        broker.cleanup()
