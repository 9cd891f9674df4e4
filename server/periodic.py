"""A task run at start and every interval in its own thread, on its own store connection."""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from server.errors import StoreError

log = logging.getLogger(__name__)


class Periodic:
    """Subclasses implement ``tick(store)``; a failing store is logged and retried next time.

    SQLite connections belong to one thread, so the store is opened inside
    the thread (lazily: a database that is busy at start is tried again).
    """

    name = "onetap-periodic"

    def __init__(self, store_factory: Callable[[], Any], interval_s: float):
        self.store_factory = store_factory
        self.interval_s = interval_s
        self.passes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self, store: Any) -> None:
        raise NotImplementedError

    def start(self):
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        store = None
        try:
            while not self._stop.is_set():
                try:
                    if store is None:
                        store = self.store_factory()
                    self.tick(store)
                except StoreError as exc:
                    log.error("%s: %s; trying again in %.0f s", self.name, exc, self.interval_s)
                self.passes += 1
                self._stop.wait(self.interval_s)
        finally:
            if store is not None:
                store.close()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
