"""Retention: raw ratings older than retention_days are deleted; the daily counts stay."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any, Callable
from zoneinfo import ZoneInfo

from server.periodic import Periodic

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


class RetentionRunner(Periodic):
    """Prunes at start and every *interval_s*."""

    name = "onetap-retention"

    def __init__(self, days: int, tz: ZoneInfo, store_factory: Callable[[], Any], *,
                 interval_s: float = INTERVAL_S,
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)):
        super().__init__(store_factory, interval_s)
        self.days = days
        self.tz = tz
        self.now = now
        self.pruned = 0
        self.runs = 0

    def tick(self, store: Any) -> None:
        self.run_once(store)

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
