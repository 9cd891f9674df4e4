"""Retention: raw ratings older than retention_days are deleted; the daily counts stay."""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta, timezone
from typing import Any, Callable
from zoneinfo import ZoneInfo

from server.errors import StoreError

log = logging.getLogger(__name__)

#: How often the runner prunes (and once at start).
INTERVAL_S = 6 * 3600


def cutoff(now: datetime, tz: ZoneInfo, days: int) -> tuple[str, datetime]:
    """(first local day kept, received-before bound) for a retention of *days* at *now*.

    A rating goes when its day is more than *days* before today *and* the
    server received it more than *days* ago. The second rule protects exactly
    once: a kiosk back after weeks offline sends old days; had they been
    deleted at once and the Ack been lost, its resend would find no id and be
    counted again. So every rating is kept at least *days* after it arrived.
    """
    if days <= 0:
        raise ValueError("retention needs a positive number of days")
    today = now.astimezone(tz).date()
    return (today - timedelta(days=days)).isoformat(), now - timedelta(days=days)


class RetentionRunner:
    """Prunes at start and every *interval_s* in its own thread, on its own store connection."""

    def __init__(self, days: int, tz: ZoneInfo, store_factory: Callable[[], Any], *,
                 interval_s: float = INTERVAL_S,
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)):
        self.days = days
        self.tz = tz
        self.store_factory = store_factory
        self.interval_s = interval_s
        self.now = now
        self.pruned = 0
        self.runs = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self, store: Any) -> int:
        """Delete what is due now; returns how many ratings went."""
        before_day, received_before = cutoff(self.now(), self.tz, self.days)
        deleted = store.prune_ratings(before_day, received_before)
        if deleted:
            log.info("retention: deleted %d raw ratings of days before %s (daily counts kept)",
                     deleted, before_day)
        self.pruned += deleted
        self.runs += 1
        return deleted

    def start(self) -> "RetentionRunner":
        self._thread = threading.Thread(target=self._loop, name="onetap-retention", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        store = None
        try:
            while not self._stop.is_set():
                try:
                    if store is None:
                        store = self.store_factory()
                    self.run_once(store)
                except StoreError as exc:
                    # A busy or failing database: the next run catches up.
                    log.error("retention: could not prune (%s); trying again later", exc)
                self._stop.wait(self.interval_s)
        finally:
            if store is not None:
                store.close()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
