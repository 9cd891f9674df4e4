"""A task run at start and every interval in its own supervised thread, on its own store connection."""

from __future__ import annotations

import logging
from typing import Callable

from server.errors import StoreError
from server.store import Store
from server.supervisor import DEFAULT_STALL_S, Supervised, Supervisor

log = logging.getLogger(__name__)


class Periodic:
    """Subclasses implement ``tick(store)``; a failing tick is logged and tried again next time.

    SQLite connections belong to one thread, so the store is opened inside
    the thread (lazily: a database that is busy at start is tried again).
    The thread runs under a Supervisor: a tick that raises is logged with its
    traceback and counted, one busy for longer than *stall_s* is reported stuck.
    """

    name = "onetap-periodic"

    def __init__(self, store_factory: Callable[[], Store], interval_s: float):
        self.store_factory = store_factory
        self.interval_s = interval_s
        self.passes = 0
        self.supervisor: Supervisor | None = None
        self._thread: Supervised | None = None
        self._fault: Callable[[str, int], None] | None = None

    def tick(self, store: Store) -> None:
        raise NotImplementedError

    def start(self, supervisor: Supervisor | None = None, *, stall_s: float = DEFAULT_STALL_S,
              fault: Callable[[str, int], None] | None = None):
        """Run in a thread of *supervisor* (a new one without). *fault* is called
        with (name, n) before the n-th tick (end-to-end fault tests)."""
        self.supervisor = supervisor if supervisor is not None else Supervisor()
        self._fault = fault
        self._thread = self.supervisor.start(self.name, self._loop, stall_s=stall_s)
        return self

    def _loop(self, thread: Supervised) -> None:
        store = None
        try:
            while not thread.stopping:
                with thread.busy():
                    try:
                        if store is None:
                            store = self.store_factory()
                        if self._fault is not None:
                            self._fault(self.name, self.passes + 1)
                        self.tick(store)
                    except StoreError as exc:
                        log.error("%s: %s; trying again in %.0f s", self.name, exc, self.interval_s)
                        thread.failed(exc)
                    except Exception as exc:  # noqa: BLE001 - one bad pass must not end the task
                        log.exception("%s failed; trying again in %.0f s", self.name, self.interval_s)
                        thread.failed(exc)
                        # The connection may be left mid-way: start the next pass on a new one.
                        if store is not None:
                            _close(store, self.name)
                            store = None
                    else:
                        thread.succeeded()
                self.passes += 1
                thread.wait(self.interval_s)
        finally:
            if store is not None:
                _close(store, self.name)

    def stop(self, timeout: float = 10.0) -> bool:
        """Ask the thread to stop and wait up to *timeout*; whether it ended."""
        if self._thread is None:
            return True
        self._thread.request_stop()
        ended = self._thread.join(timeout)
        if not ended and timeout > 0:
            log.warning("%s still busy after %.1f s; leaving it", self.name, timeout)
        return ended


def _close(store: Store, name: str) -> None:
    try:
        store.close()
    except Exception:  # noqa: BLE001 - a broken connection must not stop the task
        log.exception("%s: closing its store failed", name)
