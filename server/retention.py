"""Retention: raw ratings older than retention_days and quarantine rows older than quarantine_days are deleted; the daily counts stay."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Callable
from zoneinfo import ZoneInfo

from server.periodic import Periodic
from server.store import Store

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
    """Prunes at start and every *interval_s*: ratings when *days* > 0, quarantine
    rows when *quarantine_days* > 0."""

    name = "onetap-retention"

    def __init__(self, days: int, tz: ZoneInfo, store_factory: Callable[[], Store], *,
                 quarantine_days: int = 0, interval_s: float = INTERVAL_S,
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)):
        super().__init__(store_factory, interval_s)
        self.days = days
        self.quarantine_days = quarantine_days
        self.tz = tz
        self.now = now
        self.pruned = 0
        self.pruned_quarantine = 0
        self.runs = 0

    def tick(self, store: Store) -> None:
        self.run_once(store)

    def run_once(self, store: Store) -> int:
        """Delete what is due now; returns how many ratings went."""
        now = self.now()
        deleted = 0
        if self.days > 0:
            before_day, received_before = cutoff(now, self.tz, self.days)
            # The chain at the cut stays, so later ranges still verify (docs/audit.md).
            from server.audit import checkpoint_before_prune

            checkpoint_before_prune(store, before_day)
            deleted = store.prune_ratings(before_day, received_before)
            if deleted:
                log.info("retention: deleted %d raw ratings of days before %s (daily counts kept)",
                         deleted, before_day)
        if self.quarantine_days > 0:
            # Quarantine rows are evidence of bad input, not counts: by receipt time alone.
            gone = store.prune_quarantine(now - timedelta(days=self.quarantine_days))
            if gone:
                log.info("retention: deleted %d quarantine rows older than %d days", gone,
                         self.quarantine_days)
            self.pruned_quarantine += gone
        self.pruned += deleted
        self.runs += 1
        return deleted
