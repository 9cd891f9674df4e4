"""PostgresStore: the server's Store on PostgreSQL (psycopg 3), for a central office or many ingest workers."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any, Iterator, Sequence
from zoneinfo import ZoneInfo

import psycopg
from psycopg.rows import dict_row

from kiosk.protocol import Rating, Status
from server.errors import StoreError
from server.store import (
    _INSERT_COLUMNS,
    _KEY_INDEX,
    _NULLABLE,
    _PRUNE_BATCH,
    RATING_COLUMNS,
    ROLLUPS,
    SUSPECT_COLUMNS,
    AUDIT_COLUMNS,
    CHAIN_STATE_COLUMNS,
    CHAIN_STATE_DDL,
    BatchResult,
    Buckets,
    Filters,
    IngestPlan,
    RollupQueries,
    _iso,
    _rollup_key,
    is_retired,
)

log = logging.getLogger(__name__)

# -- schema -------------------------------------------------------------------
#
# The same tables, columns and meaning as SQLiteStore's, so that every query
# answers the same. Text columns are COLLATE "C": byte order, as SQLite sorts,
# whatever the database's locale (and cheaper to index). Days stay ISO text.

_TEXT = 'text COLLATE "C"'


def _rollup_ddl(name: str, dims: tuple[str, ...]) -> list[str]:
    columns = ", ".join(f"{d} {'smallint' if d == 'hour' else _TEXT} NOT NULL" for d in dims)
    key = ", ".join(dims)
    select = ", ".join(f"coalesce({d}, '')" if d in _NULLABLE else d for d in dims)
    return [
        f"""CREATE TABLE {name} (
            {columns},
            weekday smallint NOT NULL,
            suspect smallint NOT NULL,
            score smallint NOT NULL,
            n integer NOT NULL,
            PRIMARY KEY ({key}, suspect, score))""",
        f"INSERT INTO {name} ({key}, weekday, suspect, score, n)"
        f" SELECT {select}, min(weekday), suspect, score, count(*) FROM ratings"
        f" GROUP BY {select}, suspect, score",
    ]


#: Versioned migrations: (name, statements), applied in order, each in one
#: transaction, recorded in onetap_migrations. Never edit an applied one: add one.
MIGRATIONS: list[tuple[str, list[str]]] = [
    ("m001_initial", [
        # A bigint key in insertion order plus a unique index on the UUID, as
        # in SQLite: keying by the UUID would scatter the table.
        f"""CREATE TABLE ratings (
            pk bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            id {_TEXT} NOT NULL,
            site {_TEXT} NOT NULL,
            terminal {_TEXT} NOT NULL,
            seq bigint NOT NULL,
            score smallint NOT NULL CHECK (score BETWEEN 1 AND 5),
            at {_TEXT} NOT NULL,
            clock_synced smallint NOT NULL,
            reason {_TEXT},
            age_group {_TEXT},
            lang {_TEXT} NOT NULL,
            input {_TEXT} NOT NULL,
            received_at {_TEXT} NOT NULL,
            day {_TEXT} NOT NULL,
            hour smallint NOT NULL,
            weekday smallint NOT NULL,
            suspect smallint NOT NULL DEFAULT 0)""",
        "CREATE UNIQUE INDEX ratings_id ON ratings (id)",
        "CREATE INDEX ratings_day ON ratings (day, site, terminal)",
        "CREATE INDEX ratings_terminal_seq ON ratings (site, terminal, seq)",
        f"""CREATE TABLE quarantine (
            pk bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            received_at {_TEXT} NOT NULL,
            topic text,
            payload bytea NOT NULL,
            reason text NOT NULL,
            rating_id text)""",
        f"""CREATE TABLE terminals (
            site {_TEXT} NOT NULL,
            terminal {_TEXT} NOT NULL,
            state text NOT NULL DEFAULT 'unknown',
            last_seen text,
            status text NOT NULL DEFAULT '{{}}',
            updated_at text NOT NULL,
            PRIMARY KEY (site, terminal))""",
        *[sql for name, dims in ROLLUPS for sql in _rollup_ddl(name, dims)],
        f"""CREATE TABLE marks (
            pk bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            site {_TEXT},
            day {_TEXT} NOT NULL,
            note text NOT NULL,
            created_by text NOT NULL,
            created_at text NOT NULL)""",
        f"""CREATE TABLE alerts (
            pk bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            site {_TEXT} NOT NULL,
            terminal {_TEXT},
            kind text NOT NULL,
            message text NOT NULL,
            raised_at text NOT NULL,
            cleared_at text,
            acked_at text,
            acked_by text)""",
        "CREATE INDEX alerts_open ON alerts (cleared_at, site, terminal, kind)",
        # "user" is a reserved word in PostgreSQL; the column keeps its name.
        """CREATE TABLE sessions (
            token_hash text PRIMARY KEY,
            "user" text NOT NULL,
            csrf text NOT NULL,
            created_at text NOT NULL,
            expires_at text NOT NULL)""",
        "CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL)",
    ]),
    # A rating is (site, terminal, id): one terminal sending another's ids must
    # neither claim nor suppress them. Rows unique by id are unique by this too.
    ("m003_rating_identity_site_terminal_id", [
        "DROP INDEX ratings_id",
        "CREATE UNIQUE INDEX ratings_identity ON ratings (site, terminal, id)",
    ]),
    # 1: the kiosk's ``at`` was outside the time window; counted by receipt time.
    ("m004_ratings_clock_suspect", [
        "ALTER TABLE ratings ADD COLUMN clock_suspect smallint NOT NULL DEFAULT 0",
    ]),
    # Per-terminal daily quarantine caps, and retention by receipt time.
    ("m005_quarantine_by_terminal", [
        f"ALTER TABLE quarantine ADD COLUMN site {_TEXT}",
        f"ALTER TABLE quarantine ADD COLUMN terminal {_TEXT}",
        "UPDATE quarantine SET site = split_part(topic, '/', 3), terminal = split_part(topic, '/', 4)"
        " WHERE topic LIKE 'onetap/v1/%/%/%' AND split_part(topic, '/', 6) = ''",
        "CREATE INDEX quarantine_terminal ON quarantine (site, terminal, received_at)",
        "CREATE INDEX quarantine_received ON quarantine (received_at)",
    ]),
    # `onetap-server terminal retire`: off the board and the alert rules, ratings kept.
    ("m006_terminals_retired_at", [
        "ALTER TABLE terminals ADD COLUMN retired_at text",
    ]),
    # The audit chain (docs/audit.md), as SQLite's m007.
    ("m007_audit_chain", [
        "ALTER TABLE ratings ADD COLUMN chain text",
        "ALTER TABLE ratings ADD COLUMN head_sig text",
        f"CREATE TABLE chain_state ({CHAIN_STATE_DDL}, PRIMARY KEY (site, terminal))",
    ]),
]


def migrate(conn: psycopg.Connection) -> list[str]:
    """Apply the migrations not yet applied to the connection's schema; return their names.

    Several workers may start at once: an advisory lock (per schema) lets one
    migrate while the others wait and then find nothing left to do.
    """
    applied_now = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('onetap-migrations:' || current_schema()))")
        conn.execute("CREATE TABLE IF NOT EXISTS onetap_migrations ("
                     " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
        done = {row[0] for row in conn.execute("SELECT name FROM onetap_migrations")}
        for name, statements in MIGRATIONS:
            if name in done:
                continue
            for sql in statements:
                conn.execute(sql)
            conn.execute("INSERT INTO onetap_migrations (name) VALUES (%s)", [name])
            applied_now.append(name)
    if applied_now:
        log.info("database migrated: %s", ", ".join(applied_now))
    return applied_now


# -- writes deferred to the commit ---------------------------------------------


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

    def merge(self, other: "_Pending") -> None:
        for key, n in other.counts.items():
            self.counts[key] = self.counts.get(key, 0) + n
        for key, ops in other.terminals.items():
            self.terminals.setdefault(key, []).extend(ops)


_UNNEST_TYPES = {"hour": "smallint", "weekday": "smallint", "suspect": "smallint",
                 "score": "smallint", "n": "integer"}


def _rollup_upsert(name: str, dims: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    cols = (*dims, "weekday", "suspect", "score", "n")
    arrays = ", ".join(f"%s::{_UNNEST_TYPES.get(c, 'text')}[]" for c in cols)
    conflict = ", ".join((*dims, "suspect", "score"))
    sql = (f"INSERT INTO {name} ({', '.join(cols)}) SELECT * FROM unnest({arrays})"
           f" ON CONFLICT ({conflict}) DO UPDATE SET n = {name}.n + excluded.n")
    return sql, cols


_ROLLUP_SQL = {name: _rollup_upsert(name, dims) for name, dims in ROLLUPS}

_INSERT_TYPES = ("text", "text", "text", "bigint", "smallint", "text", "smallint", "text", "text",
                 "text", "text", "text", "text", "smallint", "smallint", "smallint")
_INSERT_RATINGS = (
    f"INSERT INTO ratings ({', '.join(_INSERT_COLUMNS)})"
    f" SELECT * FROM unnest({', '.join(f'%s::{t}[]' for t in _INSERT_TYPES)})"
    " ON CONFLICT (site, terminal, id) DO NOTHING RETURNING site, terminal, id"
)


def _store_errors(method):
    """Let callers see StoreError, never psycopg's own, from a read."""
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except psycopg.Error as exc:
            raise StoreError(f"database error: {exc}") from exc
    return wrapper


def _safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error:
        return "postgresql://…"
    return f"postgresql://{info.get('user', '')}@{info.get('host', '')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


class PostgresStore(RollupQueries):
    """Store on one PostgreSQL connection (autocommit outside transaction());
    use one instance per thread.

    Buckets, idempotence and rollups as SQLiteStore. Many processes may write
    at once: the unique index on (site, terminal, id) settles which one stores a rating
    (the other reports it duplicate once the first commits).
    """

    def __init__(self, url: str, timezone: str = "Asia/Seoul"):
        self.url = url
        self.tz = ZoneInfo(timezone)
        self.buckets = Buckets(self.tz)
        self._pending: list[_Pending] = []
        self.conn = self._connect()
        try:
            migrate(self.conn)
        except psycopg.Error as exc:
            self.conn.close()
            raise StoreError(f"{_safe_url(url)}: cannot migrate the database ({exc})") from exc

    @classmethod
    def open(cls, url: str, timezone: str = "Asia/Seoul") -> "PostgresStore":
        return cls(url, timezone)

    def _connect(self) -> psycopg.Connection:
        try:
            return psycopg.connect(self.url, autocommit=True, connect_timeout=10,
                                   application_name="onetap-server")
        except psycopg.Error as exc:
            raise StoreError(f"{_safe_url(self.url)}: cannot connect ({exc})".strip()) from exc

    def _connection(self) -> psycopg.Connection:
        # A restarted database server breaks the connection: the next
        # transaction or read (the ingest worker's retry) connects again.
        if self.conn.broken or self.conn.closed:
            if self._pending:
                raise StoreError("database connection lost inside a transaction")
            log.warning("database connection lost; reconnecting")
            self.conn = self._connect()
        return self.conn

    # -- writing --------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        conn = self._connection()
        outer = not self._pending
        self._pending.append(_Pending())
        try:
            try:
                with conn.transaction():
                    yield
                    if outer:
                        self._flush(self._pending[-1])
            except psycopg.Error as exc:
                # Callers tell a failing store (retry later, send no Ack) from bad input.
                raise StoreError(f"database error: {exc}") from exc
        except BaseException:
            self._pending.pop()
            raise
        done = self._pending.pop()
        if self._pending:
            self._pending[-1].merge(done)

    def _flush(self, pending: _Pending) -> None:
        # Pipelined (one round trip each group), and the rollups last: their
        # few hot rows are shared by every worker, so hold them the shortest.
        conn = self.conn
        with conn.pipeline():
            for (site, terminal), ops in sorted(pending.terminals.items()):
                for op in ops:
                    conn.execute(op[0], (site, terminal, *op[1:]))
        with conn.pipeline():
            self._write_rollups(pending.counts)

    def _write_rollups(self, counts: dict[tuple, int]) -> None:
        if not counts:
            return
        conn = self.conn
        for name, dims in ROLLUPS:
            sql, cols = _ROLLUP_SQL[name]
            key_cols = cols[:-1]
            index = [_KEY_INDEX[c] for c in key_cols]
            projected: dict[tuple, int] = {}
            for key, n in counts.items():
                small = tuple(key[i] for i in index)
                projected[small] = projected.get(small, 0) + n
            # Key order (weekday, a function of day, sorts with it) = lock order.
            rows = sorted((k, n) for k, n in projected.items() if n != 0)
            if not rows:
                continue
            columns = [list(column) for column in zip(*(k + (n,) for k, n in rows))]
            conn.execute(sql, columns)
            if any(n < 0 for _, n in rows):
                where = " AND ".join(f"{c} = %s" for c in (*dims, "suspect", "score"))
                skip = len(dims) + 1  # weekday is not part of the key
                with conn.cursor() as cur:
                    cur.executemany(f"DELETE FROM {name} WHERE {where} AND n <= 0",
                                    [(*k[:len(dims)], *k[skip:]) for k, n in rows if n < 0])

    def _ingest_many(self, batches: Sequence[tuple[str, str, Sequence[Rating]]],
                     received_at: datetime) -> list[BatchResult]:
        plan = IngestPlan(batches, received_at, self.buckets)
        values = plan.rows
        stored: set[tuple[str, str, str]] = set()
        if values:
            # (site, terminal, seq) order: a resend hitting two workers at once
            # takes the unique-index locks in the same order in both.
            rows = sorted(values.values(), key=lambda v: (v[1], v[2], v[3], v[0]))
            with self.conn.cursor() as cur:
                cur.execute(_INSERT_RATINGS, [list(column) for column in zip(*rows)])
                stored = {(row[0], row[1], row[2]) for row in cur.fetchall()}
            counts = self._pending[-1].counts
            for identity in stored:
                key = _rollup_key(values[identity], 0)
                counts[key] = counts.get(key, 0) + 1
        return plan.results(stored)

    def quarantine(self, *, received_at: datetime, topic: str | None, payload: bytes,
                   reason: str, rating_id: str | None = None, site: str | None = None,
                   terminal: str | None = None) -> None:
        with self.transaction():
            self.conn.execute(
                "INSERT INTO quarantine (received_at, topic, payload, reason, rating_id, site, terminal)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (_iso(received_at), _text(topic), bytes(payload), _text(reason), _text(rating_id),
                 _text(site), _text(terminal)))

    @_store_errors
    def quarantine_usage(self, site: str, terminal: str, since: datetime) -> tuple[int, int]:
        rows, size = self._execute(
            "SELECT count(*), coalesce(sum(octet_length(payload)), 0) FROM quarantine"
            " WHERE site = %s AND terminal = %s AND received_at >= %s",
            [site, terminal, _iso(since.astimezone(timezone.utc))]).fetchone()
        return int(rows), int(size)

    def prune_quarantine(self, received_before: datetime) -> int:
        total = 0
        before = _iso(received_before.astimezone(timezone.utc))
        while True:
            with self.transaction():
                deleted = self.conn.execute(
                    "DELETE FROM quarantine WHERE pk IN"
                    " (SELECT pk FROM quarantine WHERE received_at < %s LIMIT %s)",
                    [before, _PRUNE_BATCH]).rowcount
            total += deleted
            if deleted < _PRUNE_BATCH:
                return total

    def update_status(self, site: str, terminal: str, status: Status,
                      received_at: datetime) -> None:
        now = _iso(received_at)
        with self.transaction():
            if status.state == "online":
                op = ("INSERT INTO terminals (site, terminal, state, last_seen, status, updated_at)"
                      " VALUES (%s, %s, 'online', %s, %s, %s)"
                      " ON CONFLICT (site, terminal) DO UPDATE SET state = 'online',"
                      " last_seen = excluded.last_seen, status = excluded.status,"
                      " updated_at = excluded.updated_at",
                      now, _text(json.dumps(dict(status.fields))), now)
            else:
                # A Last Will carries nothing else: keep the last known fields.
                op = ("INSERT INTO terminals (site, terminal, state, updated_at)"
                      " VALUES (%s, %s, %s, %s)"
                      " ON CONFLICT (site, terminal) DO UPDATE SET state = excluded.state,"
                      " updated_at = excluded.updated_at",
                      status.state, now)
            self._pending[-1].terminals.setdefault((site, terminal), []).append(op)

    def retire_terminal(self, site: str, terminal: str, at: datetime) -> bool:
        now = _iso(at)
        with self.transaction():
            row = self.conn.execute("SELECT retired_at, last_seen FROM terminals"
                                    " WHERE site = %s AND terminal = %s FOR UPDATE",
                                    (site, terminal)).fetchone()
            if row is not None and is_retired(*row):
                return False
            self.conn.execute(
                "INSERT INTO terminals (site, terminal, state, updated_at, retired_at)"
                " VALUES (%s, %s, 'retired', %s, %s)"
                " ON CONFLICT (site, terminal) DO UPDATE SET retired_at = excluded.retired_at",
                (site, terminal, now, now))
        return True

    def seen(self, site: str, terminal: str, received_at: datetime) -> None:
        now = _iso(received_at)
        with self.transaction():
            self._pending[-1].terminals.setdefault((site, terminal), []).append((
                "INSERT INTO terminals (site, terminal, last_seen, updated_at)"
                " VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (site, terminal) DO UPDATE SET last_seen = excluded.last_seen",
                now, now))

    # -- reading --------------------------------------------------------------

    @staticmethod
    def _where(filters: Filters) -> tuple[str, list[Any]]:
        clauses = ["day BETWEEN %s AND %s"]
        params: list[Any] = [filters.date_from.isoformat(), filters.date_to.isoformat()]
        if filters.site is not None:
            clauses.append("site = %s")
            params.append(filters.site)
        if filters.terminal is not None:
            clauses.append("terminal = %s")
            params.append(filters.terminal)
        if filters.sites is not None:
            if filters.sites:
                clauses.append("site = ANY(%s::text[])")
                params.append(sorted(filters.sites))
            else:
                clauses.append("false")
        if filters.suspect is not None:
            clauses.append("suspect = %s")
            params.append(int(filters.suspect))
        return " AND ".join(clauses), params

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor:
        return self._connection().execute(sql, params)

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        try:
            return self._execute(sql, params).fetchall()
        except psycopg.Error as exc:
            raise StoreError(f"database error: {exc}") from exc

    def _dicts(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._connection().cursor(row_factory=dict_row) as cur:
            cur.execute(sql, params)
            return cur.fetchall()

    def iter_ratings(self, filters: Filters, *, with_suspect: bool = False) -> Iterator[dict[str, Any]]:
        """Every rating of *filters*, RATING_COLUMNS and local_day (plus ``suspect`` if asked), streamed."""
        where, params = self._where(filters)
        try:
            cursor = self._connection().cursor()
        except psycopg.Error as exc:
            raise StoreError(f"database error: {exc}") from exc
        try:
            # Streamed in chunks: a year's export never sits in memory whole.
            stream = cursor.stream(
                f"SELECT {', '.join(RATING_COLUMNS)}, suspect, day FROM ratings WHERE {where}"
                " ORDER BY day, at, pk", params, size=1000)
            try:
                for row in stream:
                    record = dict(zip(RATING_COLUMNS, row))
                    record["clock_synced"] = bool(record["clock_synced"])
                    # The local day it is counted on (the server's, bounded), for exports.
                    record["local_day"] = row[-1]
                    if with_suspect:
                        record["suspect"] = bool(row[-2])
                    yield record
            finally:
                stream.close()
        except psycopg.Error as exc:
            raise StoreError(f"database error: {exc}") from exc
        finally:
            cursor.close()

    @_store_errors
    def counts(self) -> dict[str, int]:
        out = {
            "ratings": self._execute("SELECT count(*) FROM ratings").fetchone()[0],
            "quarantine": self.quarantine_count(),
        }
        for state in ("online", "offline", "unknown"):
            out[f"terminals_{state}"] = 0
        for state, count in self._execute("SELECT state, count(*) FROM terminals GROUP BY state"):
            out[f"terminals_{state}"] = count
        return out

    @_store_errors
    def quarantined(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest quarantined messages, raw payload included."""
        return self._dicts("SELECT * FROM quarantine ORDER BY pk DESC LIMIT %s", [limit])

    # -- suspect ratings (alerts' burst detection) ---------------------------------

    @_store_errors
    def ratings_after(self, pk: int, limit: int = 50_000) -> list[dict[str, Any]]:
        """Ratings stored after row *pk* (SUSPECT_COLUMNS), oldest first.

        With several writers a smaller pk may commit after a larger one was
        read; burst detection tolerates that (it re-reads by terminal and seq).
        """
        return self._dicts(
            f"SELECT {SUSPECT_COLUMNS} FROM ratings WHERE pk > %s"
            " ORDER BY pk LIMIT %s", [pk, limit])

    @_store_errors
    def terminal_ratings(self, site: str, terminal: str, seq_from: int, seq_to: int,
                         limit: int = 1_000_000) -> list[dict[str, Any]]:
        """One terminal's ratings with seq in [seq_from, seq_to], in seq order (the first *limit*)."""
        return self._dicts(
            f"SELECT {SUSPECT_COLUMNS} FROM ratings"
            " WHERE site = %s AND terminal = %s AND seq BETWEEN %s AND %s ORDER BY seq, pk LIMIT %s",
            [site, terminal, seq_from, seq_to, limit])

    def mark_suspect(self, pks: Sequence[int]) -> int:
        """Flag ratings as suspect (never deleting them), moving their counts in
        every rollup; returns how many were newly flagged."""
        with self.transaction():
            rows = self.conn.execute(
                f"UPDATE ratings SET suspect = 1 WHERE pk = ANY(%s::bigint[]) AND suspect = 0"
                f" RETURNING {', '.join(_INSERT_COLUMNS)}", [list(pks)]).fetchall()
            counts = self._pending[-1].counts
            for row in rows:
                for suspect, delta in ((0, -1), (1, 1)):
                    key = _rollup_key(row, suspect)
                    counts[key] = counts.get(key, 0) + delta
        return len(rows)

    def prune_ratings(self, before_day: str, received_before: datetime | None = None,
                      *, batch: int = 10_000) -> int:
        """Retention (see Store.prune_ratings): rollups stay; a batch per short transaction."""
        where = "day < %s"
        params: list[Any] = [before_day]
        if received_before is not None:
            # received_at is stored as RFC 3339 in UTC, so text order is time order.
            where += " AND received_at < %s"
            params.append(_iso(received_before.astimezone(timezone.utc)))
        total = 0
        while True:
            with self.transaction():
                deleted = self.conn.execute(
                    f"DELETE FROM ratings WHERE pk IN (SELECT pk FROM ratings WHERE {where} LIMIT %s)",
                    [*params, batch]).rowcount
            total += deleted
            if deleted < batch:
                return total

    @_store_errors
    def low_scores_since(self, day: str, max_score: int) -> list[dict[str, Any]]:
        """Ratings not suspect with score <= max_score on local days >= *day*."""
        return self._dicts(
            "SELECT site, terminal, score, at FROM ratings"
            " WHERE day >= %s AND score <= %s AND suspect = 0", [day, max_score])

    # -- audit chain (m007) ------------------------------------------------------

    def set_rating_chains(self, site: str, terminal: str,
                          rows: Sequence[tuple[str, str | None, str | None]]) -> None:
        """Store (id, chain, head_sig) of ratings just inserted."""
        if not rows:
            return
        ids, chains, sigs = (list(column) for column in zip(*rows))
        # One statement for the batch (an UPDATE per rating cost more than the insert).
        with self.transaction():
            self.conn.execute(
                "UPDATE ratings AS r SET chain = v.chain, head_sig = v.sig"
                " FROM unnest(%s::text[], %s::text[], %s::text[]) AS v(id, chain, sig)"
                " WHERE r.site = %s AND r.terminal = %s AND r.id = v.id",
                [ids, chains, sigs, site, terminal])

    @_store_errors
    def rating_chain(self, site: str, terminal: str, seq: int) -> str | None:
        rows = self._read("SELECT chain FROM ratings WHERE site = %s AND terminal = %s AND seq = %s"
                          " ORDER BY pk LIMIT 1", [site, terminal, seq])
        return rows[0][0] if rows else None

    @_store_errors
    def chain_state(self, site: str, terminal: str, *, for_update: bool = False) -> dict[str, Any] | None:
        """The terminal's chain state; *for_update* (inside a transaction): locked until the
        commit, so that ingest workers sharing the subscription move it on one at a time."""
        if not for_update:
            rows = self._dicts("SELECT * FROM chain_state WHERE site = %s AND terminal = %s", [site, terminal])
            return rows[0] if rows else None
        rows = self._dicts("SELECT * FROM chain_state WHERE site = %s AND terminal = %s FOR UPDATE",
                           [site, terminal])
        if rows:
            return rows[0]
        # No row to lock yet: make one (a racing worker's wins), then lock it.
        self.conn.execute(
            "INSERT INTO chain_state (site, terminal, status, missing, updated_at, contiguous_seq, max_seq)"
            " VALUES (%s, %s, 'unchained', '[]', '', 0, 0) ON CONFLICT (site, terminal) DO NOTHING",
            [site, terminal])
        rows = self._dicts("SELECT * FROM chain_state WHERE site = %s AND terminal = %s FOR UPDATE",
                           [site, terminal])
        return rows[0] if rows and rows[0]["updated_at"] else None

    @_store_errors
    def chain_states(self, site: str | None = None) -> list[dict[str, Any]]:
        if site is None:
            return self._dicts("SELECT * FROM chain_state ORDER BY site, terminal")
        return self._dicts("SELECT * FROM chain_state WHERE site = %s ORDER BY terminal", [site])

    def save_chain_state(self, state: dict[str, Any]) -> None:
        cols = ", ".join(CHAIN_STATE_COLUMNS)
        updates = ", ".join(f"{c} = excluded.{c}" for c in CHAIN_STATE_COLUMNS[2:])
        with self.transaction():
            self.conn.execute(
                f"INSERT INTO chain_state ({cols}) VALUES ({', '.join(['%s'] * len(CHAIN_STATE_COLUMNS))})"
                f" ON CONFLICT (site, terminal) DO UPDATE SET {updates}",
                [state.get(c) for c in CHAIN_STATE_COLUMNS])

    @_store_errors
    def audit_spans(self, site: str, day_from: str, day_to: str) -> list[tuple[str, int, int]]:
        return [tuple(row) for row in self._read(
            "SELECT terminal, min(seq), max(seq) FROM ratings WHERE site = %s AND day BETWEEN %s AND %s"
            " GROUP BY terminal ORDER BY terminal", [site, day_from, day_to])]

    @_store_errors
    def audit_rows(self, site: str, terminal: str, seq_from: int, seq_to: int) -> list[dict[str, Any]]:
        return self._dicts(
            f"SELECT {AUDIT_COLUMNS} FROM ratings WHERE site = %s AND terminal = %s"
            " AND seq BETWEEN %s AND %s ORDER BY seq, pk", [site, terminal, seq_from, seq_to])

    @_store_errors
    def audit_neighbours(self, site: str, terminal: str, seq_from: int, seq_to: int) -> tuple[int | None, int | None]:
        before = self._read("SELECT max(seq) FROM ratings WHERE site = %s AND terminal = %s AND seq < %s",
                            [site, terminal, seq_from])[0][0]
        signed = self._read("SELECT min(seq) FROM ratings WHERE site = %s AND terminal = %s AND seq >= %s"
                            " AND head_sig IS NOT NULL", [site, terminal, seq_to])[0][0]
        return before, signed

    @_store_errors
    def audit_cut(self, site: str, terminal: str, before_day: str) -> dict[str, Any] | None:
        rows = self._dicts(
            f"SELECT {AUDIT_COLUMNS} FROM ratings WHERE site = %s AND terminal = %s AND day < %s"
            " ORDER BY seq DESC LIMIT 1", [site, terminal, before_day])
        return rows[0] if rows else None

    # -- meta, marks, alerts, sessions ----------------------------------------

    @_store_errors
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self._execute("SELECT value FROM meta WHERE key = %s", [key]).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction():
            self.conn.execute(
                "INSERT INTO meta (key, value) VALUES (%s, %s)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value", [key, value])

    def add_mark(self, site: str | None, day: date, note: str, created_by: str,
                 created_at: datetime) -> int:
        """A dated note (say, a new queue system) for before/after comparisons."""
        with self.transaction():
            return self.conn.execute(
                "INSERT INTO marks (site, day, note, created_by, created_at)"
                " VALUES (%s, %s, %s, %s, %s) RETURNING pk",
                [site, day.isoformat(), _text(note), created_by, _iso(created_at)]).fetchone()[0]

    @_store_errors
    def marks(self, sites: frozenset[str] | None = None) -> list[dict[str, Any]]:
        """Marks in date order: site-wide ones (site NULL) and those of *sites* (None: all)."""
        return [row for row in self._dicts("SELECT * FROM marks ORDER BY day, pk")
                if sites is None or row["site"] is None or row["site"] in sites]

    def delete_mark(self, pk: int) -> None:
        with self.transaction():
            self.conn.execute("DELETE FROM marks WHERE pk = %s", [pk])

    @_store_errors
    def open_alerts(self) -> list[dict[str, Any]]:
        return self._dicts("SELECT * FROM alerts WHERE cleared_at IS NULL ORDER BY pk")

    @_store_errors
    def alerts(self, sites: frozenset[str] | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """Newest alerts first, open and cleared."""
        rows = self._dicts(
            "SELECT * FROM alerts ORDER BY cleared_at IS NOT NULL, pk DESC LIMIT %s", [limit])
        return [r for r in rows if sites is None or r["site"] in sites]

    def raise_alert(self, site: str, terminal: str | None, kind: str, message: str,
                    now: datetime) -> int:
        with self.transaction():
            return self.conn.execute(
                "INSERT INTO alerts (site, terminal, kind, message, raised_at)"
                " VALUES (%s, %s, %s, %s, %s) RETURNING pk",
                [site, terminal, kind, _text(message), _iso(now)]).fetchone()[0]

    def clear_alert(self, pk: int, now: datetime) -> None:
        with self.transaction():
            self.conn.execute("UPDATE alerts SET cleared_at = %s WHERE pk = %s AND cleared_at IS NULL",
                              [_iso(now), pk])

    def ack_alert(self, pk: int, user: str, now: datetime,
                  sites: frozenset[str] | None = None) -> bool:
        """Acknowledge alert *pk* if it is in *sites*; False if there is no such alert."""
        with self.transaction():
            row = self.conn.execute("SELECT site FROM alerts WHERE pk = %s", [pk]).fetchone()
            if row is None or (sites is not None and row[0] not in sites):
                return False
            self.conn.execute("UPDATE alerts SET acked_at = %s, acked_by = %s WHERE pk = %s",
                              [_iso(now), user, pk])
            return True

    def add_session(self, token_hash: str, user: str, csrf: str, now: datetime,
                    expires: datetime) -> None:
        with self.transaction():
            self.conn.execute("DELETE FROM sessions WHERE expires_at < %s", [_iso(now)])
            self.conn.execute(
                'INSERT INTO sessions (token_hash, "user", csrf, created_at, expires_at)'
                " VALUES (%s, %s, %s, %s, %s)", [token_hash, user, csrf, _iso(now), _iso(expires)])

    @_store_errors
    def get_session(self, token_hash: str) -> dict[str, Any] | None:
        row = self._execute(
            'SELECT "user", csrf, created_at, expires_at FROM sessions WHERE token_hash = %s',
            [token_hash]).fetchone()
        if row is None:
            return None
        return {"user": row[0], "csrf": row[1], "created_at": row[2], "expires_at": row[3]}

    def delete_session(self, token_hash: str) -> None:
        with self.transaction():
            self.conn.execute("DELETE FROM sessions WHERE token_hash = %s", [token_hash])

    def ping(self) -> bool:
        try:
            self._execute("SELECT 1 FROM ratings LIMIT 1").fetchall()
            return True
        except (psycopg.Error, StoreError) as exc:
            log.warning("database check failed: %s", exc)
            return False

    def close(self) -> None:
        self.conn.close()


def _text(value: str | None) -> str | None:
    # PostgreSQL text cannot hold NUL, which SQLite keeps: a quarantined
    # topic or reason may contain anything, and must still be stored.
    return value.replace("\x00", "\\x00") if isinstance(value, str) and "\x00" in value else value
