"""Ingest: turns received MQTT messages into stored ratings, statuses, quarantine rows and Acks."""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from typing import Callable, Iterable, Sequence, Union

from kiosk.protocol import (
    ACK,
    DEFAULT_REASONS,
    RATINGS,
    STATUS,
    Ack,
    ProtocolError,
    Rating,
    Status,
    is_identifier,
    parse_timestamp,
    parse_topic,
    printable,
    readable_rating_ids,
    topic as make_topic,
)
from server import audit
from server.decoder import decode_batch
from server.errors import StoreError
from server.store import BatchResult, Store

log = logging.getLogger(__name__)

#: (topic, payload) or (topic, payload, retained): the MQTT retain flag as received.
Message = Union[tuple[str, bytes], tuple[str, bytes, bool]]

#: The longest payload one quarantine row keeps (the rest is cut, and said so):
#: four times the largest valid batch is plenty to see what a terminal sent.
MAX_QUARANTINE_PAYLOAD = 4 * 256 * 1024
#: Alert kind raised when a terminal reaches its daily quarantine cap.
QUARANTINE_ALERT = "quarantine"


@dataclass(frozen=True)
class QuarantineCaps:
    """How much one terminal may put in quarantine per (UTC) day; beyond, it is counted and dropped."""

    rows_per_day: int = 1000
    bytes_per_day: int = 16 * 1024 * 1024


@dataclass
class IngestCounters:
    """Totals since start, for /metrics. Written by the ingest thread only."""

    messages: int = 0
    batches: int = 0
    ratings_accepted: int = 0
    ratings_duplicate: int = 0
    ratings_rejected: int = 0
    quarantined: int = 0
    #: Over a terminal's daily quarantine cap: counted here, not stored.
    quarantine_dropped: int = 0
    #: Retained messages on ratings topics: quarantined, never counted or Acked.
    retained_refused: int = 0
    #: Batches whose head signature did not verify: quarantined, never counted.
    bad_signatures: int = 0
    statuses: int = 0
    acks: int = 0
    store_errors: int = 0
    #: Roll-ups of the queued counts that failed (nothing lost: they stay queued).
    roll_up_errors: int = 0

    def snapshot(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Ingest:
    """Processes a list of messages in one store transaction and says which Acks to publish.

    ``handle`` never raises because of what a message contains: every message
    is stored, counted as a duplicate, or quarantined with its raw bytes and
    the reason. It raises only when the store itself fails, and then nothing
    of the list is committed and no Ack may be sent.
    """

    def __init__(
        self,
        store: Store,
        *,
        reasons_for_site: Callable[[str], Iterable[str]] = lambda site: DEFAULT_REASONS,
        now: Callable[[], datetime] = _utcnow,
        counters: IngestCounters | None = None,
        is_known: Callable[[str, str], bool] | None = None,
        quarantine_caps: QuarantineCaps = QuarantineCaps(),
        public_key: Callable[[str, str], bytes | None] | None = None,
    ):
        self.store = store
        self.caps = quarantine_caps
        #: (site, terminal) -> [UTC day, rows, bytes] quarantined that day; seeded
        #: from the store on first use each day, so a restart keeps the cap.
        self._usage: dict[tuple[str, str], list] = {}
        #: (site, terminal) -> provisioned for that site? None: every terminal is.
        self.is_known = is_known
        #: (site, terminal) -> its Ed25519 public key (32 bytes) or None (Registry.public_key).
        self.public_key = public_key
        self.reasons_for_site = reasons_for_site
        #: site -> (what reasons_for_site returned, it as a frozenset)
        self._reason_sets: dict[str, tuple[Iterable[str], frozenset[str]]] = {}
        self.now = now
        self.counters = counters if counters is not None else IngestCounters()
        self._lock = threading.Lock()

    def handle(self, messages: Sequence[Message]) -> list[tuple[str, Ack]]:
        """Store *messages* in one commit; return (ack topic, Ack) to publish after it.

        Each message is read and checked on its own; the valid ratings of all
        of them then go to the store in one insert (per-message inserts cost
        more than the ratings themselves when terminals send taps one by one).
        """
        received_at = self.now()
        counters = IngestCounters()
        with self._lock:
            try:
                return self._handle(messages, received_at, counters)
            except BaseException:
                # The commit failed: what the tally counted was not stored.
                self._usage.clear()
                raise

    def _handle(self, messages: Sequence[Message], received_at: datetime,
                counters: IngestCounters) -> list[tuple[str, Ack]]:
        with self.store.transaction():
            pending: list[_Pending] = []
            acks: list[tuple[str, Ack] | _Pending] = []
            for message in messages:
                topic, payload = message[0], message[1]
                retained = len(message) > 2 and bool(message[2])
                counters.messages += 1
                try:
                    outcome = self._one(topic, payload, retained, received_at, counters)
                except StoreError:
                    raise
                except Exception as exc:  # noqa: BLE001 - quarantined below, never dropped
                    log.exception("ingest failed on a message from %r", topic)
                    self._quarantine(topic, payload, f"internal error: {exc!r}", received_at, counters)
                    continue
                if isinstance(outcome, _Pending):
                    pending.append(outcome)
                if outcome is not None:
                    acks.append(outcome)
            if pending:
                # Chains and the head signature go in with the insert (no UPDATE after it).
                results = self.store.ingest_many(
                    [(p.site, p.terminal, p.ratings, (p.head[0], p.head[2]) if p.head else None)
                     for p in pending],
                    received_at)
                for item, result in zip(pending, results):
                    item.result = result
                    counters.ratings_accepted += len(result.accepted)
                    counters.ratings_duplicate += len(result.duplicate)
                self._chains(pending, received_at)
                for site, terminal in dict.fromkeys((p.site, p.terminal) for p in pending):
                    self.store.seen(site, terminal, received_at)
        out = []
        for item in acks:
            if isinstance(item, _Pending):
                result = item.result
                if not (result.accepted or result.duplicate or item.rejected):
                    continue
                item = (item.ack_topic, Ack(tuple(result.accepted), tuple(result.duplicate),
                                            tuple(item.rejected)))
            out.append(item)
        # Only after the commit: a failed transaction must not count.
        total = self.counters
        for name, value in counters.snapshot().items():
            setattr(total, name, getattr(total, name) + value)
        total.acks += len(out)
        return out

    # -- one message ------------------------------------------------------------

    def _quarantine(self, topic: object, payload: object, reason: str, received_at: datetime,
                    counters: IngestCounters, rating_id: str | None = None) -> None:
        topic_text = topic if isinstance(topic, str) else repr(topic)
        raw = bytes(payload) if isinstance(payload, (bytes, bytearray, memoryview)) else repr(payload).encode()
        reason = printable(reason, 1000)
        if len(raw) > MAX_QUARANTINE_PAYLOAD:
            reason = f"{reason} (payload of {len(raw)} bytes, first {MAX_QUARANTINE_PAYLOAD} kept)"
            raw = raw[:MAX_QUARANTINE_PAYLOAD]
        site, terminal = _source(topic_text)
        if not self._within_cap(site, terminal, len(raw), received_at, counters):
            return
        self.store.quarantine(received_at=received_at, topic=topic_text, payload=raw, reason=reason,
                              rating_id=rating_id, site=site, terminal=terminal)
        counters.quarantined += 1

    def _within_cap(self, site: str, terminal: str, size: int, received_at: datetime,
                    counters: IngestCounters) -> bool:
        """Count one quarantine row of *size* bytes for the terminal; False (and counted
        as dropped) when it is over its daily cap. The first drop of a day raises an alert."""
        day_start = received_at.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
        usage = self._usage.get((site, terminal))
        if usage is None or usage[0] != day_start:
            usage = [day_start, *self.store.quarantine_usage(site, terminal, day_start)]
            self._usage[site, terminal] = usage
        rows, size_so_far = usage[1], usage[2]
        if rows + 1 > self.caps.rows_per_day or size_so_far + size > self.caps.bytes_per_day:
            counters.quarantine_dropped += 1
            if len(usage) == 3:  # the first drop today
                usage.append(True)
                log.warning("%s/%s reached its daily quarantine cap (%d rows, %d bytes); dropping"
                            " its further bad messages until tomorrow (counted)", site, terminal,
                            self.caps.rows_per_day, self.caps.bytes_per_day)
                if is_identifier(site) and is_identifier(terminal) and not self._alerted_today(
                        site, terminal, day_start):
                    self.store.raise_alert(
                        site, terminal, QUARANTINE_ALERT,
                        f"{site}/{terminal} reached its daily quarantine cap ({rows} rows,"
                        f" {size_so_far} bytes): further bad messages are counted and dropped",
                        received_at)
            return False
        usage[1], usage[2] = rows + 1, size_so_far + size
        return True

    def _alerted_today(self, site: str, terminal: str, day_start: datetime) -> bool:
        # A restarted ingest must not raise the day's alert again.
        return any(a["site"] == site and a["terminal"] == terminal and a["kind"] == QUARANTINE_ALERT
                   and parse_timestamp("raised_at", a["raised_at"]) >= day_start
                   for a in self.store.open_alerts())

    def _one(self, topic: str, payload: bytes, retained: bool, received_at: datetime,
             counters: IngestCounters) -> "tuple[str, Ack] | _Pending | None":
        try:
            site, terminal, kind = _parsed_topic(topic) if type(topic) is str else parse_topic(topic)
        except ProtocolError as exc:
            self._quarantine(topic, payload, f"bad topic: {exc}", received_at, counters)
            return None
        if not isinstance(payload, (bytes, bytearray)):
            self._quarantine(topic, payload, "payload is not bytes", received_at, counters)
            return None
        if kind == RATINGS and retained:
            # A kiosk never retains a batch; a retained one would come back at
            # every restart. Refused whole: never counted, never Acked.
            counters.retained_refused += 1
            self._quarantine(topic, payload, "retained message on a ratings topic: refused (a batch"
                             " is never retained)", received_at, counters)
            return None
        if kind in (RATINGS, STATUS) and self.is_known is not None and not self.is_known(site, terminal):
            return self._unknown(topic, site, terminal, kind, bytes(payload), received_at, counters)
        if kind == RATINGS:
            return self._ratings(topic, site, terminal, bytes(payload), received_at, counters)
        if kind == STATUS:
            self._status(topic, site, terminal, bytes(payload), received_at, counters)
            return None
        self._quarantine(topic, payload, f"the server does not accept {kind} messages",
                         received_at, counters)
        return None

    def _unknown(self, topic: str, site: str, terminal: str, kind: str, payload: bytes,
                 received_at: datetime, counters: IngestCounters) -> tuple[str, Ack] | None:
        reason = f"unknown terminal: {terminal!r} is not provisioned for site {site!r}"
        self._quarantine(topic, payload, reason, received_at, counters)
        if kind != RATINGS:
            return None
        counters.batches += 1
        ids = readable_rating_ids(payload)
        counters.ratings_rejected += len(ids)
        return (make_topic(site, terminal, ACK), Ack(rejected=tuple((i, reason) for i in ids))) if ids else None

    def _status(self, topic: str, site: str, terminal: str, payload: bytes,
                received_at: datetime, counters: IngestCounters) -> None:
        try:
            status = Status.decode(payload, now=received_at)
        except ProtocolError as exc:
            self._quarantine(topic, payload, f"bad status: {exc}", received_at, counters)
            return
        self.store.update_status(site, terminal, status, received_at)
        counters.statuses += 1

    def _ratings(self, topic: str, site: str, terminal: str, payload: bytes,
                 received_at: datetime, counters: IngestCounters) -> "tuple[str, Ack] | _Pending | None":
        ack_topic = _ack_topic(site, terminal)
        counters.batches += 1
        try:
            batch = decode_batch(payload, self._reasons(site))
            if batch.site != site or batch.terminal != terminal:
                raise ProtocolError(
                    "batch", f"payload is for {batch.site}/{batch.terminal}, topic for {site}/{terminal}")
        except ProtocolError as exc:
            reason = f"bad batch: {exc}"
            self._quarantine(topic, payload, reason, received_at, counters)
            # Name the ids we can read, so the kiosk stops resending a batch
            # that can never be accepted; its bytes are in the quarantine.
            ids = readable_rating_ids(payload)
            counters.ratings_rejected += len(ids)
            return (ack_topic, Ack(rejected=tuple((i, reason) for i in ids))) if ids else None
        rejected = []
        for bad in batch.rejected:
            self._quarantine(topic, bad.raw, f"bad rating: {bad.error}", received_at, counters,
                             rating_id=bad.id)
            if bad.id is not None:
                rejected.append((bad.id, bad.error))
        counters.ratings_rejected += len(batch.rejected)
        key = self.public_key(site, terminal) if self.public_key is not None else None
        head = None
        if batch.head_sig is not None and key is not None:
            top = max(batch.ratings, key=lambda r: r.seq, default=None)
            if top is None or top.chain is None or not audit.verify_head(key, top.chain, batch.head_sig):
                return self._bad_signature(topic, site, terminal, payload, batch, rejected,
                                           received_at, counters)
            head = (top.seq, top.chain, batch.head_sig)
        return _Pending(ack_topic, site, terminal, batch.ratings, rejected, key=key, head=head)

    def _reasons(self, site: str) -> frozenset[str]:
        """The site's reason codes as decode_batch checks them, made a set once per configured tuple."""
        reasons = self.reasons_for_site(site)
        memo = self._reason_sets.get(site)
        if memo is None or memo[0] is not reasons:
            if len(self._reason_sets) > 1024:
                self._reason_sets.clear()
            memo = self._reason_sets[site] = (reasons, frozenset(reasons))
        return memo[1]

    def _bad_signature(self, topic: str, site: str, terminal: str, payload: bytes, batch,
                       rejected: list[tuple[str, str]], received_at: datetime,
                       counters: IngestCounters) -> tuple[str, Ack] | None:
        """A batch whose head signature fails: quarantined whole, every rating rejected, alerted."""
        reason = ("bad head signature: head_sig does not verify with the terminal's registered key"
                  " over the chain of the batch's highest-seq rating")
        counters.bad_signatures += 1
        self._quarantine(topic, payload, reason, received_at, counters)
        counters.ratings_rejected += len(batch.ratings)
        log.warning("%s/%s: a batch of %d ratings with a bad head signature quarantined",
                    site, terminal, len(batch.ratings))
        # One open alert per terminal: a flood of forged batches is one event to look at.
        if not any(a["site"] == site and a["terminal"] == terminal and a["kind"] == audit.SIGNATURE_ALERT
                   for a in self.store.open_alerts()):
            self.store.raise_alert(site, terminal, audit.SIGNATURE_ALERT,
                                   f"{site}/{terminal}: a batch of {len(batch.ratings)} ratings whose"
                                   " signature does not verify was quarantined, not counted (forged, or"
                                   " the kiosk's key does not match the registry)", received_at)
        ids = [r.id for r in batch.ratings] + [i for i, _ in rejected]
        if not ids:
            return None
        return (make_topic(site, terminal, ACK), Ack(rejected=tuple((i, reason) for i in ids)))

    def _chains(self, pending: Sequence["_Pending"], received_at: datetime) -> None:
        """Move each terminal's chain state on by its batches' new ratings (their chains
        went in with the insert): one locked read and one write for the whole commit."""
        moving = []
        for item in pending:
            accepted = item.result.accepted if item.result is not None else ()
            if len(accepted) == len(item.ratings):
                # Distinct ids of the batch, so all of them (a batch of one, nearly always).
                fresh = list(item.ratings)
            else:
                accepted = set(accepted)
                fresh = [r for r in item.ratings if r.id in accepted]
            if fresh or item.head is not None:
                moving.append((item, fresh))
        if not moving:
            return
        # Terminals in one order (the read locks them so): workers never deadlock.
        moving.sort(key=lambda m: (m[0].site, m[0].terminal))
        read = self.store.chain_states_for_update([(m[0].site, m[0].terminal) for m in moving])
        states = dict(read)
        for item, fresh in moving:
            site, terminal = item.site, item.terminal
            state, breaks = audit.track(
                states.get((site, terminal)), site, terminal, fresh,
                seed=audit.terminal_seed(site, terminal, item.key),
                previous_chain=lambda seq, site=site, terminal=terminal: self.store.rating_chain(
                    site, terminal, seq),
                now=received_at, head=item.head)
            states[site, terminal] = state
            for message in breaks:
                log.warning("%s", message)
                self.store.raise_alert(site, terminal, audit.CHAIN_ALERT, message, received_at)
        self.store.save_chain_states(
            [states[key] for key in dict.fromkeys((m[0].site, m[0].terminal) for m in moving)], read)


@dataclass
class _Pending:
    """A batch whose valid ratings wait for the commit's one insert."""

    ack_topic: str
    site: str
    terminal: str
    ratings: Sequence[Rating]
    rejected: list[tuple[str, str]]
    #: The terminal's public key, and the batch's verified (seq, chain, head_sig).
    key: bytes | None = None
    head: tuple[int, str, str] | None = None
    result: BatchResult | None = None


#: A terminal sends on the same topics all the time: each is parsed and checked once
#: (parse_topic raises for a bad one, and that is not kept).
_parsed_topic = functools.lru_cache(maxsize=8192)(parse_topic)


@functools.lru_cache(maxsize=8192)
def _ack_topic(site: str, terminal: str) -> str:
    return make_topic(site, terminal, ACK)


def _source(topic: str) -> tuple[str, str]:
    """(site, terminal) a topic names, for quarantine caps; printable, and ("", "") if none."""
    parts = topic.split("/")
    if len(parts) != 5:
        return "", ""
    return printable(parts[2], 64), printable(parts[3], 64)
