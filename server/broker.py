"""A private MQTT broker for the demo: mosquitto when installed, else embedded amqtt."""

from __future__ import annotations

import asyncio
import getpass
import logging
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

from server.errors import ServerError

log = logging.getLogger(__name__)

# The same queue limits as deploy/mosquitto/onetap.conf: mosquitto's defaults
# drop queued QoS 1 messages of a terminal that is away for long (measured).
_MOSQUITTO_CONF = """\
listener {port} 127.0.0.1
user {user}
allow_anonymous true
persistence true
persistence_location {data}/
autosave_interval 60
max_queued_messages 100000
max_queued_bytes 536870912
max_inflight_messages 20
message_size_limit 1048576
log_dest file {data}/mosquitto.log
"""


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


class PrivateMosquitto:
    """A mosquitto process of our own on a free loopback port."""

    kind = "mosquitto"
    mqtt_protocol = "5"

    def __init__(self, data_dir: Path, port: int | None = None):
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("mosquitto") is not None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        conf = self.data_dir / "mosquitto.conf"
        conf.write_text(_MOSQUITTO_CONF.format(port=self.port, data=self.data_dir, user=getpass.getuser()))
        self.process = subprocess.Popen(
            ["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        if not wait_for_port(self.port, 10):
            self.process.kill()
            _, err = self.process.communicate()
            raise BrokerError(f"mosquitto did not start: {err.decode(errors='replace').strip()}")
        log.info("mosquitto listening on %s", self.url)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


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


def private_broker(data_dir: Path, embedded: bool = False) -> PrivateMosquitto | EmbeddedBroker:
    """mosquitto when it is on PATH (and not *embedded*), else the embedded broker."""
    if not embedded and PrivateMosquitto.available():
        return PrivateMosquitto(data_dir)
    return EmbeddedBroker()
