"""A private mosquitto for tests: started on a free port, killed with -9, restarted."""

from __future__ import annotations

import getpass
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

from server.broker import free_port  # noqa: F401 - tests import it from here
from server.broker import wait_for_port as listening

DEPLOY_CONF = Path(__file__).resolve().parent.parent / "deploy" / "mosquitto" / "onetap.conf"


def wait_for_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    """server.broker's wait, raising for tests instead of answering False."""
    if not listening(port, timeout, host):
        raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


class Mosquitto:
    """A real mosquitto with onetap's deploy settings, in its own directory.

    ``extra`` lines are appended to the config (say, password_file/acl_file).
    """

    def __init__(self, directory: Path, port: int | None = None, extra: str = "",
                 anonymous: bool = True):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.extra = extra
        self.anonymous = anonymous
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def conf_path(self) -> Path:
        return self.directory / "mosquitto.conf"

    def _write_conf(self) -> None:
        deploy = DEPLOY_CONF.read_text()
        (self.directory / "data").mkdir(exist_ok=True)
        self.conf_path.write_text(
            # What Debian's stock mosquitto.conf sets before including onetap.conf.
            f"persistence true\npersistence_location {self.directory}/data/\n"
            + deploy
            + f"\nlistener {self.port} 127.0.0.1\n"
            + f"allow_anonymous {'true' if self.anonymous else 'false'}\n"
            # mosquitto started as root drops to user "mosquitto", which
            # could not write this directory: stay who we are.
            + ("" if re.search(r"^user ", self.extra, re.M) else f"user {getpass.getuser()}\n")
            + f"log_dest file {self.directory}/mosquitto.log\n"
            + "log_type error\nlog_type warning\nlog_type notice\n"
            + self.extra
            + "\n"
        )

    def start(self) -> "Mosquitto":
        if shutil.which("mosquitto") is None:
            raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
        self._write_conf()
        self.process = subprocess.Popen(
            ["mosquitto", "-c", str(self.conf_path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        try:
            wait_for_port(self.port)
        except TimeoutError:
            self.process.kill()
            _, err = self.process.communicate()
            raise RuntimeError(f"mosquitto did not start: {err.decode(errors='replace')}")
        return self

    def kill9(self) -> None:
        """Kill without warning: mosquitto loses what it has not autosaved."""
        if self.process and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None

    def wipe(self) -> None:
        """Forget every session, queued message and retained message."""
        shutil.rmtree(self.directory / "data", ignore_errors=True)

    def restart(self, empty: bool = False) -> None:
        self.kill9()
        if empty:
            self.wipe()
        self.start()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.kill9()
        self.process = None

    def __enter__(self) -> "Mosquitto":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
