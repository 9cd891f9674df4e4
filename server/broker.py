"""Private MQTT brokers for the demo and the tests: mosquitto with the deploy settings, else embedded amqtt."""

from __future__ import annotations

import asyncio
import getpass
import logging
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterable

from server.errors import ServerError
from server.process import kill_process, stop_process

log = logging.getLogger(__name__)

#: The facility broker's global settings (queue limits, autosave, message size),
#: used by every mosquitto onetap starts itself so that the demo and the tests
#: run with what is deployed. Outside a source tree (an installed wheel) there
#: is no such file, and mosquitto's own defaults apply.
DEPLOY_CONF = Path(__file__).resolve().parent.parent / "deploy" / "mosquitto" / "onetap.conf"


def deploy_settings() -> str:
    """The text of deploy/mosquitto/onetap.conf, or "" where it is not installed."""
    try:
        return DEPLOY_CONF.read_text(encoding="utf-8")
    except FileNotFoundError:
        log.warning("%s not found: the private mosquitto runs with its default queue limits",
                    DEPLOY_CONF)
        return ""


class BrokerError(ServerError, RuntimeError):
    """The demo's broker could not be started."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float, host: str = "127.0.0.1") -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def launch_mosquitto(conf: Path, ports: Iterable[int], timeout: float = 10.0) -> subprocess.Popen:
    """``mosquitto -c conf``, returned once every one of *ports* accepts connections.

    Raises BrokerError with mosquitto's own complaint when it does not start.
    """
    process = subprocess.Popen(["mosquitto", "-c", str(conf)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    for port in ports:
        # A mosquitto that refused its config has exited: no need to wait out the timeout.
        while not wait_for_port(port, 0.2) and process.poll() is None and time.monotonic() < deadline:
            pass
        if not wait_for_port(port, 0.05):
            kill_process(process)
            err = process.stderr.read() if process.stderr else b""
            raise BrokerError(f"mosquitto did not start (exit {process.returncode}): "
                              f"{err.decode(errors='replace').strip()}")
    return process


class Mosquitto:
    """A real mosquitto of our own on a free loopback port, with the deploy settings.

    ``extra`` lines are appended to the config (say, password_file/acl_file);
    its data (persistence) lives in ``directory/data``.
    """

    kind = "mosquitto"
    mqtt_protocol = "5"

    def __init__(self, directory: Path, port: int | None = None, extra: str = "",
                 anonymous: bool = True):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.extra = extra
        self.anonymous = anonymous
        self.process: subprocess.Popen | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("mosquitto") is not None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def conf_path(self) -> Path:
        return self.directory / "mosquitto.conf"

    def _write_conf(self) -> None:
        (self.directory / "data").mkdir(exist_ok=True)
        self.conf_path.write_text(
            # What Debian's stock mosquitto.conf sets before including onetap.conf.
            f"persistence true\npersistence_location {self.directory}/data/\n"
            + deploy_settings()
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
        if not self.available():
            raise BrokerError("mosquitto is not installed (apt-get install mosquitto)")
        self._write_conf()
        self.process = launch_mosquitto(self.conf_path, [self.port])
        log.info("mosquitto listening on %s", self.url)
        return self

    def kill9(self) -> None:
        """Kill without warning: mosquitto loses what it has not autosaved."""
        kill_process(self.process)
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
        stop_process(self.process)
        self.process = None

    def __enter__(self) -> "Mosquitto":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EmbeddedBroker:
    """amqtt in a thread of this process, for machines without mosquitto.

    amqtt speaks MQTT 3.1.1 only, so clients of the demo use 3.1.1 with it.
    """

    kind = "embedded"
    mqtt_protocol = "3.1.1"

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        try:
            from amqtt.broker import Broker
        except ImportError as exc:
            raise BrokerError("no mosquitto on PATH and amqtt is not installed "
                              "(pip install 'onetap[server]')") from exc
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
            },
        }

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            try:
                self._broker = Broker(config, loop=self._loop)
                self._loop.run_until_complete(self._broker.start())
            except BaseException as exc:  # reported to start()'s caller below
                self._error = exc
                self._started.set()
                return
            self._started.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._broker.shutdown())
            self._loop.close()

        # amqtt logs every packet at INFO; the demo's console is for people.
        logging.getLogger("amqtt").setLevel(logging.WARNING)
        logging.getLogger("transitions").setLevel(logging.WARNING)
        self._thread = threading.Thread(target=serve, name="amqtt-broker", daemon=True)
        self._thread.start()
        self._started.wait(15)
        if self._error is not None:
            raise BrokerError(f"embedded broker did not start: {self._error}")
        log.info("embedded amqtt broker listening on %s", self.url)

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._thread = None


def private_broker(data_dir: Path, embedded: bool = False) -> Mosquitto | EmbeddedBroker:
    """mosquitto when it is on PATH (and not *embedded*), else the embedded broker."""
    if not embedded and Mosquitto.available():
        return Mosquitto(data_dir)
    return EmbeddedBroker()
