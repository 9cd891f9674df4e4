"""`onetap-server run` as a real process for end-to-end tests, killable with -9."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from server.process import kill_process, stop_process
from tests.broker import Mosquitto, free_port, wait_for_port

BIN = Path(sys.executable).parent
TOKEN = "test-token-4f9c2e7a1b8d"


class ServerProcess:
    """`onetap-server run` as a real process, killable with -9."""

    def __init__(self, broker: Mosquitto, directory: Path, env: dict | None = None,
                 args: tuple[str, ...] = ()):
        self.args = args
        self.broker = broker
        self.db = directory / "server.db"
        self.port = free_port()
        self.log = directory / "server.log"
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen | None = None

    def start(self) -> "ServerProcess":
        self.process = subprocess.Popen(
            [str(BIN / "onetap-server"), "run", "--broker", self.broker.url, "--db", str(self.db),
             "--listen", f"127.0.0.1:{self.port}", "--api-token", TOKEN, *self.args],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"), env=self.env,
        )
        try:
            wait_for_port(self.port, timeout=30)
        except TimeoutError:
            self.process.kill()
            raise AssertionError(f"onetap-server did not start: {self.log.read_text()[-2000:]}")
        return self

    def kill9(self) -> None:
        kill_process(self.process)
        self.process = None

    def stop(self) -> None:
        stop_process(self.process, timeout=10)
        self.process = None
