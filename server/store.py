"""The server's store: the interface ingest and the API use, and its SQLite implementation."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import operator
import sqlite3
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence, runtime_checkable
from zoneinfo import ZoneInfo

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from kiosk.protocol import (Rating, Status, bound_status_fields, format_timestamp, in_time_window,
                            parse_timestamp)
from server.aggregate import AGGREGATE_KEYS, Distribution, empty_distribution
from server.errors import StoreError

log = logging.getLogger(__name__)

#: Columns of /api/v1/ratings.csv and of iter_ratings() rows, in order.
RATING_COLUMNS = ("id", "site", "terminal", "seq", "score", "at", "clock_synced",
                  "reason", "age_group", "lang", "input", "received_at")
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
    """What ingest and the API need from storage. No caller writes SQL."""

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """Everything inside is committed at once (durably) or not at all; nests."""

    def ingest_batch(self, site: str, terminal: str, ratings: Sequence[Rating],
                     received_at: datetime) -> BatchResult:
        """Store ratings idempotently by (site, terminal, id); one already stored, or
        repeated, is a duplicate. Another terminal's ratings never make one a duplicate."""

    def ingest_many(self, batches: Sequence[tuple[str, str, Sequence[Rating]]],
                    received_at: datetime) -> list[BatchResult]:
        """ingest_batch for many (site, terminal, ratings) at once, one result each, in order.

        One insert for all: an identity already stored, or met earlier in the same
        call (a kiosk's resend in the same commit), is that batch's duplicate.
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

    def iter_ratings(self, filters: Filters) -> Iterator[dict[str, Any]]: ...

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

    def ping(self) -> bool: ...

    def close(self) -> None: ...


#: Quarantine rows per commit when pruning.
_PRUNE_BATCH = 10_000


# -- SQLite -----------------------------------------------------------------

migrations = Migrations("onetap-server")


@migrations()
def m001_initial(db: Database) -> None:
    # A rowid table with a unique index on the UUID: keying by the UUID
    # scattered inserts across the B-tree (0.88 s vs 0.34 s per 50k here).
    db.execute("""
        CREATE TABLE ratings (
            pk INTEGER PRIMARY KEY,
            id TEXT NOT NULL,
            site TEXT NOT NULL,
            terminal TEXT NOT NULL,
            seq INTEGER NOT NULL,
            score INTEGER NOT NULL CHECK (score BETWEEN 1 AND 5),
            at TEXT NOT NULL,
            clock_synced INTEGER NOT NULL,
            reason TEXT,
            age_group TEXT,
            lang TEXT NOT NULL,
            input TEXT NOT NULL,
            received_at TEXT NOT NULL,
            day TEXT NOT NULL,
            hour INTEGER NOT NULL,
            weekday INTEGER NOT NULL
        )""")
    db.execute("CREATE UNIQUE INDEX ratings_id ON ratings (id)")
    # Every query is a day range, often of one site or terminal.
    db.execute("CREATE INDEX ratings_day ON ratings (day, site, terminal)")
    db.execute("""
        CREATE TABLE quarantine (
            pk INTEGER PRIMARY KEY,
            received_at TEXT NOT NULL,
            topic TEXT,
            payload BLOB NOT NULL,
            reason TEXT NOT NULL,
            rating_id TEXT
        )""")
    db.execute("""
        CREATE TABLE terminals (
            site TEXT NOT NULL,
            terminal TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'unknown',
            last_seen TEXT,
            status TEXT NOT NULL DEFAULT '{}',
            updated_at TEXT NOT NULL,
            PRIMARY KEY (site, terminal)
        )""")


@migrations()
def m002_rollups_suspect_staff(db: Database) -> None:
    # Flagged by alerts' burst detection; never deleted, excludable from figures.
    db.execute("ALTER TABLE ratings ADD COLUMN suspect INTEGER NOT NULL DEFAULT 0")
    # Burst detection reads a terminal's ratings in seq order.
    db.execute("CREATE INDEX ratings_terminal_seq ON ratings (site, terminal, seq)")
    for name, dims in ROLLUPS:
        _create_rollup(db, name, dims)
    db.execute("""
        CREATE TABLE marks (
            pk INTEGER PRIMARY KEY,
            site TEXT,
            day TEXT NOT NULL,
            note TEXT NOT NULL,
            created_by TEXT NOT NULL,
            created_at TEXT NOT NULL
        )""")
    db.execute("""
        CREATE TABLE alerts (
            pk INTEGER PRIMARY KEY,
            site TEXT NOT NULL,
            terminal TEXT,
            kind TEXT NOT NULL,
            message TEXT NOT NULL,
            raised_at TEXT NOT NULL,
            cleared_at TEXT,
            acked_at TEXT,
            acked_by TEXT
        )""")
    db.execute("CREATE INDEX alerts_open ON alerts (cleared_at, site, terminal, kind)")
    db.execute("""
        CREATE TABLE sessions (
            token_hash TEXT PRIMARY KEY,
            user TEXT NOT NULL,
            csrf TEXT NOT NULL,
            created_at TEXT NOT NULL,
            expires_at TEXT NOT NULL
        )""")
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")


@migrations()
def m003_rating_identity_site_terminal_id(db: Database) -> None:
    # A rating is (site, terminal, id): one terminal sending another's ids must
    # neither claim nor suppress them. Existing rows are unique by id, so also
    # by (site, terminal, id).
    db.execute("DROP INDEX ratings_id")
    db.execute("CREATE UNIQUE INDEX ratings_identity ON ratings (site, terminal, id)")


@migrations()
def m004_ratings_clock_suspect(db: Database) -> None:
    # 1: the kiosk's ``at`` was outside the time window; counted by receipt time.
    db.execute("ALTER TABLE ratings ADD COLUMN clock_suspect INTEGER NOT NULL DEFAULT 0")


@migrations()
def m005_quarantine_by_terminal(db: Database) -> None:
    # Per-terminal daily caps count a terminal's rows and bytes; retention
    # prunes by receipt time.
    db.execute("ALTER TABLE quarantine ADD COLUMN site TEXT")
    db.execute("ALTER TABLE quarantine ADD COLUMN terminal TEXT")
    rows = db.execute("SELECT pk, topic FROM quarantine WHERE topic LIKE 'onetap/v1/%'").fetchall()
    for pk, topic in rows:
        parts = topic.split("/")
        if len(parts) == 5:
            db.execute("UPDATE quarantine SET site = ?, terminal = ? WHERE pk = ?", [parts[2], parts[3], pk])
    db.execute("CREATE INDEX quarantine_terminal ON quarantine (site, terminal, received_at)")
    db.execute("CREATE INDEX quarantine_received ON quarantine (received_at)")


@migrations()
def m006_terminals_retired_at(db: Database) -> None:
    # `onetap-server terminal retire`: off the board and the alert rules, ratings kept.
    db.execute("ALTER TABLE terminals ADD COLUMN retired_at TEXT")


#: Count tables kept in the same transaction as each insert, smallest first:
#: a query reads the first one holding every column it groups or filters by,
#: so a year of ratings is summed from a few thousand rows, not millions.
#: Every one also has weekday (a function of day), suspect and score.
ROLLUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("roll_site_day", ("day", "site")),
    ("roll_day", ("day", "site", "terminal")),
    ("roll_site_hour", ("day", "hour", "site")),
    ("roll_hour", ("day", "hour", "site", "terminal")),
    ("roll_site_dims", ("day", "site", "reason", "age_group", "lang", "input")),
    ("roll_all", ("day", "hour", "site", "terminal", "reason", "age_group", "lang", "input")),
)
#: Nullable rating columns stand as '' in the rollups, so that a primary key
#: (where NULLs never conflict) can UPSERT them.
_NULLABLE = ("reason", "age_group")
#: Position of each rollup dimension in _rollup_key()'s tuple.
_KEY_INDEX = {name: i for i, name in enumerate(
    ("day", "hour", "weekday", "site", "terminal", "reason", "age_group", "lang", "input", "suspect", "score"))}


def _create_rollup(db: Database, name: str, dims: tuple[str, ...]) -> None:
    types = {"hour": "INTEGER"}
    columns = ", ".join(f"{d} {types.get(d, 'TEXT')} NOT NULL" for d in dims)
    key = ", ".join(dims)
    db.execute(f"""
        CREATE TABLE {name} (
            {columns},
            weekday INTEGER NOT NULL,
            suspect INTEGER NOT NULL,
            score INTEGER NOT NULL,
            n INTEGER NOT NULL,
            PRIMARY KEY ({key}, suspect, score)
        ) WITHOUT ROWID""")
    select = ", ".join(f"coalesce({d}, '')" if d in _NULLABLE else d for d in dims)
    db.execute(f"INSERT INTO {name} ({key}, weekday, suspect, score, n)"
               f" SELECT {select}, min(weekday), suspect, score, count(*) FROM ratings"
               f" GROUP BY {select}, suspect, score")


def _rollup_key(row: Sequence[Any], suspect: int) -> tuple:
    """A stored ratings row (as _INSERT_RATING's parameters) -> the full rollup key."""
    (_id, site, terminal, _seq, score, _at, _synced, reason, age_group, lang, input_,
     _received, day, hour, weekday, *_rest) = row
    return (day, hour, weekday, site, terminal, reason or "", age_group or "", lang, input_,
            suspect, score)


def _rollup_statement(name: str, dims: tuple[str, ...]) -> tuple[str, str, Callable[[tuple], tuple]]:
    cols = (*dims, "weekday", "suspect", "score")
    conflict = ", ".join((*dims, "suspect", "score"))
    sql = (f"INSERT INTO {name} ({', '.join(cols)}, n) VALUES ({', '.join('?' * (len(cols) + 1))})"
           f" ON CONFLICT ({conflict}) DO UPDATE SET n = n + excluded.n")
    # itemgetter projects a full key onto the rollup's columns in C.
    return name, sql, operator.itemgetter(*(_KEY_INDEX[c] for c in cols))


_ROLLUP_STATEMENTS = [_rollup_statement(name, dims) for name, dims in ROLLUPS]


def _rollup_deltas(counts: dict[tuple, int]) -> list[tuple[str, str, list[tuple]]]:
    """Full-key counts -> for each rollup, its UPSERT statement and parameter rows."""
    out = []
    for name, sql, project in _ROLLUP_STATEMENTS:
        projected: dict[tuple, int] = {}
        for key, n in counts.items():
            small = project(key)
            projected[small] = projected.get(small, 0) + n
        out.append((name, sql, [(*k, n) for k, n in projected.items()]))
    return out


def _apply_rollups(conn: sqlite3.Connection, counts: dict[tuple, int]) -> None:
    for name, sql, rows in _rollup_deltas(counts):
        conn.executemany(sql, rows)
        if any(row[-1] < 0 for row in rows):
            dims = dict(ROLLUPS)[name]
            where = " AND ".join(f"{c} = ?" for c in (*dims, "suspect", "score"))
            skip = len(dims) + 1  # weekday is not part of the key
            conn.executemany(f"DELETE FROM {name} WHERE {where} AND n <= 0",
                             [(*r[:len(dims)], *r[skip:-1]) for r in rows if r[-1] < 0])


_INSERT_COLUMNS = ("id", "site", "terminal", "seq", "score", "at", "clock_synced", "reason",
                   "age_group", "lang", "input", "received_at", "day", "hour", "weekday",
                   "clock_suspect")
_INSERT_RATING = (
    f"INSERT INTO ratings ({', '.join(_INSERT_COLUMNS)})"
    f" VALUES ({', '.join('?' * len(_INSERT_COLUMNS))})"
)
_CHUNK = 500  # bound on host parameters per IN (...) lookup
#: What burst detection reads of a rating: the kiosk's claims and the server's own evidence.
SUSPECT_COLUMNS = ("pk, site, terminal, seq, score, at, clock_synced, received_at, clock_suspect,"
                   " suspect")


def _store_errors(method):
    """Let callers see StoreError, never sqlite3's own, from a read."""
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except sqlite3.Error as exc:
            raise StoreError(f"database error: {exc}") from exc
    return wrapper


def _iso(moment: datetime) -> str:
    return format_timestamp(moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc))


def is_retired(retired_at: str | None, last_seen: str | None) -> bool:
    """Whether a terminal is retired: `terminal retire` set *retired_at* and it has
    not spoken since (a terminal provisioned again under the name comes back)."""
    if retired_at is None:
        return False
    return (last_seen is None
            or parse_timestamp("last_seen", last_seen) <= parse_timestamp("retired_at", retired_at))



def smallest_rollup(needed: set[str]) -> str:
    """The smallest rollup table holding every column in *needed* (weekday comes with day)."""
    needed = needed - {"weekday"}
    for name, dims in ROLLUPS:
        if needed <= set(dims):
            return name
    raise StoreError(f"no rollup holds {sorted(needed)}")


def filter_columns(filters: Filters) -> set[str]:
    """The columns a query's *filters* need from its table."""
    needed = {"day"}
    if filters.site is not None or filters.sites is not None:
        needed.add("site")
    if filters.terminal is not None:
        needed.add("terminal")
    return needed


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

    def rating(self, rating: Rating, received: tuple[str, int, int],
               received_at: datetime) -> tuple[tuple[str, int, int], bool]:
        """(bucket, clock_suspect) of a valid rating received at *received_at*.

        clock_suspect: ``at`` is outside the time window (kiosk.protocol.in_time_window);
        such a rating, like an unsynchronised one, takes the *received* bucket.
        """
        at = rating.at
        # Every rating of the same minute and offset lands in the same hour:
        # parsing and converting once per minute keeps a 500-rating batch
        # cheap. (So the window is checked to the minute, which is plenty.)
        key = at[:16] + at[-6:]
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


class IngestPlan:
    """What ingest_many stores, the same way in every backend.

    The first sighting of an identity (site, terminal, id), in call order, may
    be stored; a later one in another batch of the same call is that batch's
    duplicate. ``rows`` holds the insert parameters (_INSERT_COLUMNS order) of
    each first sighting, by identity.

    Never raises on a rating that passed validation: an ``at`` outside the time
    window (kiosk.protocol.clock_suspect) is bucketed by *received_at* and
    marked clock_suspect, so it never lands on the far day it claims.
    """

    def __init__(self, batches: Sequence[tuple[str, str, Sequence[Rating]]],
                 received_at: datetime, buckets: Buckets):
        self.count = len(batches)
        self.first: dict[Identity, int] = {}
        self.repeats: list[tuple[int, str]] = []
        self.rows: dict[Identity, tuple] = {}
        received_text = _iso(received_at)
        received = buckets.of(received_at)
        for index, (site, terminal, ratings) in enumerate(batches):
            for rating in ratings:
                key = (site, terminal, rating.id)
                if key in self.first:
                    if self.first[key] != index:
                        self.repeats.append((index, rating.id))
                    continue
                self.first[key] = index
                try:
                    (day, hour, weekday), suspect = buckets.rating(rating, received, received_at)
                except (OverflowError, ValueError):
                    # Inside the window nothing overflows and a valid rating
                    # parses; should either ever fail, it is still counted, by receipt.
                    log.exception("cannot bucket rating %s at %r", rating.id, rating.at)
                    (day, hour, weekday), suspect = received, True
                self.rows[key] = (
                    rating.id, site, terminal, rating.seq, rating.score, rating.at,
                    int(rating.clock_synced), rating.reason, rating.age_group, rating.lang,
                    rating.input, received_text, day, hour, weekday, int(suspect))

    def results(self, stored: set[Identity] | frozenset[Identity]) -> list[BatchResult]:
        """Each batch's accepted (newly *stored*) and duplicate ids, each id once."""
        results = [BatchResult([], []) for _ in range(self.count)]
        for key, index in self.first.items():
            (results[index].accepted if key in stored else results[index].duplicate
             ).append(key[2])
        for index, rating_id in dict.fromkeys(self.repeats):
            results[index].duplicate.append(rating_id)
        return results


class RollupQueries:
    """What both backends answer the same way, over ``_read``, ``_where`` and ``transaction``.

    A backend provides ``_read(sql, params) -> rows`` (all rows fetched, its
    driver's errors raised as StoreError), ``_where(filters)`` in its own
    parameter style, ``transaction()`` and ``_ingest_many``.
    """

    def ingest_batch(self, site: str, terminal: str, ratings: Sequence[Rating],
                     received_at: datetime) -> BatchResult:
        return self.ingest_many([(site, terminal, ratings)], received_at)[0]

    def ingest_many(self, batches: Sequence[tuple[str, str, Sequence[Rating]]],
                    received_at: datetime) -> list[BatchResult]:
        with self.transaction():
            return self._ingest_many(batches, received_at)

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

    def _rollup_for(self, needed: set[str]) -> str:
        # The rollups are derived from ratings: answer only while ratings is
        # there (a damaged database must say so, not serve stale counts).
        self._read("SELECT 1 FROM ratings LIMIT 0")
        return smallest_rollup(needed)

    def summary(self, filters: Filters) -> Distribution:
        where, params = self._where(filters)
        table = self._rollup_for(filter_columns(filters))
        dist = empty_distribution()
        for score, count in self._read(
                f"SELECT score, sum(n) FROM {table} WHERE {where} GROUP BY score", params):
            dist[score] = int(count)
        return dist

    def aggregates(self, by: Sequence[str], filters: Filters) -> list[tuple[tuple, Distribution]]:
        for key in by:
            # Keys become column names: only the fixed list may ever reach SQL.
            if key not in AGGREGATE_KEYS:
                raise StoreError(f"cannot aggregate by {key!r}")
        where, params = self._where(filters)
        table = self._rollup_for(filter_columns(filters) | set(by))
        columns = ", ".join(by)
        nullable = [i for i, key in enumerate(by) if key in _NULLABLE]
        groups: dict[tuple, Distribution] = {}
        for row in self._read(
                f"SELECT {columns}, score, sum(n) FROM {table} WHERE {where}"
                f" GROUP BY {columns}, score HAVING sum(n) > 0 ORDER BY {columns}", params):
            key = row[:len(by)]
            if nullable:
                key = tuple(None if i in nullable and v == "" else v for i, v in enumerate(key))
            groups.setdefault(tuple(key), empty_distribution())[row[-2]] = int(row[-1])
        return list(groups.items())

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


class SQLiteStore(RollupQueries):
    """Store on one SQLite connection; use one instance per thread.

    Days, hours and weekdays (ISO, Monday = 1) are computed in *timezone* when
    a rating is stored: from its ``at`` when the kiosk clock was synchronised,
    else from when the server received it.
    """

    def __init__(self, db: Database, timezone: str = "Asia/Seoul"):
        self.db = db
        self.tz = ZoneInfo(timezone)
        self.buckets = Buckets(self.tz)
        conn = db.conn
        if not db.memory:
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=10000")
        migrations.apply(db)

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

    # -- writing --------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        try:
            with self.db.atomic():
                yield
        except sqlite3.Error as exc:
            # Callers tell a failing store (retry later, send no Ack) from bad input.
            raise StoreError(f"database error: {exc}") from exc

    def _ingest_many(self, batches: Sequence[tuple[str, str, Sequence[Rating]]],
                     received_at: datetime) -> list[BatchResult]:
        plan = IngestPlan(batches, received_at, self.buckets)
        conn = self.db.conn

        def insert(values) -> None:
            counts: dict[tuple, int] = {}
            for value in values:
                key = _rollup_key(value, 0)
                counts[key] = counts.get(key, 0) + 1
            conn.executemany(_INSERT_RATING, values)
            # Counted per group in Python, one UPSERT per group and rollup.
            _apply_rollups(conn, counts)

        # Resends are rare: try everything at once first and look up which ids
        # exist only when the unique index says some do.
        existing: set[Identity] = set()
        try:
            with self.db.atomic():
                insert(list(plan.rows.values()))
        except sqlite3.IntegrityError:
            by_terminal: dict[tuple[str, str], list[str]] = {}
            for site, terminal, rating_id in plan.rows:
                by_terminal.setdefault((site, terminal), []).append(rating_id)
            for (site, terminal), ids in by_terminal.items():
                for start in range(0, len(ids), _CHUNK):
                    chunk = ids[start:start + _CHUNK]
                    marks = ",".join("?" * len(chunk))
                    existing.update((site, terminal, row[0]) for row in conn.execute(
                        f"SELECT id FROM ratings WHERE site = ? AND terminal = ? AND id IN ({marks})",
                        [site, terminal, *chunk]))
            insert([row for key, row in plan.rows.items() if key not in existing])
        return plan.results(plan.rows.keys() - existing)

    def quarantine(self, *, received_at: datetime, topic: str | None, payload: bytes,
                   reason: str, rating_id: str | None = None, site: str | None = None,
                   terminal: str | None = None) -> None:
        with self.transaction():
            self.db.conn.execute(
                "INSERT INTO quarantine (received_at, topic, payload, reason, rating_id, site, terminal)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (_iso(received_at), topic, bytes(payload), reason, rating_id, site, terminal))

    @_store_errors
    def quarantine_usage(self, site: str, terminal: str, since: datetime) -> tuple[int, int]:
        rows, size = self.db.conn.execute(
            "SELECT count(*), coalesce(sum(length(payload)), 0) FROM quarantine"
            " WHERE site = ? AND terminal = ? AND received_at >= ?",
            [site, terminal, _iso(since.astimezone(timezone.utc))]).fetchone()
        return int(rows), int(size)

    def prune_quarantine(self, received_before: datetime) -> int:
        total = 0
        before = _iso(received_before.astimezone(timezone.utc))
        while True:
            with self.transaction():
                deleted = self.db.conn.execute(
                    "DELETE FROM quarantine WHERE pk IN"
                    " (SELECT pk FROM quarantine WHERE received_at < ? LIMIT ?)",
                    [before, _PRUNE_BATCH]).rowcount
            total += deleted
            if deleted < _PRUNE_BATCH:
                return total

    def update_status(self, site: str, terminal: str, status: Status,
                      received_at: datetime) -> None:
        now = _iso(received_at)
        with self.transaction():
            if status.state == "online":
                self.db.conn.execute(
                    "INSERT INTO terminals (site, terminal, state, last_seen, status, updated_at)"
                    " VALUES (?, ?, 'online', ?, ?, ?)"
                    " ON CONFLICT (site, terminal) DO UPDATE SET state = 'online',"
                    " last_seen = excluded.last_seen, status = excluded.status,"
                    " updated_at = excluded.updated_at",
                    (site, terminal, now, json.dumps(dict(status.fields)), now))
            else:
                # A Last Will carries nothing else: keep the last known fields
                # (backlog, version...) so staff see what the terminal held.
                self.db.conn.execute(
                    "INSERT INTO terminals (site, terminal, state, updated_at)"
                    " VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (site, terminal) DO UPDATE SET state = excluded.state,"
                    " updated_at = excluded.updated_at",
                    (site, terminal, status.state, now))

    def retire_terminal(self, site: str, terminal: str, at: datetime) -> bool:
        now = _iso(at)
        conn = self.db.conn
        with self.transaction():
            row = conn.execute("SELECT retired_at, last_seen FROM terminals"
                               " WHERE site = ? AND terminal = ?", (site, terminal)).fetchone()
            if row is not None and is_retired(*row):
                return False
            conn.execute(
                "INSERT INTO terminals (site, terminal, state, updated_at, retired_at)"
                " VALUES (?, ?, 'retired', ?, ?)"
                " ON CONFLICT (site, terminal) DO UPDATE SET retired_at = excluded.retired_at",
                (site, terminal, now, now))
        return True

    def seen(self, site: str, terminal: str, received_at: datetime) -> None:
        now = _iso(received_at)
        sql = ("INSERT INTO terminals (site, terminal, last_seen, updated_at) VALUES (?, ?, ?, ?)"
               " ON CONFLICT (site, terminal) DO UPDATE SET last_seen = excluded.last_seen")
        if self.db.conn.in_transaction:
            # One statement is atomic on its own; inside ingest's transaction a
            # savepoint per terminal cost more than the update (2,000 terminals).
            self.db.conn.execute(sql, (site, terminal, now, now))
            return
        with self.transaction():
            self.db.conn.execute(sql, (site, terminal, now, now))

    # -- reading --------------------------------------------------------------

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        try:
            return self.db.conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"database error: {exc}") from exc

    @staticmethod
    def _where(filters: Filters) -> tuple[str, list[Any]]:
        clauses = ["day BETWEEN ? AND ?"]
        params: list[Any] = [filters.date_from.isoformat(), filters.date_to.isoformat()]
        if filters.site is not None:
            clauses.append("site = ?")
            params.append(filters.site)
        if filters.terminal is not None:
            clauses.append("terminal = ?")
            params.append(filters.terminal)
        if filters.sites is not None:
            allowed = sorted(filters.sites)
            clauses.append(f"site IN ({','.join('?' * len(allowed))})" if allowed else "0")
            params.extend(allowed)
        if filters.suspect is not None:
            clauses.append("suspect = ?")
            params.append(int(filters.suspect))
        return " AND ".join(clauses), params

    def iter_ratings(self, filters: Filters, *, with_suspect: bool = False) -> Iterator[dict[str, Any]]:
        """Every rating of *filters*, RATING_COLUMNS and local_day (plus ``suspect`` if asked)."""
        where, params = self._where(filters)
        try:
            cursor = self.db.conn.execute(
                f"SELECT {', '.join(RATING_COLUMNS)}, suspect, day FROM ratings WHERE {where}"
                " ORDER BY day, at, pk",
                params)
        except sqlite3.Error as exc:
            raise StoreError(f"database error: {exc}") from exc
        try:
            while True:
                try:
                    rows = cursor.fetchmany(1000)
                except sqlite3.Error as exc:
                    raise StoreError(f"database error: {exc}") from exc
                if not rows:
                    return
                for row in rows:
                    record = dict(zip(RATING_COLUMNS, row))
                    record["clock_synced"] = bool(record["clock_synced"])
                    # The local day it is counted on (the server's, bounded), for exports.
                    record["local_day"] = row[-1]
                    if with_suspect:
                        record["suspect"] = bool(row[-2])
                    yield record
        finally:
            cursor.close()

    @_store_errors
    def counts(self) -> dict[str, int]:
        conn = self.db.conn
        out = {
            "ratings": conn.execute("SELECT count(*) FROM ratings").fetchone()[0],
            "quarantine": self.quarantine_count(),
        }
        for state in ("online", "offline", "unknown"):
            out[f"terminals_{state}"] = 0
        for state, count in conn.execute("SELECT state, count(*) FROM terminals GROUP BY state"):
            out[f"terminals_{state}"] = count
        return out

    @_store_errors
    def quarantined(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest quarantined messages, raw payload included."""
        return [dict(row) for row in self.db.query(
            "SELECT * FROM quarantine ORDER BY pk DESC LIMIT ?", [limit])]

    # -- suspect ratings (alerts' burst detection) ---------------------------------

    @_store_errors
    def ratings_after(self, pk: int, limit: int = 50_000) -> list[dict[str, Any]]:
        """Ratings stored after row *pk* (SUSPECT_COLUMNS), oldest first."""
        return [dict(row) for row in self.db.query(
            f"SELECT {SUSPECT_COLUMNS} FROM ratings WHERE pk > ?"
            " ORDER BY pk LIMIT ?", [pk, limit])]

    @_store_errors
    def terminal_ratings(self, site: str, terminal: str, seq_from: int, seq_to: int,
                         limit: int = 1_000_000) -> list[dict[str, Any]]:
        """One terminal's ratings with seq in [seq_from, seq_to], in seq order (the first *limit*)."""
        return [dict(row) for row in self.db.query(
            f"SELECT {SUSPECT_COLUMNS} FROM ratings"
            " WHERE site = ? AND terminal = ? AND seq BETWEEN ? AND ? ORDER BY seq, pk LIMIT ?",
            [site, terminal, seq_from, seq_to, limit])]

    def mark_suspect(self, pks: Sequence[int]) -> int:
        """Flag ratings as suspect (never deleting them), moving their counts in
        every rollup; returns how many were newly flagged."""
        conn = self.db.conn
        flagged = 0
        with self.transaction():
            for start in range(0, len(pks), _CHUNK):
                chunk = list(pks[start:start + _CHUNK])
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT {', '.join(_INSERT_COLUMNS)} FROM ratings"
                    f" WHERE pk IN ({marks}) AND suspect = 0", chunk).fetchall()
                if not rows:
                    continue
                counts: dict[tuple, int] = {}
                for row in rows:
                    for suspect, delta in ((0, -1), (1, 1)):
                        key = _rollup_key(row, suspect)
                        counts[key] = counts.get(key, 0) + delta
                conn.execute(f"UPDATE ratings SET suspect = 1 WHERE pk IN ({marks})", chunk)
                _apply_rollups(conn, counts)
                flagged += len(rows)
        return flagged

    def prune_ratings(self, before_day: str, received_before: datetime | None = None,
                      *, batch: int = 10_000) -> int:
        # Through the day index, a batch per transaction: the ingest thread's
        # commits wait on the write lock for one batch at most.
        where = "day < ?"
        params: list[Any] = [before_day]
        if received_before is not None:
            # received_at is stored as RFC 3339 in UTC, so text order is time order.
            where += " AND received_at < ?"
            params.append(_iso(received_before.astimezone(timezone.utc)))
        conn = self.db.conn
        total = 0
        while True:
            with self.transaction():
                deleted = conn.execute(
                    f"DELETE FROM ratings WHERE pk IN (SELECT pk FROM ratings WHERE {where} LIMIT ?)",
                    [*params, batch]).rowcount
            total += deleted
            if deleted < batch:
                return total

    @_store_errors
    def low_scores_since(self, day: str, max_score: int) -> list[dict[str, Any]]:
        """Ratings not suspect with score <= max_score on local days >= *day*."""
        return [dict(row) for row in self.db.query(
            "SELECT site, terminal, score, at FROM ratings"
            " WHERE day >= ? AND score <= ? AND suspect = 0", [day, max_score])]

    # -- meta, marks, alerts, sessions ----------------------------------------

    @_store_errors
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.db.conn.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction():
            self.db.conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value", [key, value])

    def add_mark(self, site: str | None, day: date, note: str, created_by: str,
                 created_at: datetime) -> int:
        """A dated note (say, a new queue system) for before/after comparisons."""
        with self.transaction():
            cursor = self.db.conn.execute(
                "INSERT INTO marks (site, day, note, created_by, created_at) VALUES (?, ?, ?, ?, ?)",
                [site, day.isoformat(), note, created_by, _iso(created_at)])
            return cursor.lastrowid

    @_store_errors
    def marks(self, sites: frozenset[str] | None = None) -> list[dict[str, Any]]:
        """Marks in date order: site-wide ones (site NULL) and those of *sites* (None: all)."""
        out = []
        for row in self.db.query("SELECT * FROM marks ORDER BY day, pk"):
            if sites is None or row["site"] is None or row["site"] in sites:
                out.append(dict(row))
        return out

    def delete_mark(self, pk: int) -> None:
        with self.transaction():
            self.db.conn.execute("DELETE FROM marks WHERE pk = ?", [pk])

    @_store_errors
    def open_alerts(self) -> list[dict[str, Any]]:
        return [dict(row) for row in self.db.query(
            "SELECT * FROM alerts WHERE cleared_at IS NULL ORDER BY pk")]

    @_store_errors
    def alerts(self, sites: frozenset[str] | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """Newest alerts first, open and cleared."""
        rows = [dict(row) for row in self.db.query(
            "SELECT * FROM alerts ORDER BY cleared_at IS NOT NULL, pk DESC LIMIT ?", [limit])]
        return [r for r in rows if sites is None or r["site"] in sites]

    def raise_alert(self, site: str, terminal: str | None, kind: str, message: str,
                    now: datetime) -> int:
        with self.transaction():
            return self.db.conn.execute(
                "INSERT INTO alerts (site, terminal, kind, message, raised_at) VALUES (?, ?, ?, ?, ?)",
                [site, terminal, kind, message, _iso(now)]).lastrowid

    def clear_alert(self, pk: int, now: datetime) -> None:
        with self.transaction():
            self.db.conn.execute("UPDATE alerts SET cleared_at = ? WHERE pk = ? AND cleared_at IS NULL",
                                 [_iso(now), pk])

    def ack_alert(self, pk: int, user: str, now: datetime,
                  sites: frozenset[str] | None = None) -> bool:
        """Acknowledge alert *pk* if it is in *sites*; False if there is no such alert."""
        with self.transaction():
            row = self.db.conn.execute("SELECT site FROM alerts WHERE pk = ?", [pk]).fetchone()
            if row is None or (sites is not None and row[0] not in sites):
                return False
            self.db.conn.execute("UPDATE alerts SET acked_at = ?, acked_by = ? WHERE pk = ?",
                                 [_iso(now), user, pk])
            return True

    def add_session(self, token_hash: str, user: str, csrf: str, now: datetime,
                    expires: datetime) -> None:
        with self.transaction():
            conn = self.db.conn
            conn.execute("DELETE FROM sessions WHERE expires_at < ?", [_iso(now)])
            conn.execute("INSERT INTO sessions (token_hash, user, csrf, created_at, expires_at)"
                         " VALUES (?, ?, ?, ?, ?)", [token_hash, user, csrf, _iso(now), _iso(expires)])

    @_store_errors
    def get_session(self, token_hash: str) -> dict[str, Any] | None:
        row = self.db.conn.execute(
            "SELECT user, csrf, created_at, expires_at FROM sessions WHERE token_hash = ?",
            [token_hash]).fetchone()
        if row is None:
            return None
        return {"user": row[0], "csrf": row[1], "created_at": row[2], "expires_at": row[3]}

    def delete_session(self, token_hash: str) -> None:
        with self.transaction():
            self.db.conn.execute("DELETE FROM sessions WHERE token_hash = ?", [token_hash])

    def ping(self) -> bool:
        try:
            self.db.conn.execute("SELECT 1 FROM ratings LIMIT 1").fetchall()
            return True
        except sqlite3.Error as exc:
            log.warning("database check failed: %s", exc)
            return False

    def close(self) -> None:
        self.db.conn.close()
