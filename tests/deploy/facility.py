"""A facility as docs/deploy.md sets it up, for end-to-end tests: `onetap-server run --config` and real kiosks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import requests

from kiosk.config import load_config as load_kiosk_config
from kiosk.outbox import Outbox
from kiosk.uplink import Uplink
from server import provision
from server.process import stop_process
from tests.broker import free_port, wait_for_port
from tests.server_process import TOKEN
from tests.waiting import wait_for

BIN = Path(sys.executable).parent
DEADLINE = 20.0


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
            env={**os.environ, "ONETAP_API_TOKEN": TOKEN})
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
        stop_process(self.process, timeout=30)


def provision_server(broker, etc: Path, db: Path) -> tuple[provision.Account, Path]:
    """`provision --service onetap-server` against an InstalledMosquitto; its server.toml
    (in *etc*) given the database *db*."""
    account = provision.provision_service("onetap-server", broker.passwd, broker.acl, etc,
                                          broker=f"mqtt://127.0.0.1:{broker.plain_port}")
    config = etc / "server.toml"
    config.write_text(config.read_text() + f'db = "{db}"\n')
    return account, config
