"""systemd's watchdog: READY=1 once the server is up, then WATCHDOG=1 only while nothing needs a restart."""

from __future__ import annotations

import logging
import os
import socket
import threading
from contextlib import contextmanager
from typing import Callable, Iterator, Mapping

from server.supervisor import Supervised, Supervisor

log = logging.getLogger(__name__)


def notify(message: str, env: Mapping[str, str] = os.environ) -> bool:
    """Send *message* (say "READY=1") to the service manager; False when there is none."""
    # sd_notify(3) is one datagram to $NOTIFY_SOCKET: a few lines here rather than
    # a dependency (systemd-python needs libsystemd's headers to build; the small
    # pure-Python packages are unmaintained).
    path = env.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):
        address = "\0" + path[1:]  # Linux's abstract socket namespace
    elif path.startswith("/"):
        address = path
    else:
        log.warning("NOTIFY_SOCKET %r is not a unix socket path; systemd is not notified", path)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode("utf-8"))
    except OSError as exc:
        log.warning("could not notify systemd (%s): %s", message.split("=", 1)[0], exc)
        return False
    return True


def watchdog_interval(env: Mapping[str, str] = os.environ) -> float | None:
    """How often to pet the watchdog (a third of WatchdogSec=), None when it is off or not ours."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1e6 / 3


#: While the database migrates at start, systemd's start timeout is pushed this far ahead...
START_EXTENSION_S = 120
#: ...this often, so that a long migration (minutes on a database of millions of
#: ratings, docs/benchmarks.md) is not killed by TimeoutStartSec= and retried forever.
START_EXTEND_EVERY_S = 30


@contextmanager
def starting(what: str, env: Mapping[str, str] = os.environ, *,
             every_s: float = START_EXTEND_EVERY_S) -> Iterator[None]:
    """While the block runs, keep asking systemd for more start time (EXTEND_TIMEOUT_USEC)
    and say *what* is happening in STATUS=; nothing without systemd."""
    if not env.get("NOTIFY_SOCKET"):
        yield
        return
    done = threading.Event()
    message = f"EXTEND_TIMEOUT_USEC={int(START_EXTENSION_S * 1e6)}\nSTATUS={what}"

    def extend() -> None:
        # Only datagrams, and it ends with the block: no supervisor exists yet
        # when the database is opened, and none is needed for this.
        while True:
            notify(message, env)
            if done.wait(every_s):
                return

    thread = threading.Thread(target=extend, name="onetap-start-extension", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(5.0)


class Watchdog:
    """A supervised thread that says READY=1 when *ready()*, then pets systemd's
    watchdog every third of WatchdogSec= while the supervisor sees no problem a
    restart would cure (a stuck ingest, a dead or stuck thread). Unpetted,
    systemd kills and restarts the process. STATUS= tells `systemctl status` why.
    """

    name = "onetap-watchdog"

    def __init__(self, supervisor: Supervisor, *, ready: Callable[[], bool] = lambda: True,
                 env: Mapping[str, str] = os.environ):
        self.supervisor = supervisor
        self.ready = ready
        self.env = dict(env)
        self.interval_s = watchdog_interval(self.env)
        self._thread: Supervised | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.env.get("NOTIFY_SOCKET"))

    def start(self) -> "Watchdog":
        """Start the thread when systemd listens (NOTIFY_SOCKET); otherwise do nothing."""
        if self.enabled:
            self._thread = self.supervisor.start(self.name, self._loop, stall_s=60)
        return self

    def _loop(self, thread: Supervised) -> None:
        while not self.ready():
            if thread.wait(0.2):
                return
        notify("READY=1\nSTATUS=running", self.env)
        told: str | None = "running"
        while True:
            restart = [p.reason for p in self.supervisor.problems() if p.restart]
            status = "unhealthy: " + "; ".join(restart) if restart else "running"
            if restart:
                if status != told:
                    log.error("systemd's watchdog is no longer petted (%s); it will restart the server",
                              "; ".join(restart))
            elif self.interval_s is not None:
                notify("WATCHDOG=1", self.env)
            if status != told:
                notify(f"STATUS={status}", self.env)
                told = status
            if thread.wait(self.interval_s or 5.0):
                return

    def stopping(self) -> None:
        """The process is shutting down: tell systemd, and stop petting."""
        if self._thread is not None:
            self._thread.request_stop()
            self._thread.join(1.0)  # so that no WATCHDOG=1 follows
            notify("STOPPING=1", self.env)
