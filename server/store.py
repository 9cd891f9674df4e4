"""The server's store: the interface ingest and the API use, and its SQLite implementation."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import sqlite3
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence, runtime_checkable
from zoneinfo import ZoneInfo

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from kiosk.protocol import SCORES, Rating, Status, format_timestamp, parse_timestamp
from server.aggregate import AGGREGATE_KEYS, Distribution, empty_distribution
from server.errors import StoreError

log = logging.getLogger(__name__)

#: Columns of /api/v1/ratings.csv and of iter_ratings() rows, in order.
RATING_COLUMNS = ("id", "site", "terminal", "seq", "score", "at", "clock_synced",
                  "reason", "age_group", "lang", "input", "received_at")


@dataclass(frozen=True)
class Filters:
    """Which ratings a query covers: local days [date_from, date_to], and optionally
    one site, one terminal, and the set of sites a caller may see (None: all)."""

    date_from: date
    date_to: date
    site: str | None = None
    terminal: str | None = None
    sites: frozenset[str] | None = None


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
        """Store ratings idempotently by id; an id already stored, or repeated, is a duplicate."""

    def quarantine(self, *, received_at: datetime, topic: str | None, payload: bytes,
                   reason: str, rating_id: str | None = None) -> None:
        """Keep a message or rating that failed a rule, with its raw bytes and why."""

    def update_status(self, site: str, terminal: str, status: Status,
                      received_at: datetime) -> None:
        """Record a terminal's (retained) status, or its Last Will."""

    def seen(self, site: str, terminal: str, received_at: datetime) -> None:
        """A terminal spoke (a ratings batch): note when, adding it if new."""

    def summary(self, filters: Filters) -> Distribution: ...

    def aggregates(self, by: Sequence[str], filters: Filters) -> list[tuple[tuple, Distribution]]: ...

    def terminals(self, site: str | None = None,
                  sites: frozenset[str] | None = None) -> list[dict[str, Any]]: ...

    def iter_ratings(self, filters: Filters) -> Iterator[dict[str, Any]]: ...

    def counts(self) -> dict[str, int]:
        """ratings, quarantine, and terminals by state, for /metrics."""

    def quarantine_count(self) -> int: ...

    def ping(self) -> bool: ...

    def close(self) -> None: ...


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


_INSERT_RATING = (
    "INSERT INTO ratings (id, site, terminal, seq, score, at, clock_synced, reason,"
    " age_group, lang, input, received_at, day, hour, weekday)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_CHUNK = 500  # bound on host parameters per IN (...) lookup


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


class SQLiteStore:
    """Store on one SQLite connection; use one instance per thread.

    Days, hours and weekdays (ISO, Monday = 1) are computed in *timezone* when
    a rating is stored: from its ``at`` when the kiosk clock was synchronised,
    else from when the server received it.
    """

    def __init__(self, db: Database, timezone: str = "Asia/Seoul"):
        self.db = db
        self.tz = ZoneInfo(timezone)
        self._bucket_cache: dict[str, tuple[str, int, int]] = {}
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

    def _buckets(self, rating: Rating, received: tuple[str, int, int]) -> tuple[str, int, int]:
        if not rating.clock_synced:
            return received
        at = rating.at
        # Every rating of the same minute and offset lands in the same hour:
        # converting once per minute keeps a 500-rating batch cheap.
        key = at[:16] + at[-6:]
        bucket = self._bucket_cache.get(key)
        if bucket is None:
            local = parse_timestamp("at", at).astimezone(self.tz)
            bucket = (local.strftime("%Y-%m-%d"), local.hour, local.isoweekday())
            if len(self._bucket_cache) > 10_000:
                self._bucket_cache.clear()
            self._bucket_cache[key] = bucket
        return bucket

    def ingest_batch(self, site: str, terminal: str, ratings: Sequence[Rating],
                     received_at: datetime) -> BatchResult:
        with self.transaction():
            return self._ingest_batch(site, terminal, ratings, received_at)

    def _ingest_batch(self, site: str, terminal: str, ratings: Sequence[Rating],
                      received_at: datetime) -> BatchResult:
        unique: dict[str, Rating] = {}
        for rating in ratings:
            unique.setdefault(rating.id, rating)
        received_text = _iso(received_at)
        local = received_at.astimezone(self.tz)
        received = (local.strftime("%Y-%m-%d"), local.hour, local.isoweekday())
        conn = self.db.conn

        def rows(items):
            for rating in items:
                day, hour, weekday = self._buckets(rating, received)
                yield (rating.id, site, terminal, rating.seq, rating.score, rating.at,
                       int(rating.clock_synced), rating.reason, rating.age_group,
                       rating.lang, rating.input, received_text, day, hour, weekday)

        # Resends are rare: try the whole batch first and look up which ids
        # exist only when the unique index says some do.
        try:
            with self.db.atomic():
                conn.executemany(_INSERT_RATING, rows(unique.values()))
            return BatchResult(list(unique), [])
        except sqlite3.IntegrityError:
            pass
        existing: set[str] = set()
        ids = list(unique)
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start:start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            existing.update(row[0] for row in conn.execute(
                f"SELECT id FROM ratings WHERE id IN ({marks})", chunk))
        fresh = [r for i, r in unique.items() if i not in existing]
        conn.executemany(_INSERT_RATING, rows(fresh))
        return BatchResult([r.id for r in fresh], [i for i in ids if i in existing])

    def quarantine(self, *, received_at: datetime, topic: str | None, payload: bytes,
                   reason: str, rating_id: str | None = None) -> None:
        with self.transaction():
            self.db.conn.execute(
                "INSERT INTO quarantine (received_at, topic, payload, reason, rating_id)"
                " VALUES (?, ?, ?, ?, ?)",
                (_iso(received_at), topic, bytes(payload), reason, rating_id))

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

    def seen(self, site: str, terminal: str, received_at: datetime) -> None:
        now = _iso(received_at)
        with self.transaction():
            self.db.conn.execute(
                "INSERT INTO terminals (site, terminal, last_seen, updated_at)"
                " VALUES (?, ?, ?, ?)"
                " ON CONFLICT (site, terminal) DO UPDATE SET last_seen = excluded.last_seen",
                (site, terminal, now, now))

    # -- reading --------------------------------------------------------------

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
        return " AND ".join(clauses), params

    @_store_errors
    def summary(self, filters: Filters) -> Distribution:
        where, params = self._where(filters)
        dist = empty_distribution()
        for score, count in self.db.conn.execute(
                f"SELECT score, count(*) FROM ratings WHERE {where} GROUP BY score", params):
            dist[score] = count
        return dist

    @_store_errors
    def aggregates(self, by: Sequence[str], filters: Filters) -> list[tuple[tuple, Distribution]]:
        for key in by:
            # Keys become column names: only the fixed list may ever reach SQL.
            if key not in AGGREGATE_KEYS:
                raise StoreError(f"cannot aggregate by {key!r}")
        where, params = self._where(filters)
        columns = ", ".join(by)
        groups: dict[tuple, Distribution] = {}
        for row in self.db.conn.execute(
                f"SELECT {columns}, score, count(*) FROM ratings WHERE {where}"
                f" GROUP BY {columns}, score ORDER BY {columns}", params):
            key = tuple(row[:len(by)])
            groups.setdefault(key, empty_distribution())[row[-2]] = row[-1]
        return list(groups.items())

    @_store_errors
    def terminals(self, site: str | None = None,
                  sites: frozenset[str] | None = None) -> list[dict[str, Any]]:
        out = []
        for row in self.db.conn.execute(
                "SELECT site, terminal, state, last_seen, status, updated_at FROM terminals"
                " ORDER BY site, terminal"):
            if site is not None and row[0] != site:
                continue
            if sites is not None and row[0] not in sites:
                continue
            fields = json.loads(row[4])
            out.append({**fields, "site": row[0], "terminal": row[1], "state": row[2],
                        "last_seen": row[3], "status_at": fields.get("at"),
                        "updated_at": row[5]})
        return out

    def iter_ratings(self, filters: Filters) -> Iterator[dict[str, Any]]:
        where, params = self._where(filters)
        try:
            cursor = self.db.conn.execute(
                f"SELECT {', '.join(RATING_COLUMNS)} FROM ratings WHERE {where} ORDER BY day, at, pk",
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
    def quarantine_count(self) -> int:
        return self.db.conn.execute("SELECT count(*) FROM quarantine").fetchone()[0]

    @_store_errors
    def quarantined(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest quarantined messages, raw payload included."""
        return [dict(row) for row in self.db.query(
            "SELECT * FROM quarantine ORDER BY pk DESC LIMIT ?", [limit])]

    def ping(self) -> bool:
        try:
            self.db.conn.execute("SELECT 1 FROM ratings LIMIT 1").fetchall()
            return True
        except sqlite3.Error as exc:
            log.warning("database check failed: %s", exc)
            return False

    def close(self) -> None:
        self.db.conn.close()
