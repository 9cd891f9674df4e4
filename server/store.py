"""The server's store: the Store protocol its callers use, and its one implementation over SQLite or PostgreSQL."""

from __future__ import annotations

import calendar
import collections
import contextlib
import functools
import json
import logging
import operator
import sqlite3
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Protocol, Sequence, Union, runtime_checkable
from zoneinfo import ZoneInfo

from sqlite_utils import Database

from kiosk.protocol import (SCORES, Rating, Status, bound_status_fields, format_timestamp, in_time_window,
                            parse_timestamp)
from server.aggregate import AGGREGATE_KEYS, Distribution, empty_distribution
from server.dialect import CHUNK, Postgres, SQLite
from server.errors import StoreError
from server.schema import (AUDIT_COLUMNS, CHAIN_STATE_COLUMNS, INSERT_COLUMNS, MIGRATIONS, NULLABLE,
                           RATING_COLUMNS, ROLLUPS, SCORE_COUNT_SUMS, SCORE_COUNTS, TABLES, Backfill, render,
                           rollup_tail, score_counts)

log = logging.getLogger(__name__)

#: ratings.csv: the contract's columns, then the local day each rating is counted on.
CSV_COLUMNS = (*RATING_COLUMNS, "local_day")


#: The contract's earliest plausible tap: an earlier kiosk time reads as when the rating was received.
FIRST_VALID_AT = datetime(2020, 1, 1, tzinfo=timezone.utc)

@dataclass(frozen=True)
class Filters:
    """Which ratings a query covers: local days [date_from, date_to], and optionally
    one site, one terminal, and the set of sites a caller may see (None: all)."""

    date_from: date
    date_to: date
    site: str | None = None
    terminal: str | None = None
    sites: frozenset[str] | None = None
    #: None: every rating; False: leave out those flagged suspect; True: only those.
    suspect: bool | None = None


@dataclass(frozen=True)
class BatchResult:
    """Ids of one ingest_batch call: newly stored, and already known (each id once)."""

    accepted: list[str]
    duplicate: list[str]


@runtime_checkable
class Store(Protocol):
    """Everything the server's modules ask of storage; no caller writes SQL.

    SQLStore (below) implements it once for SQLite and PostgreSQL; callers
    type their store as Store, never as one class.
    """

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """Everything inside is committed at once (durably) or not at all; nests."""

    def ingest_batch(self, site: str, terminal: str, ratings: Sequence[Rating],
                     received_at: datetime) -> BatchResult:
        """Store ratings idempotently by (site, terminal, id); one already stored, or
        repeated, is a duplicate. Another terminal's ratings never make one a duplicate."""

    def ingest_many(self, batches: Sequence[IngestBatch],
                    received_at: datetime) -> list[BatchResult]:
        """ingest_batch for many (site, terminal, ratings[, head]) at once, one result each, in order.

        One insert for all: an identity already stored, or met earlier in the same
        call (a kiosk's resend in the same commit), is that batch's duplicate.
        Each new rating is stored with its audit chain, and the rating a batch's
        *head* (seq, head_sig) names with that signature, in the same INSERT.
        Never raises on a rating that passed kiosk.protocol's validation: an
        ``at`` outside the time window is counted by *received_at* and stored
        with clock_suspect set.
        """

    def quarantine(self, *, received_at: datetime, topic: str | None, payload: bytes,
                   reason: str, rating_id: str | None = None, site: str | None = None,
                   terminal: str | None = None) -> None:
        """Keep a message or rating that failed a rule, with its raw bytes and why
        (and the terminal it came from, when the topic names one)."""

    def quarantine_usage(self, site: str, terminal: str, since: datetime) -> tuple[int, int]:
        """(rows, payload bytes) quarantined for one terminal since *since*."""

    def prune_quarantine(self, received_before: datetime) -> int:
        """Retention: delete quarantine rows received before *received_before*; how many went."""

    def update_status(self, site: str, terminal: str, status: Status,
                      received_at: datetime) -> None:
        """Record a terminal's (retained) status, or its Last Will."""

    def seen(self, site: str, terminal: str, received_at: datetime) -> None:
        """A terminal spoke (a ratings batch): note when, adding it if new."""

    def summary(self, filters: Filters) -> Distribution: ...

    def aggregates(self, by: Sequence[str], filters: Filters) -> list[tuple[tuple, Distribution]]: ...

    def terminals(self, site: str | None = None, sites: frozenset[str] | None = None,
                  include_retired: bool = False) -> list[dict[str, Any]]:
        """The terminals board: each terminal's state and last status; retired ones
        (`onetap-server terminal retire`) only with *include_retired*."""

    def retire_terminal(self, site: str, terminal: str, at: datetime) -> bool:
        """Take a terminal off the board and out of the alert rules; its ratings stay.
        False when it was retired already."""

    def iter_ratings(self, filters: Filters, *, with_suspect: bool = False) -> Iterator[dict[str, Any]]: ...

    def last_taps(self, sites: frozenset[str] | None = None) -> dict[tuple[str, str], str]:
        """When each terminal's newest stored rating was tapped, by (site, terminal)."""

    def counts(self) -> dict[str, int]:
        """ratings, quarantine, and terminals by state, for /metrics."""

    def quarantine_count(self) -> int: ...

    def prune_ratings(self, before_day: str, received_before: datetime | None = None) -> int:
        """Retention: delete the raw ratings whose local ``day`` is before *before_day*
        (``YYYY-MM-DD``) and, when given, that were received before *received_before*;
        return how many went.

        The rollup count tables stay exactly as they are, so summary() and
        aggregates() still answer for those days (only iter_ratings, the CSV,
        loses them); nothing may ever rebuild a rollup from the ratings table
        afterwards. Deletes in batches, each its own short transaction, so
        ingest is never held up for long; safe to run again after a crash.
        """

    def quarantined(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest quarantined messages, raw payload included."""

    def ratings_after(self, pk: int, limit: int = 50_000) -> list[dict[str, Any]]:
        """Ratings stored after row *pk* (SUSPECT_COLUMNS), oldest first."""

    def terminal_ratings(self, site: str, terminal: str, seq_from: int, seq_to: int,
                         limit: int = 1_000_000) -> list[dict[str, Any]]:
        """One terminal's ratings with seq in [seq_from, seq_to], in seq order."""

    def mark_suspect(self, pks: Sequence[int]) -> int:
        """Flag ratings as suspect, moving their counts in every rollup; how many were newly flagged."""

    def roll_up(self, limit: int = ...) -> int:
        """Move the oldest queued counts into the rollups; how many queue rows were moved."""

    def low_scores_since(self, day: str, max_score: int) -> list[dict[str, Any]]: ...

    # -- the audit chain (server/audit.py) --

    def rating_chain(self, site: str, terminal: str, seq: int) -> str | None:
        """The stored chain of the terminal's rating *seq* (the first stored, if several)."""

    def chain_state(self, site: str, terminal: str, *, for_update: bool = False) -> dict[str, Any] | None:
        """What ingest verified of the terminal's chain; *for_update* locks it for the commit."""

    def chain_states(self, site: str | None = None) -> list[dict[str, Any]]: ...

    def chain_states_for_update(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
        """The stored chain states of (site, terminal) *keys*, locked for the commit in key order."""

    def save_chain_state(self, state: Mapping[str, Any]) -> None: ...

    def save_chain_states(self, states: Sequence[Mapping[str, Any]],
                          previous: Mapping[tuple[str, str], Mapping[str, Any]] | None = None) -> None:
        """Upsert chain states, one per terminal; *previous*: their rows as chain_states_for_update read them."""

    def audit_spans(self, site: str, day_from: str, day_to: str) -> list[tuple[str, int, int]]:
        """(terminal, lowest seq, highest seq) of the site's ratings on local days in [day_from, day_to]."""

    def audit_rows(self, site: str, terminal: str, seq_from: int, seq_to: int) -> list[dict[str, Any]]:
        """The terminal's ratings with seq in [seq_from, seq_to], in seq order."""

    def audit_neighbours(self, site: str, terminal: str, seq_from: int,
                         seq_to: int) -> tuple[int | None, int | None]:
        """(highest seq below seq_from, lowest seq >= seq_to carrying a head signature)."""

    def audit_cut(self, site: str, terminal: str, before_day: str) -> dict[str, Any] | None:
        """The terminal's highest-seq rating on a local day before *before_day* (what pruning deletes)."""

    def get_meta(self, key: str, default: str | None = None) -> str | None: ...

    def set_meta(self, key: str, value: str) -> None: ...

    def add_mark(self, site: str | None, day: date, note: str, created_by: str,
                 created_at: datetime) -> int: ...

    def marks(self, sites: frozenset[str] | None = None) -> list[dict[str, Any]]: ...

    def delete_mark(self, pk: int) -> None: ...

    def open_alerts(self) -> list[dict[str, Any]]: ...

    def alerts(self, sites: frozenset[str] | None = None, limit: int = 200) -> list[dict[str, Any]]: ...

    def raise_alert(self, site: str, terminal: str | None, kind: str, message: str,
                    now: datetime) -> int: ...

    def clear_alert(self, pk: int, now: datetime) -> None: ...

    def ack_alert(self, pk: int, user: str, now: datetime,
                  sites: frozenset[str] | None = None) -> bool: ...

    def add_session(self, token_hash: str, user: str, csrf: str, now: datetime,
                    expires: datetime) -> None: ...

    def get_session(self, token_hash: str) -> dict[str, Any] | None: ...

    def delete_session(self, token_hash: str) -> None: ...

    def ping(self) -> bool: ...

    def close(self) -> None: ...


#: Quarantine rows per commit when pruning.
_PRUNE_BATCH = 10_000
#: What burst detection reads of a rating: the kiosk's claims and the server's own evidence.
SUSPECT_COLUMNS = ("pk, site, terminal, seq, score, at, clock_synced, received_at, clock_suspect,"
                   " suspect")


def _iso(moment: datetime) -> str:
    return format_timestamp(moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc))


def is_retired(retired_at: str | None, last_seen: str | None) -> bool:
    """Whether a terminal is retired: `terminal retire` set *retired_at* and it has
    not spoken since (a terminal provisioned again under the name comes back)."""
    if retired_at is None:
        return False
    return (last_seen is None
            or parse_timestamp("last_seen", last_seen) <= parse_timestamp("retired_at", retired_at))


def smallest_rollup(needed: set[str], grain: str = "day",
                    pinned: set[str] | frozenset[str] = frozenset()) -> str | None:
    """The smallest rollup by *grain* (``day`` or ``month``) holding every column in
    *needed* besides its time (a daily one holds weekday with its day), or None.

    A rollup keyed by a site or terminal before its time serves only a query
    whose filters hold that column to one value or a few (*pinned*): for any
    other it would be read whole, whatever the range."""
    for name, dims in ROLLUPS:
        if grain in dims and (dims[0] == grain or dims[0] in pinned) \
                and needed <= {*dims, *rollup_tail(dims)} - {"suspect", "score"}:
            return name
    return None


#: Each rollup's dimensions, as a set.
_ROLLUP_DIMS = {name: set(dims) for name, dims in ROLLUPS}


def filter_columns(filters: Filters) -> set[str]:
    """The columns a query's *filters* hold to one value or a few, besides its days."""
    needed = set()
    if filters.site is not None or filters.sites is not None:
        needed.add("site")
    if filters.terminal is not None:
        needed.add("terminal")
    return needed


def _month(index: int) -> str:
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def range_parts(needed: set[str], first: date, last: date,
                pinned: set[str] | frozenset[str] = frozenset()) -> list[tuple[str, str, str, str, int]]:
    """Where the local days [first, last] are counted, for a query needing the columns
    *needed* (``day`` among them if it groups by day) whose filters pin *pinned*
    (smallest_rollup): (rollup, its time column, low, high, sign) parts whose
    signed sum counts each day of the range once.

    Whole calendar months are read from a monthly rollup, the rest from a daily
    one; a month the range covers more than half of is read whole, less the
    days it does not cover (sign -1). So three years are some 37 months and at
    most 30 days, whatever the dimensions."""
    daily = smallest_rollup(needed, "day", pinned)
    if daily is None:
        raise StoreError(f"no rollup holds {sorted(needed)}")
    monthly = None if "day" in needed else smallest_rollup(needed, "month", pinned)
    if monthly is None or first > last:
        return [(daily, "day", first.isoformat(), last.isoformat(), 1)]
    one = timedelta(days=1)
    first_month, last_month = first.year * 12 + first.month - 1, last.year * 12 + last.month - 1
    low_month, high_month = first_month, last_month
    days: list[tuple[date, date, int]] = []
    for index in sorted({first_month, last_month}):
        year, month = divmod(index, 12)
        start = date(year, month + 1, 1)
        end = start.replace(day=calendar.monthrange(year, month + 1)[1])
        low, high = max(start, first), min(end, last)
        inside = (high - low).days + 1
        outside = (end - start).days + 1 - inside
        if outside == 0:
            continue
        if outside < inside:
            if low > start:
                days.append((start, low - one, -1))
            if high < end:
                days.append((high + one, end, -1))
            continue
        days.append((low, high, 1))
        if index == first_month:
            low_month += 1
        if index == last_month:
            high_month -= 1
    parts = [(daily, "day", low.isoformat(), high.isoformat(), sign) for low, high, sign in days]
    if low_month <= high_month:
        parts.append((monthly, "month", _month(low_month), _month(high_month), 1))
    return parts


class Buckets:
    """Day, hour and ISO weekday of ratings in a time zone: by ``at`` when the kiosk's
    clock was synchronised (and ``at`` is inside the time window), else by when the
    server received them."""

    def __init__(self, tz: ZoneInfo):
        self.tz = tz
        #: minute and offset of an ``at`` -> [its moment, its bucket once computed]
        self._cache: dict[str, list] = {}

    def of(self, moment: datetime) -> tuple[str, int, int]:
        local = moment.astimezone(self.tz)
        return local.strftime("%Y-%m-%d"), local.hour, local.isoweekday()

    @staticmethod
    def minute(at: str) -> str:
        """The minute and offset of *at*: every rating with the same one lands in the same hour."""
        return at[:16] + at[-6:]

    def rating(self, rating: Rating, received: tuple[str, int, int],
               received_at: datetime) -> tuple[tuple[str, int, int], bool]:
        """(bucket, clock_suspect) of a valid rating received at *received_at*.

        clock_suspect: ``at`` is outside the time window (kiosk.protocol.in_time_window);
        such a rating, like an unsynchronised one, takes the *received* bucket.
        """
        at = rating.at
        # Parsing and converting once per minute keeps a 500-rating batch
        # cheap. (So the window is checked to the minute, which is plenty.)
        key = self.minute(at)
        entry = self._cache.get(key)
        if entry is None:
            if len(self._cache) > 10_000:
                self._cache.clear()
            entry = self._cache[key] = [parse_timestamp("at", at), None]
        if not in_time_window(entry[0], received_at):
            return received, True
        if not rating.clock_synced:
            return received, False
        if entry[1] is None:
            entry[1] = self.of(entry[0])
        return entry[1], False


#: A rating's identity: (site, terminal, id).
Identity = tuple[str, str, str]
#: What ingest_many stores of one batch: (site, terminal, ratings), or with the
#: batch's verified head (seq, head_sig) as a fourth item.
IngestBatch = Union[tuple[str, str, Sequence[Rating]],
                    tuple[str, str, Sequence[Rating], Optional[tuple[int, str]]]]


class IngestPlan:
    """What ingest_many stores, the same way in every backend.

    The first sighting of an identity (site, terminal, id), in call order, may
    be stored; a later one in another batch of the same call is that batch's
    duplicate. ``rows`` holds the insert parameters (INSERT_COLUMNS order) of
    each first sighting, by identity.

    Never raises on a rating that passed validation: an ``at`` outside the time
    window (kiosk.protocol.clock_suspect) is bucketed by *received_at* and
    marked clock_suspect, so it never lands on the far day it claims.
    """

    def __init__(self, batches: Sequence[IngestBatch], received_at: datetime, buckets: Buckets):
        self.count = len(batches)
        self.first: dict[Identity, int] = {}
        self.repeats: list[tuple[int, str]] = []
        self.rows: dict[Identity, tuple] = {}
        received_text = _iso(received_at)
        received = buckets.of(received_at)
        # A rating's bucket depends only on its minute, offset and clock_synced
        # (Buckets.rating), and received_at is one for the whole plan: each is
        # worked out once here (a drain's 500-rating batch holds a handful).
        bucket_of: dict[tuple[str, bool], tuple[tuple[str, int, int], int]] = {}
        first, rows, repeats, minute_of = self.first, self.rows, self.repeats, buckets.minute
        for index, (site, terminal, ratings, *rest) in enumerate(batches):
            head_seq, head_sig = rest[0] if rest and rest[0] is not None else (None, None)
            for rating in ratings:
                rating_id = rating.id
                key = (site, terminal, rating_id)
                if key in first:
                    if first[key] != index:
                        repeats.append((index, rating_id))
                    continue
                first[key] = index
                at, synced = rating.at, rating.clock_synced
                minute = (minute_of(at), synced)
                bucket = bucket_of.get(minute)
                if bucket is None:
                    bucket = bucket_of[minute] = _bucket(buckets, rating, received, received_at)
                (day, hour, weekday), suspect = bucket
                seq, chain = rating.seq, rating.chain
                rows[key] = (
                    rating_id, site, terminal, seq, rating.score, at, int(synced), rating.reason,
                    rating.age_group, rating.lang, rating.input, received_text, day, hour, weekday,
                    suspect, chain, head_sig if seq == head_seq and chain is not None else None)

    def counts(self, stored: set[Identity] | frozenset[Identity]) -> dict[tuple, int]:
        """The rollup counts (full key -> n) of the newly *stored* ratings."""
        rows = self.rows
        new = rows.values() if len(stored) == len(rows) else (rows[key] for key in stored)
        # Counted by the raw fields in C, then each distinct one made a rollup key.
        return {_rollup_key_of(fields, 0): n for fields, n in collections.Counter(map(_ROLLUP_FIELDS, new)).items()}

    def results(self, stored: set[Identity] | frozenset[Identity]) -> list[BatchResult]:
        """Each batch's accepted (newly *stored*) and duplicate ids, each id once."""
        results = [BatchResult([], []) for _ in range(self.count)]
        for key, index in self.first.items():
            (results[index].accepted if key in stored else results[index].duplicate
             ).append(key[2])
        for index, rating_id in dict.fromkeys(self.repeats):
            results[index].duplicate.append(rating_id)
        return results


def _bucket(buckets: Buckets, rating: Rating, received: tuple[str, int, int],
            received_at: datetime) -> tuple[tuple[str, int, int], int]:
    """Buckets.rating with clock_suspect as 0 or 1, and never raising."""
    try:
        bucket, suspect = buckets.rating(rating, received, received_at)
    except (OverflowError, ValueError):
        # Inside the window nothing overflows and a valid rating
        # parses; should either ever fail, it is still counted, by receipt.
        log.exception("cannot bucket rating %s at %r", rating.id, rating.at)
        return received, 1
    return bucket, int(suspect)


#: The fields of a ratings row (INSERT_COLUMNS order) that make its rollup key.
_ROLLUP_FIELDS = operator.itemgetter(12, 13, 14, 1, 2, 7, 8, 9, 10, 4)


def _rollup_key_of(fields: tuple, suspect: int) -> tuple:
    """_ROLLUP_FIELDS of a row -> the full rollup key (_KEY_INDEX order)."""
    day, hour, weekday, site, terminal, reason, age_group, lang, input_, score = fields
    return (day, hour, weekday, site, terminal, reason or "", age_group or "", lang, input_,
            suspect, score, day[:7])


def _rollup_key(row: Sequence[Any], suspect: int) -> tuple:
    """A ratings row (INSERT_COLUMNS order) -> the full rollup key (_KEY_INDEX order)."""
    return _rollup_key_of(_ROLLUP_FIELDS(row), suspect)


#: Position of each rollup column in _rollup_key()'s tuple.
_KEY_INDEX = {name: i for i, name in enumerate(
    ("day", "hour", "weekday", "site", "terminal", "reason", "age_group", "lang", "input", "suspect", "score",
     "month"))}


@dataclass
class _Pending:
    """Rollup counts and terminal updates of one (nested) transaction level.

    They are written just before the outermost commit, in key order: every
    ingest worker touches the same few hot rollup and terminal rows, so
    writing them last keeps their row locks short, and one global order means
    two workers can wait on each other but never deadlock.
    """

    counts: dict[tuple, int] = field(default_factory=dict)
    terminals: dict[tuple[str, str], list[tuple]] = field(default_factory=dict)

    def count(self, row: Sequence[Any], suspect: int, delta: int) -> None:
        key = _rollup_key(row, suspect)
        self.counts[key] = self.counts.get(key, 0) + delta

    def merge(self, other: "_Pending") -> None:
        for key, n in other.counts.items():
            self.counts[key] = self.counts.get(key, 0) + n
        for key, ops in other.terminals.items():
            self.terminals.setdefault(key, []).extend(ops)


#: The chain_state columns audit.track moves on for a terminal without a new gap, break or
#: checkpoint; the others (with site and terminal) are the rest of the row.
_CHAIN_MOVING = ("contiguous_seq", "max_seq", "tip_seq", "tip_chain", "head_seq", "head_chain",
                 "head_sig", "head_at", "updated_at")
_chain_rest = operator.itemgetter(*(c for c in CHAIN_STATE_COLUMNS if c not in _CHAIN_MOVING))


def _store_errors(method):
    """Let callers see StoreError, never the driver's own, from a read."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except self.dialect.error as exc:
            raise StoreError(f"database error: {exc}") from exc
    return wrapper


def _score_adds(name: str) -> str:
    return ", ".join(f"{c} = {name}.{c} + excluded.{c}" for c in SCORE_COUNTS)


_ROLLUP_UPSERTS = [
    # itemgetters project a full key onto the rollup's columns, and a row onto its key, in C.
    (name, (*dims, *rollup_tail(dims)),
     operator.itemgetter(*(_KEY_INDEX[c] for c in (*dims, *rollup_tail(dims)))),
     f"ON CONFLICT ({', '.join((*dims, 'suspect'))}) DO UPDATE SET {_score_adds(name)}",
     f"DELETE FROM {name} WHERE {' AND '.join(f'{c} = ?' for c in (*dims, 'suspect'))}"
     f" AND {' AND '.join(f'{c} <= 0' for c in SCORE_COUNTS)}",
     operator.itemgetter(*(i for i, c in enumerate((*dims, *rollup_tail(dims))) if c != "weekday"
                           or "weekday" in dims)))
    for name, dims in ROLLUPS]

#: Queue rows one roll_up moves at most: about two seconds (server/link.py
#: ROLL_UP_EVERY_S) of 10,000 taps a second from as many terminals, so one
#: roll-up holds the write lock briefly.
ROLL_UP_ROWS = 20_000
#: The advisory lock number of the roll-up (PostgreSQL): one at a time, so its
#: upserts never meet another writer of the rollups.
ROLL_UP_JOB = 0x6F6E6574  # "onet"

#: The full key's column names (_KEY_INDEX order) and n: the queue's columns, and what dialects tally.
_KEY_COLUMNS = (*_KEY_INDEX, "n")
_KEY_KINDS = tuple("name" if c == "month" else "count" if c == "n" else TABLES["ratings"].column(c).kind
                   for c in _KEY_COLUMNS)
_NUMBERS = {c for c, kind in zip(_KEY_COLUMNS, _KEY_KINDS) if kind != "name"}
#: A terminal spoke (Store.seen): its last_seen, the row added if it is new.
_SEEN_COLUMNS = ("site", "terminal", "last_seen", "updated_at")
_SEEN_TAIL = "ON CONFLICT (site, terminal) DO UPDATE SET last_seen = excluded.last_seen"
_SEEN_SQL = f"INSERT INTO terminals ({', '.join(_SEEN_COLUMNS)}) VALUES (?, ?, ?, ?) {_SEEN_TAIL}"


#: What a roll-up sends the database: each full key without its score, with its
#: count of each score (SCORE_COUNTS), as the rollups hold them. Collapsed in
#: Python first: two seconds of a terminal's taps are one row, not one per
#: score, for each of the 53 GROUP BYs to read (the queue's rows are per score).
_SCORE_AT = _KEY_INDEX["score"]
_SENT_COLUMNS = (*(c for c in _KEY_INDEX if c != "score"), *SCORE_COUNTS)
_SENT_KINDS = tuple("name" if c == "month" else "count" if c in SCORE_COUNTS else TABLES["ratings"].column(c).kind
                    for c in _SENT_COLUMNS)

#: The keys without their terminal, summed: every rollup without a terminal
#: reads these, which are far fewer than the full keys when many terminals
#: report (a second of 2,000 one-rating messages from 500 terminals of a site
#: sums to a few dozen), instead of grouping every full key again.
_SITE_DIMS = tuple(c for c in _SENT_COLUMNS if c != "terminal" and c not in SCORE_COUNTS)
_SITE_KEYS = ("site_keys", (*_SITE_DIMS, *SCORE_COUNTS),
              f"SELECT {', '.join(_SITE_DIMS)}, {', '.join(SCORE_COUNT_SUMS)} FROM rollup_keys"
              f" GROUP BY {', '.join(_SITE_DIMS)}")

#: A queued key's count of each score, 1 to 5 (as a rollup's SCORE_COUNTS).
_SCORE_SUMS = score_counts("score", "n")
#: The same, summed over a rollup's rows.
_ROLLUP_SUMS = tuple(f"coalesce({total}, 0)" for total in SCORE_COUNT_SUMS)


def _grouped_insert(name: str, dims: tuple[str, ...], byte_order: str) -> str:
    """One rollup's upsert from the full keys (``rollup_keys``) or, without a
    terminal, from ``site_keys``, summed in the database."""
    columns = (*dims, *rollup_tail(dims))
    source = "rollup_keys" if "terminal" in dims else _SITE_KEYS[0]
    # Key order as Python sorts it (code points) whatever the database's locale: the lock order.
    order = ", ".join(c if c in _NUMBERS else f"{c}{byte_order}" for c in columns)
    # WHERE true: without it SQLite's parser could take ON CONFLICT for a join's ON.
    return (f"INSERT INTO {name} ({', '.join((*columns, *SCORE_COUNTS))})"
            f" SELECT {', '.join(columns)}, {', '.join(SCORE_COUNT_SUMS)}"
            f" FROM {source} WHERE true GROUP BY {', '.join(columns)} ORDER BY {order}"
            f" ON CONFLICT ({', '.join((*dims, 'suspect'))}) DO UPDATE SET {_score_adds(name)}")


@functools.cache
def _grouped_inserts(byte_order: str) -> tuple[str, ...]:
    return tuple(_grouped_insert(name, dims, byte_order) for name, dims in ROLLUPS)


class SQLStore:
    """The Store on one connection of a dialect (server.dialect); use one instance per thread.

    Days, hours and weekdays (ISO, Monday = 1) are computed in *timezone* when
    a rating is stored: from its ``at`` when the kiosk clock was synchronised,
    else from when the server received it. Every query is written once, with
    ``?`` placeholders; the dialect renders them.
    """

    def __init__(self, dialect: SQLite | Postgres, timezone: str = "Asia/Seoul"):
        self.dialect = dialect
        self.tz = ZoneInfo(timezone)
        self.buckets = Buckets(self.tz)
        self._pending: list[_Pending] = []
        self._seen_at: tuple[datetime, str] | None = None
        self.dialect.migrate([(name, functools.partial(self._run_steps, steps))
                              for name, steps in MIGRATIONS])

    @property
    def conn(self) -> Any:
        """The dialect's current connection (for tests and the benchmarks)."""
        return self.dialect.conn

    def _run_steps(self, steps: Sequence[Any]) -> None:
        for step in steps:
            if isinstance(step, Backfill):
                step.fn(self._rows)
            for sql in render(step, self.dialect.types, self.dialect.clustered):
                self._execute(sql)

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.dialect.connection(bool(self._pending)).execute(self.dialect.sql(sql), params)

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        cursor = self._execute(sql, params)
        return cursor.fetchall() if cursor.description else []

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        try:
            return self._rows(sql, params)
        except self.dialect.error as exc:
            raise StoreError(f"database error: {exc}") from exc

    def _dicts(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cursor = self._execute(sql, params)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    # -- writing --------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        self.dialect.connection(bool(self._pending))
        outer = not self._pending
        self._pending.append(_Pending())
        try:
            try:
                with self.dialect.atomic():
                    yield
                    if outer:
                        self._flush(self._pending[-1])
            except self.dialect.error as exc:
                # Callers tell a failing store (retry later, send no Ack) from bad input.
                raise StoreError(f"database error: {exc}") from exc
        except BaseException:
            self._pending.pop()
            raise
        done = self._pending.pop()
        if self._pending:
            self._pending[-1].merge(done)

    @contextlib.contextmanager
    def _joined(self) -> Iterator[None]:
        """The caller's transaction, with no savepoint of its own; else a new transaction.

        For the writes ingest makes in every commit (the insert, the chain
        states), whose failure fails the caller's whole transaction anyway: a
        savepoint is two more round trips per call on PostgreSQL.
        """
        if self._pending:
            yield
            return
        with self.transaction():
            yield

    def _flush(self, pending: _Pending) -> None:
        # The rollups last: their few hot rows are shared by every worker, so hold them the shortest.
        # Runs of one statement (a commit's many terminals each seen) go as one executemany.
        run_sql, run = None, []
        for (site, terminal), ops in sorted(pending.terminals.items()):
            for sql, *params in ops:
                if sql != run_sql and run:
                    self._terminal_run(run_sql, run)
                    run = []
                run_sql = sql
                run.append((site, terminal, *params))
        if run:
            self._terminal_run(run_sql, run)
        # The counts wait in the queue for roll_up: one small insert here
        # instead of an upsert into every rollup inside each commit (and, with
        # many workers, inside the database's one write lock).
        queued = [(*key, n) for key, n in pending.counts.items() if n != 0]
        if queued:
            self.dialect.bulk("rollup_queue", _KEY_COLUMNS, queued)

    def _terminal_run(self, sql: str, rows: list[tuple]) -> None:
        """Run *sql* for each of *rows* (in order, a terminal's rows next to each other)."""
        if sql != _SEEN_SQL:
            self.dialect.many(sql, rows)
            return
        # The terminals a commit saw, as one statement: on PostgreSQL column
        # arrays instead of a statement each (psycopg's executemany of them was
        # an eighth of a worker's CPU at 500 terminals, docs/benchmarks.md).
        # One statement may touch a row only once there: a terminal seen twice
        # is one row, as running both would leave it (the first time it was
        # added, the last time seen).
        merged = [rows[0]]
        for row in rows[1:]:
            if row[:2] == merged[-1][:2]:
                merged[-1] = (*row[:3], merged[-1][3])
            else:
                merged.append(row)
        self.dialect.bulk("terminals", _SEEN_COLUMNS, merged, _SEEN_TAIL)

    def _add_to_rollups(self, counts: dict[tuple, int]) -> None:
        """Add *counts* (full key -> n) to every rollup, in key order (the lock order)."""
        if all(n > 0 for n in counts.values()):
            # Every rollup from the full keys, sent once and tallied by the
            # database: no Python per rollup and row, and on PostgreSQL one
            # statement instead of one per rollup (their adapting was most of the work).
            sent: dict[tuple, list[int]] = {}
            for key, n in counts.items():
                short = key[:_SCORE_AT] + key[_SCORE_AT + 1:]
                scores = sent.get(short)
                if scores is None:
                    sent[short] = scores = [0, 0, 0, 0, 0]
                scores[key[_SCORE_AT] - 1] += n
            rows = [(*key, *scores) for key, scores in sent.items()]
            self.dialect.grouped(_SENT_COLUMNS, _SENT_KINDS, rows, _grouped_inserts(self.dialect.byte_order),
                                 derived=(_SITE_KEYS,))
            return
        # Subtractions (a rating marked suspect moves between keys; rare): rows at zero are deleted.
        for name, columns, project, upsert, delete, key_of in _ROLLUP_UPSERTS:
            projected: dict[tuple, list[int]] = {}
            for key, n in counts.items():
                scores = projected.setdefault(project(key), [0] * len(SCORE_COUNTS))
                scores[key[_SCORE_AT] - 1] += n
            # Key order (weekday, a function of day, sorts with it) = lock order.
            rows = sorted((*k, *scores) for k, scores in projected.items() if any(scores))
            if not rows:
                continue
            self.dialect.bulk(name, (*columns, *SCORE_COUNTS), rows, upsert)
            gone = [key_of(r[:len(columns)]) for r in rows if min(r[len(columns):]) < 0]
            if gone:
                self.dialect.many(delete, gone)

    def roll_up(self, limit: int = ROLL_UP_ROWS) -> int:
        """Move up to *limit* of the oldest queued counts into the rollups, in one
        transaction; how many queue rows were moved (0: none waiting, or another
        roll-up is running). Answers are the same before and after."""
        if not self._read("SELECT 1 FROM rollup_queue LIMIT 1"):
            return 0
        with self.transaction():
            if not self.dialect.exclusive(ROLL_UP_JOB):
                return 0
            # Oldest first: a rating's own count is always moved before a later
            # one that takes it off a key (mark_suspect), so no rollup row goes negative.
            rows = self._rows(f"DELETE FROM rollup_queue WHERE pk IN"
                              f" (SELECT pk FROM rollup_queue ORDER BY pk LIMIT ?)"
                              f" RETURNING {', '.join(_KEY_COLUMNS)}", [limit])
            counts: dict[tuple, int] = {}
            for row in rows:
                key = tuple(row[:-1])
                counts[key] = counts.get(key, 0) + row[-1]
            counts = {key: n for key, n in counts.items() if n != 0}
            if counts:
                self._add_to_rollups(counts)
        return len(rows)

    def ingest_batch(self, site: str, terminal: str, ratings: Sequence[Rating],
                     received_at: datetime) -> BatchResult:
        return self.ingest_many([(site, terminal, ratings)], received_at)[0]

    def ingest_many(self, batches: Sequence[IngestBatch],
                    received_at: datetime) -> list[BatchResult]:
        with self._joined():
            plan = IngestPlan(batches, received_at, self.buckets)
            stored: set = set()
            if plan.rows:
                stored = self.dialect.insert_new("ratings", INSERT_COLUMNS, plan.rows,
                                                 ("site", "terminal", "id"))
                counts = self._pending[-1].counts
                for key, n in plan.counts(stored).items():
                    counts[key] = counts.get(key, 0) + n
            return plan.results(stored)

    def quarantine(self, *, received_at: datetime, topic: str | None, payload: bytes,
                   reason: str, rating_id: str | None = None, site: str | None = None,
                   terminal: str | None = None) -> None:
        text = self.dialect.text
        with self.transaction():
            self._execute(
                "INSERT INTO quarantine (received_at, topic, payload, reason, rating_id, site, terminal)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (_iso(received_at), text(topic), bytes(payload), text(reason), text(rating_id),
                 text(site), text(terminal)))

    @_store_errors
    def quarantine_usage(self, site: str, terminal: str, since: datetime) -> tuple[int, int]:
        (rows, size), = self._rows(
            "SELECT count(*), coalesce(sum(length(payload)), 0) FROM quarantine"
            " WHERE site = ? AND terminal = ? AND received_at >= ?",
            [site, terminal, _iso(since.astimezone(timezone.utc))])
        return int(rows), int(size)

    def _delete_in_batches(self, table: str, where: str, params: Sequence[Any], batch: int) -> int:
        # A batch per transaction: the ingest thread's commits wait on the
        # write lock for one batch at most.
        total = 0
        while True:
            with self.transaction():
                deleted = self._execute(
                    f"DELETE FROM {table} WHERE pk IN (SELECT pk FROM {table} WHERE {where} LIMIT ?)",
                    [*params, batch]).rowcount
            total += deleted
            if deleted < batch:
                return total

    def prune_quarantine(self, received_before: datetime) -> int:
        return self._delete_in_batches("quarantine", "received_at < ?",
                                       [_iso(received_before.astimezone(timezone.utc))], _PRUNE_BATCH)

    def _terminal_op(self, site: str, terminal: str, sql: str, *params: Any) -> None:
        with self.transaction():
            self._pending[-1].terminals.setdefault((site, terminal), []).append((sql, *params))

    def update_status(self, site: str, terminal: str, status: Status,
                      received_at: datetime) -> None:
        now = _iso(received_at)
        if status.state == "online":
            self._terminal_op(
                site, terminal,
                "INSERT INTO terminals (site, terminal, state, last_seen, status, updated_at)"
                " VALUES (?, ?, 'online', ?, ?, ?)"
                " ON CONFLICT (site, terminal) DO UPDATE SET state = 'online',"
                " last_seen = excluded.last_seen, status = excluded.status,"
                " updated_at = excluded.updated_at",
                now, self.dialect.text(json.dumps(dict(status.fields))), now)
        else:
            # A Last Will carries nothing else: keep the last known fields
            # (backlog, version...) so staff see what the terminal held.
            self._terminal_op(
                site, terminal,
                "INSERT INTO terminals (site, terminal, state, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (site, terminal) DO UPDATE SET state = excluded.state,"
                " updated_at = excluded.updated_at",
                status.state, now)

    def retire_terminal(self, site: str, terminal: str, at: datetime) -> bool:
        now = _iso(at)
        with self.transaction():
            rows = self._rows("SELECT retired_at, last_seen FROM terminals"
                              f" WHERE site = ? AND terminal = ?{self.dialect.lock_row}",
                              (site, terminal))
            if rows and is_retired(*rows[0]):
                return False
            self._execute(
                "INSERT INTO terminals (site, terminal, state, updated_at, retired_at)"
                " VALUES (?, ?, 'retired', ?, ?)"
                " ON CONFLICT (site, terminal) DO UPDATE SET retired_at = excluded.retired_at",
                (site, terminal, now, now))
        return True

    def seen(self, site: str, terminal: str, received_at: datetime) -> None:
        # A commit's many terminals share one receipt time (the same object): formatted once.
        memo = self._seen_at
        if memo is None or memo[0] is not received_at:
            memo = self._seen_at = (received_at, _iso(received_at))
        now = memo[1]
        op = (_SEEN_SQL, now, now)
        if self._pending:
            # Inside ingest's transaction: no savepoint of its own (one per
            # terminal cost more than the update, with 2,000 terminals).
            self._pending[-1].terminals.setdefault((site, terminal), []).append(op)
            return
        self._terminal_op(site, terminal, *op)

    def mark_suspect(self, pks: Sequence[int]) -> int:
        """Flag ratings as suspect (never deleting them), moving their counts in
        every rollup; returns how many were newly flagged."""
        flagged = 0
        with self.transaction():
            pending = self._pending[-1]
            for start in range(0, len(pks), CHUNK):
                chunk = list(pks[start:start + CHUNK])
                rows = self._rows(
                    f"UPDATE ratings SET suspect = 1 WHERE pk IN ({','.join('?' * len(chunk))})"
                    f" AND suspect = 0 RETURNING {', '.join(INSERT_COLUMNS)}", chunk)
                for row in rows:
                    pending.count(row, 0, -1)
                    pending.count(row, 1, 1)
                flagged += len(rows)
        return flagged

    def prune_ratings(self, before_day: str, received_before: datetime | None = None,
                      *, batch: int = 10_000) -> int:
        where = "day < ?"
        params: list[Any] = [before_day]
        if received_before is not None:
            # received_at is stored as RFC 3339 in UTC, so text order is time order.
            where += " AND received_at < ?"
            params.append(_iso(received_before.astimezone(timezone.utc)))
        return self._delete_in_batches("ratings", where, params, batch)

    # -- reading --------------------------------------------------------------

    @staticmethod
    def _where(filters: Filters, column: str = "day", low: str | None = None,
               high: str | None = None) -> tuple[str, list[Any]]:
        """The WHERE clause of *filters*; its days as [low, high] of *column* when given."""
        clauses = [f"{column} BETWEEN ? AND ?"]
        params: list[Any] = [filters.date_from.isoformat() if low is None else low,
                             filters.date_to.isoformat() if high is None else high]
        if filters.site is not None:
            clauses.append("site = ?")
            params.append(filters.site)
        if filters.terminal is not None:
            clauses.append("terminal = ?")
            params.append(filters.terminal)
        if filters.sites is not None:
            allowed = sorted(filters.sites)
            clauses.append(f"site IN ({','.join('?' * len(allowed))})" if allowed else "1 = 0")
            params.extend(allowed)
        if filters.suspect is not None:
            clauses.append("suspect = ?")
            params.append(int(filters.suspect))
        return " AND ".join(clauses), params

    def last_taps(self, sites: frozenset[str] | None = None) -> dict[tuple[str, str], str]:
        """When each terminal's newest stored rating was tapped (its ``at`` if the kiosk clock
        was synchronised, else when it was received), by (site, terminal).

        The newest is the highest seq (one per tap, never reused), found through the
        (site, terminal, seq) index rather than by reading every rating."""
        out: dict[tuple[str, str], tuple[datetime, str]] = {}
        for site, terminal, at, synced, received in self._read(
                "SELECT r.site, r.terminal, r.at, r.clock_synced, r.received_at FROM ratings r"
                " JOIN (SELECT site, terminal, max(seq) AS seq FROM ratings GROUP BY site, terminal) m"
                " ON r.site = m.site AND r.terminal = m.terminal AND r.seq = m.seq"):
            if sites is not None and site not in sites:
                continue
            arrived = datetime.fromisoformat(received.replace("Z", "+00:00"))
            chosen, moment = received, arrived
            if synced:
                try:
                    tapped = datetime.fromisoformat(at.replace("Z", "+00:00"))
                except ValueError:
                    tapped = None
                # The contract's bounds: an `at` before 2020 or over a day after receipt counts by receipt.
                if tapped is not None and FIRST_VALID_AT <= tapped <= arrived + timedelta(hours=24):
                    chosen, moment = at, tapped
            if (site, terminal) not in out or moment > out[site, terminal][0]:
                out[site, terminal] = (moment, chosen)
        return {key: text for key, (_, text) in out.items()}

    def _rollup_counts(self, columns: Sequence[str], filters: Filters) -> list[tuple]:
        """(*columns, n1, ..., n5) rows of *filters* from the rollups and the roll-up
        queue: a key's count of each score, a key possibly in several rows (one per
        part of the range, see range_parts, negative for days taken off a month; one
        per site of a rollup keyed by site first; one from the queue)."""
        # The rollups are derived from ratings: answer only while ratings is
        # there (a damaged database must say so, not serve stale counts).
        self._read("SELECT 1 FROM ratings LIMIT 0")
        # One row per key with its five counts, not five rows: a big answer (by
        # day and hour over years) is read into Python in a fifth of the rows.
        keys = "".join(f"{c}, " for c in columns)
        pinned = filter_columns(filters)
        parts: list[str] = []
        params: list[Any] = []
        for table, column, low, high, sign in range_parts(set(columns) | pinned, filters.date_from,
                                                          filters.date_to, pinned):
            where, part_params = self._where(filters, column, low, high)
            # Of a rollup keyed by site first, several sites' rows are summed by
            # the database (sorted): a key once per site, summed in Python, took
            # longer since a row holds all five counts (docs/benchmarks.md, m011).
            if columns and _ROLLUP_DIMS[table] == set(columns):
                # Keyed by exactly these columns (and suspect): a key is in one
                # row, or two, which aggregates() sums. The database's GROUP BY
                # took a fifth of a by=day,terminal over three years.
                sums = ", ".join(c if sign > 0 else f"-{c}" for c in SCORE_COUNTS)
                parts.append(f"SELECT {keys}{sums} FROM {table} WHERE {where}")
            else:
                sums = ", ".join(s if sign > 0 else f"-{s}" for s in _ROLLUP_SUMS)
                parts.append(f"SELECT {keys}{sums} FROM {table} WHERE {where}"
                             + (f" GROUP BY {', '.join(columns)}" if columns else ""))
            params.extend(part_params)
        # What roll_up has not moved yet. One statement, so one snapshot: a
        # roll-up committing between two reads would count its rows twice.
        where, part_params = self._where(filters)
        parts.append(f"SELECT {keys}{', '.join(_SCORE_SUMS)} FROM rollup_queue WHERE {where}"
                     + (f" GROUP BY {', '.join(columns)}" if columns else ""))
        params.extend(part_params)
        return self._read(" UNION ALL ".join(parts), params)

    def summary(self, filters: Filters) -> Distribution:
        dist = empty_distribution()
        for counts in self._rollup_counts((), filters):
            for score, count in zip(SCORES, counts):
                dist[score] += count
        return dist

    def aggregates(self, by: Sequence[str], filters: Filters) -> list[tuple[tuple, Distribution]]:
        for key in by:
            # Keys become column names: only the fixed list may ever reach SQL.
            if key not in AGGREGATE_KEYS:
                raise StoreError(f"cannot aggregate by {key!r}")
        rows = self._rollup_counts(by, filters)
        # Keys and counts split off in C (a big answer is some 10,000 rows).
        keys = list(map(operator.itemgetter(slice(0, len(by))), rows))
        groups: dict[tuple, tuple] = dict(zip(keys, map(operator.itemgetter(slice(len(by), None)), rows)))
        if len(groups) < len(rows):
            # Some keys are in several rows: sum those, and only those.
            repeated = {key for key, count in collections.Counter(keys).items() if count > 1}
            for key in repeated:
                groups[key] = (0,) * len(SCORES)
            for key, row in zip(keys, rows):
                if key in repeated:
                    groups[key] = tuple(map(operator.add, groups[key], row[len(by):]))
        nullable = [i for i, key in enumerate(by) if key in NULLABLE]
        out = []
        # Key order as SQL's ORDER BY has it: '' (no answer) first, text byte-wise.
        for key, (n1, n2, n3, n4, n5) in sorted(groups.items()):
            if not (n1 or n2 or n3 or n4 or n5):
                continue
            if nullable and "" in key:
                key = tuple(None if i in nullable and v == "" else v for i, v in enumerate(key))
            # SCORES written out: a literal is built in half the time of dict(zip()),
            # which shows with 10,000 keys (by day and hour over three years).
            out.append((key, {1: n1, 2: n2, 3: n3, 4: n4, 5: n5}))
        return out

    def summary_raw(self, filters: Filters) -> Distribution:
        """summary() by a plain GROUP BY over the ratings table (for checks and benchmarks)."""
        where, params = self._where(filters)
        dist = empty_distribution()
        for score, count in self._read(
                f"SELECT score, count(*) FROM ratings WHERE {where} GROUP BY score", params):
            dist[score] = int(count)
        return dist

    def terminals(self, site: str | None = None, sites: frozenset[str] | None = None,
                  include_retired: bool = False) -> list[dict[str, Any]]:
        out = []
        for row in self._read(
                "SELECT site, terminal, state, last_seen, status, updated_at, retired_at"
                " FROM terminals ORDER BY site, terminal"):
            if site is not None and row[0] != site:
                continue
            if sites is not None and row[0] not in sites:
                continue
            if not include_retired and is_retired(row[6], row[3]):
                continue
            # Bounded again on the way out: rows stored before the boundary
            # existed must not break the board, the API or the alerts either.
            try:
                fields = bound_status_fields(json.loads(row[4]), datetime.now(timezone.utc))
            except (ValueError, RecursionError, AttributeError):
                log.warning("terminal %s/%s has an unreadable stored status", row[0], row[1])
                fields = {}
            out.append({**fields, "site": row[0], "terminal": row[1], "state": row[2],
                        "last_seen": row[3], "status_at": fields.get("at"),
                        "updated_at": row[5],
                        "retired_at": row[6] if is_retired(row[6], row[3]) else None})
        return out

    def quarantine_count(self) -> int:
        return self._read("SELECT count(*) FROM quarantine")[0][0]

    def iter_ratings(self, filters: Filters, *, with_suspect: bool = False) -> Iterator[dict[str, Any]]:
        """Every rating of *filters*, RATING_COLUMNS and local_day (plus ``suspect`` if asked), streamed."""
        where, params = self._where(filters)
        try:
            for row in self.dialect.stream(
                    f"SELECT {', '.join(RATING_COLUMNS)}, suspect, day FROM ratings WHERE {where}"
                    " ORDER BY day, at, pk", params):
                record = dict(zip(RATING_COLUMNS, row))
                record["clock_synced"] = bool(record["clock_synced"])
                # The local day it is counted on (the server's, bounded), for exports.
                record["local_day"] = row[-1]
                if with_suspect:
                    record["suspect"] = bool(row[-2])
                yield record
        except self.dialect.error as exc:
            raise StoreError(f"database error: {exc}") from exc

    @_store_errors
    def counts(self) -> dict[str, int]:
        out = {"ratings": self._rows("SELECT count(*) FROM ratings")[0][0],
               "quarantine": self.quarantine_count(),
               "rollup_queue": self._rows("SELECT count(*) FROM rollup_queue")[0][0]}
        for state in ("online", "offline", "unknown"):
            out[f"terminals_{state}"] = 0
        for state, count in self._rows("SELECT state, count(*) FROM terminals GROUP BY state"):
            out[f"terminals_{state}"] = count
        return out

    @_store_errors
    def quarantined(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest quarantined messages, raw payload included."""
        return self._dicts("SELECT * FROM quarantine ORDER BY pk DESC LIMIT ?", [limit])

    @_store_errors
    def ratings_after(self, pk: int, limit: int = 50_000) -> list[dict[str, Any]]:
        """Ratings stored after row *pk* (SUSPECT_COLUMNS), oldest first.

        With several writers a smaller pk may commit after a larger one was
        read; burst detection tolerates that (it re-reads by terminal and seq).
        """
        return self._dicts(f"SELECT {SUSPECT_COLUMNS} FROM ratings WHERE pk > ? ORDER BY pk LIMIT ?",
                           [pk, limit])

    @_store_errors
    def terminal_ratings(self, site: str, terminal: str, seq_from: int, seq_to: int,
                         limit: int = 1_000_000) -> list[dict[str, Any]]:
        """One terminal's ratings with seq in [seq_from, seq_to], in seq order (the first *limit*)."""
        return self._dicts(
            f"SELECT {SUSPECT_COLUMNS} FROM ratings"
            " WHERE site = ? AND terminal = ? AND seq BETWEEN ? AND ? ORDER BY seq, pk LIMIT ?",
            [site, terminal, seq_from, seq_to, limit])

    @_store_errors
    def low_scores_since(self, day: str, max_score: int) -> list[dict[str, Any]]:
        """Ratings not suspect with score <= max_score on local days >= *day*."""
        return self._dicts("SELECT site, terminal, score, at FROM ratings"
                           " WHERE day >= ? AND score <= ? AND suspect = 0", [day, max_score])

    # -- the audit chain (m007) -------------------------------------------------

    @_store_errors
    def rating_chain(self, site: str, terminal: str, seq: int) -> str | None:
        rows = self._rows("SELECT chain FROM ratings WHERE site = ? AND terminal = ? AND seq = ?"
                          " ORDER BY pk LIMIT 1", [site, terminal, seq])
        return rows[0][0] if rows else None

    @_store_errors
    def chain_state(self, site: str, terminal: str, *, for_update: bool = False) -> dict[str, Any] | None:
        # On SQLite ingest's transaction already holds the one write lock; on
        # PostgreSQL workers sharing the subscription update a terminal in turn.
        lock = self.dialect.lock_row if for_update else ""
        rows = self._dicts(f"SELECT * FROM chain_state WHERE site = ? AND terminal = ?{lock}", [site, terminal])
        return rows[0] if rows else None

    @_store_errors
    def chain_states(self, site: str | None = None) -> list[dict[str, Any]]:
        if site is None:
            return self._dicts("SELECT * FROM chain_state ORDER BY site, terminal")
        return self._dicts("SELECT * FROM chain_state WHERE site = ? ORDER BY terminal", [site])

    @_store_errors
    def chain_states_for_update(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
        # One read for a commit's terminals (not one per terminal); sorted, so
        # PostgreSQL locks the rows in one order in every worker.
        # By site (a server has a few, often one): "site = ? AND terminal IN (...)" reads the
        # primary key directly, a third faster than "(site, terminal) IN (VALUES ...)".
        by_site: dict[str, list[str]] = {}
        for site, terminal in sorted(set(keys)):
            by_site.setdefault(site, []).append(terminal)
        out: dict[tuple[str, str], dict[str, Any]] = {}
        for site, terminals in by_site.items():
            for start in range(0, len(terminals), 400):
                chunk = terminals[start:start + 400]
                for row in self._dicts(
                        f"SELECT * FROM chain_state WHERE site = ? AND terminal IN ({', '.join(['?'] * len(chunk))})"
                        f" ORDER BY site, terminal{self.dialect.lock_row}", [site, *chunk]):
                    out[row["site"], row["terminal"]] = row
        return out

    def save_chain_state(self, state: Mapping[str, Any]) -> None:
        self.save_chain_states([state])

    def save_chain_states(self, states: Sequence[Mapping[str, Any]],
                          previous: Mapping[tuple[str, str], Mapping[str, Any]] | None = None) -> None:
        """Write *states* (inserted or replaced). *previous*: the same terminals' rows as read
        (and locked) in this transaction by chain_states_for_update; a state that differs
        from its row only in _CHAIN_MOVING writes just those (fewer values to bind or adapt)."""
        if not states:
            return
        moved, whole = [], []
        for state in states:
            before = previous.get((state["site"], state["terminal"])) if previous else None
            if before is not None and _chain_rest(state) == _chain_rest(before):
                moved.append(state)
            else:
                whole.append(tuple(state.get(c) for c in CHAIN_STATE_COLUMNS))
        with self._joined():
            if whole:
                updates = ", ".join(f"{c} = excluded.{c}" for c in CHAIN_STATE_COLUMNS
                                    if c not in ("site", "terminal"))
                self.dialect.bulk("chain_state", CHAIN_STATE_COLUMNS, sorted(whole),
                                  f"ON CONFLICT (site, terminal) DO UPDATE SET {updates}")
            if moved:
                # Rows this transaction holds locked already: no lock order to keep.
                self.dialect.update_existing("chain_state", ("site", "terminal"), _CHAIN_MOVING,
                                             ("missing", "status"), moved)

    @_store_errors
    def audit_spans(self, site: str, day_from: str, day_to: str) -> list[tuple[str, int, int]]:
        return [tuple(row) for row in self._rows(
            "SELECT terminal, min(seq), max(seq) FROM ratings WHERE site = ? AND day BETWEEN ? AND ?"
            " GROUP BY terminal ORDER BY terminal", [site, day_from, day_to])]

    @_store_errors
    def audit_rows(self, site: str, terminal: str, seq_from: int, seq_to: int) -> list[dict[str, Any]]:
        return self._dicts(f"SELECT {AUDIT_COLUMNS} FROM ratings WHERE site = ? AND terminal = ?"
                           " AND seq BETWEEN ? AND ? ORDER BY seq, pk", [site, terminal, seq_from, seq_to])

    @_store_errors
    def audit_neighbours(self, site: str, terminal: str, seq_from: int,
                         seq_to: int) -> tuple[int | None, int | None]:
        before = self._rows("SELECT max(seq) FROM ratings WHERE site = ? AND terminal = ? AND seq < ?",
                            [site, terminal, seq_from])[0][0]
        signed = self._rows("SELECT min(seq) FROM ratings WHERE site = ? AND terminal = ? AND seq >= ?"
                            " AND head_sig IS NOT NULL", [site, terminal, seq_to])[0][0]
        return before, signed

    @_store_errors
    def audit_cut(self, site: str, terminal: str, before_day: str) -> dict[str, Any] | None:
        rows = self._dicts(f"SELECT {AUDIT_COLUMNS} FROM ratings WHERE site = ? AND terminal = ? AND day < ?"
                           " ORDER BY seq DESC LIMIT 1", [site, terminal, before_day])
        return rows[0] if rows else None

    # -- meta, marks, alerts, sessions ----------------------------------------

    @_store_errors
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        rows = self._rows("SELECT value FROM meta WHERE key = ?", [key])
        return rows[0][0] if rows else default

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction():
            self._execute("INSERT INTO meta (key, value) VALUES (?, ?)"
                          " ON CONFLICT (key) DO UPDATE SET value = excluded.value", [key, value])

    def add_mark(self, site: str | None, day: date, note: str, created_by: str,
                 created_at: datetime) -> int:
        """A dated note (say, a new queue system) for before/after comparisons."""
        with self.transaction():
            return self._rows(
                "INSERT INTO marks (site, day, note, created_by, created_at) VALUES (?, ?, ?, ?, ?)"
                " RETURNING pk",
                [site, day.isoformat(), self.dialect.text(note), created_by, _iso(created_at)])[0][0]

    @_store_errors
    def marks(self, sites: frozenset[str] | None = None) -> list[dict[str, Any]]:
        """Marks in date order: site-wide ones (site NULL) and those of *sites* (None: all)."""
        return [row for row in self._dicts("SELECT * FROM marks ORDER BY day, pk")
                if sites is None or row["site"] is None or row["site"] in sites]

    def delete_mark(self, pk: int) -> None:
        with self.transaction():
            self._execute("DELETE FROM marks WHERE pk = ?", [pk])

    @_store_errors
    def open_alerts(self) -> list[dict[str, Any]]:
        return self._dicts("SELECT * FROM alerts WHERE cleared_at IS NULL ORDER BY pk")

    @_store_errors
    def alerts(self, sites: frozenset[str] | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """Newest alerts first, open and cleared."""
        rows = self._dicts("SELECT * FROM alerts ORDER BY cleared_at IS NOT NULL, pk DESC LIMIT ?", [limit])
        return [r for r in rows if sites is None or r["site"] in sites]

    def raise_alert(self, site: str, terminal: str | None, kind: str, message: str,
                    now: datetime) -> int:
        with self.transaction():
            return self._rows(
                "INSERT INTO alerts (site, terminal, kind, message, raised_at) VALUES (?, ?, ?, ?, ?)"
                " RETURNING pk", [site, terminal, kind, self.dialect.text(message), _iso(now)])[0][0]

    def clear_alert(self, pk: int, now: datetime) -> None:
        with self.transaction():
            self._execute("UPDATE alerts SET cleared_at = ? WHERE pk = ? AND cleared_at IS NULL",
                          [_iso(now), pk])

    def ack_alert(self, pk: int, user: str, now: datetime,
                  sites: frozenset[str] | None = None) -> bool:
        """Acknowledge alert *pk* if it is in *sites*; False if there is no such alert."""
        with self.transaction():
            rows = self._rows("SELECT site FROM alerts WHERE pk = ?", [pk])
            if not rows or (sites is not None and rows[0][0] not in sites):
                return False
            self._execute("UPDATE alerts SET acked_at = ?, acked_by = ? WHERE pk = ?", [_iso(now), user, pk])
            return True

    def add_session(self, token_hash: str, user: str, csrf: str, now: datetime,
                    expires: datetime) -> None:
        with self.transaction():
            self._execute("DELETE FROM sessions WHERE expires_at < ?", [_iso(now)])
            self._execute('INSERT INTO sessions (token_hash, "user", csrf, created_at, expires_at)'
                          " VALUES (?, ?, ?, ?, ?)", [token_hash, user, csrf, _iso(now), _iso(expires)])

    @_store_errors
    def get_session(self, token_hash: str) -> dict[str, Any] | None:
        rows = self._dicts('SELECT "user", csrf, created_at, expires_at FROM sessions WHERE token_hash = ?',
                           [token_hash])
        return rows[0] if rows else None

    def delete_session(self, token_hash: str) -> None:
        with self.transaction():
            self._execute("DELETE FROM sessions WHERE token_hash = ?", [token_hash])

    def ping(self) -> bool:
        try:
            self._rows("SELECT 1 FROM ratings LIMIT 1")
            return True
        except (self.dialect.error, StoreError) as exc:
            log.warning("database check failed: %s", exc)
            return False

    def close(self) -> None:
        self.dialect.close()


class SQLiteStore(SQLStore):
    """The store on one SQLite connection (sqlite-utils' Database as ``db``)."""

    def __init__(self, db: Database, timezone: str = "Asia/Seoul"):
        self.db = db
        super().__init__(SQLite(db), timezone)

    @classmethod
    def open(cls, path: str | Path, timezone: str = "Asia/Seoul") -> "SQLiteStore":
        """A store on the file at *path*, created if missing.

        The connection may be handed between threads (a streamed CSV response
        runs its iterator in a thread pool) as long as one thread uses it at a time.
        """
        path = Path(path)
        if path.parent and not path.parent.exists():
            raise StoreError(f"{path}: directory {path.parent} does not exist")
        try:
            conn = sqlite3.connect(str(path), check_same_thread=False)
            return cls(Database(conn), timezone)
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot open the database ({exc})") from exc


class PostgresStore(SQLStore):
    """The store on one PostgreSQL connection, for a central office or many ingest workers."""

    def __init__(self, url: str, timezone: str = "Asia/Seoul"):
        dialect = Postgres(url)
        try:
            super().__init__(dialect, timezone)
        except dialect.error as exc:
            dialect.close()
            raise StoreError(f"{dialect.safe_url()}: cannot migrate the database ({exc})") from exc

    @classmethod
    def open(cls, url: str, timezone: str = "Asia/Seoul") -> "PostgresStore":
        return cls(url, timezone)
