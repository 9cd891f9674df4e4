"""The supervisor of the server's long-running threads: restarts what fails, and says what is unhealthy."""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

log = logging.getLogger(__name__)

#: A thread that fails this many times in a row (each failure logged and
#: survived) is reported as failing until one pass succeeds.
MAX_FAILURES = 5
#: A loop that escapes with an exception is started again, after a growing
#: pause; this many times within RESTART_WINDOW_S and it is declared dead.
MAX_RESTARTS = 5
RESTART_WINDOW_S = 300.0
#: How long a thread may be busy in one step unless its owner says otherwise.
DEFAULT_STALL_S = 600.0
#: Where Linux keeps the calling thread's name (what top -H and ps -L show).
THREAD_COMM = Path("/proc/thread-self/comm")
#: The kernel keeps 15 bytes of a thread's name.
COMM_BYTES = 15


def name_os_thread(name: str, comm: Path = THREAD_COMM) -> bool:
    """Give the calling thread *name* in the operating system too; whether it took.

    Python (before 3.14) names its threads only for itself, so every thread
    of a worker shows as "python" in top -H, and a thread burning a core
    could not be told from the others. Linux only; elsewhere nothing happens.
    """
    try:
        comm.write_bytes(name.encode("ascii", "replace")[:COMM_BYTES])
        return True
    except OSError as exc:
        log.debug("thread %s keeps the operating system's name for it: %s", name, exc)
        return False


@dataclass(frozen=True)
class Problem:
    """Why the process is unhealthy, and whether restarting the process is the cure
    (systemd's watchdog is then no longer petted)."""

    reason: str
    restart: bool


class Supervised:
    """One supervised thread: its loop reports here when it is busy, succeeds or fails."""

    def __init__(self, name: str, loop: Callable[["Supervised"], None], stall_s: float,
                 clock: Callable[[], float]):
        self.name = name
        self.loop = loop
        self.stall_s = stall_s
        self._clock = clock
        self.state = "starting"  # running, restarting, stopped, dead
        self.failures = 0  # in a row
        self.last_error: str | None = None
        self.restarts: collections.deque[float] = collections.deque()
        self.busy_since: float | None = None
        self._stop = threading.Event()
        self.thread: threading.Thread | None = None

    # -- the loop's side ---------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to *seconds*; True as soon as the thread is asked to stop."""
        return self._stop.wait(seconds)

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """Around one step of the loop: a step that lasts over stall_s is a stall."""
        self.busy_since = self._clock()
        try:
            yield
        finally:
            self.busy_since = None

    def succeeded(self) -> None:
        self.failures = 0

    def failed(self, exc: BaseException) -> None:
        """A step failed and the loop goes on (the caller logged it, with its traceback)."""
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"

    # -- the owner's side ------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float) -> bool:
        """Wait up to *timeout* for the thread to end; whether it did."""
        if self.thread is not None:
            self.thread.join(max(0.0, timeout))
            return not self.thread.is_alive()
        return True

    def problem(self, now: float) -> Problem | None:
        if self.state == "dead":
            return Problem(f"thread {self.name} is dead ({self.last_error})", restart=True)
        if self.state == "restarting":
            return Problem(f"thread {self.name} failed and is restarting ({self.last_error})", restart=False)
        if self.state == "stopped" and not self.stopping:
            return Problem(f"thread {self.name} ended", restart=True)
        busy_since = self.busy_since
        if busy_since is not None and now - busy_since > self.stall_s:
            return Problem(f"thread {self.name} is stuck: busy for {now - busy_since:.0f} s", restart=True)
        if self.failures >= MAX_FAILURES:
            return Problem(f"thread {self.name} failed {self.failures} times in a row ({self.last_error})",
                           restart=False)
        return None

    def describe(self, now: float) -> str:
        """running, stuck, failing, restarting, stopped or dead."""
        if self.state == "running":
            busy_since = self.busy_since
            if busy_since is not None and now - busy_since > self.stall_s:
                return "stuck"
            if self.failures >= MAX_FAILURES:
                return "failing"
        return self.state


class Supervisor:
    """Runs each long-running thread of the process and knows which of them are healthy.

    A loop reports each step (``busy``, ``succeeded``, ``failed``); an exception
    that escapes the loop itself is logged with its traceback and the loop is
    started again after a pause, until it has failed MAX_RESTARTS times within
    RESTART_WINDOW_S: then the thread is dead and the process unhealthy.
    Other parts add checks of their own (ingest progress) with ``add_check``.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, restart_pause_s: float = 1.0):
        self._clock = clock
        self.restart_pause_s = restart_pause_s
        self._threads: dict[str, Supervised] = {}
        self._checks: list[Callable[[], Problem | None]] = []
        self._lock = threading.Lock()

    def start(self, name: str, loop: Callable[[Supervised], None], *,
              stall_s: float = DEFAULT_STALL_S) -> Supervised:
        """Run ``loop(handle)`` in a daemon thread named *name*; it returns when
        ``handle.stopping``."""
        handle = Supervised(name, loop, stall_s, self._clock)
        with self._lock:
            if name in self._threads and self._threads[name].state not in ("stopped", "dead"):
                raise ValueError(f"a thread named {name!r} is already supervised")
            self._threads[name] = handle
        handle.thread = threading.Thread(target=self._run, args=(handle,), name=name, daemon=True)
        handle.state = "running"
        handle.thread.start()
        return handle

    def add_check(self, check: Callable[[], Problem | None]) -> None:
        with self._lock:
            self._checks.append(check)

    def _run(self, handle: Supervised) -> None:
        name_os_thread(handle.name)
        pause = self.restart_pause_s
        while True:
            try:
                handle.loop(handle)
            except Exception as exc:  # noqa: BLE001 - logged, restarted, and reported by problems()
                log.exception("thread %s failed", handle.name)
                handle.last_error = f"{type(exc).__name__}: {exc}"
                now = self._clock()
                handle.restarts.append(now)
                while handle.restarts and now - handle.restarts[0] > RESTART_WINDOW_S:
                    handle.restarts.popleft()
                if len(handle.restarts) >= MAX_RESTARTS:
                    handle.state = "dead"
                    log.critical("thread %s failed %d times in %.0f s; giving up: the process is unhealthy",
                                 handle.name, len(handle.restarts), RESTART_WINDOW_S)
                    return
                handle.state = "restarting"
                handle.busy_since = None
                if handle.wait(pause):
                    handle.state = "stopped"
                    return
                pause = min(pause * 2, 30 * self.restart_pause_s)
                log.warning("thread %s: starting it again", handle.name)
                handle.state = "running"
                continue
            handle.state = "stopped"
            if not handle.stopping:
                log.critical("thread %s ended without being asked to: the process is unhealthy", handle.name)
            return

    def problems(self) -> list[Problem]:
        """Everything unhealthy now; empty when all is well."""
        now = self._clock()
        with self._lock:
            handles = list(self._threads.values())
            checks = list(self._checks)
        # The checks' findings first: "ingest is stuck: 3 messages waiting" says more
        # than "thread onetap-ingest is stuck", which it usually comes with.
        out = [p for p in (check() for check in checks) if p is not None]
        out += [p for p in (h.problem(now) for h in handles) if p is not None]
        return out

    def threads(self) -> dict[str, str]:
        """Each supervised thread's name and state (see Supervised.describe)."""
        now = self._clock()
        with self._lock:
            return {name: handle.describe(now) for name, handle in sorted(self._threads.items())}
