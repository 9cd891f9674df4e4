"""Dialect: all that differs between SQLite and PostgreSQL under the one store."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import itertools
import logging
import os
import sqlite3
from typing import Any, Callable, Iterator, Mapping, Sequence

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from server.errors import StoreError
from server.schema import TABLES

log = logging.getLogger(__name__)

#: Host parameters per ``IN (...)`` list: well under SQLite's limit.
CHUNK = 500
#: Host parameters per statement that every SQLite build takes (before 3.32 the limit).
SQLITE_MAX_PARAMETERS = 999
#: Beside a SQLite database (as its -wal and -shm): the lock its writers take in turn.
WRITER_SUFFIX = "-writer"


def _kinds(table: str, columns: Sequence[str]) -> list[str]:
    return [TABLES[table].column(c).kind for c in columns]


class SQLite:
    """One SQLite connection (WAL, synchronous=FULL), through sqlite-utils' Database."""

    name = "sqlite"
    types = {"key": "INTEGER PRIMARY KEY", "name": "TEXT", "text": "TEXT", "small": "INTEGER",
             "big": "INTEGER", "count": "INTEGER", "blob": "BLOB"}
    clustered = " WITHOUT ROWID"
    #: A collation sorting text by code point, as Python does (SQLite's BINARY, the default).
    byte_order = ""
    #: A read that takes the row for the transaction (SQLite's write lock covers it).
    lock_row = ""
    error: type[Exception] = sqlite3.Error

    def __init__(self, db: Database):
        self.db = db
        conn = db.conn
        if not db.memory:
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=10000")
        #: The file whose lock writers take in turn (None: in memory, one connection).
        file = conn.execute("PRAGMA database_list").fetchone()[2]
        self.writer_path: str | None = file + WRITER_SUFFIX if file else None
        self._writer: int | None = None

    @property
    def conn(self) -> sqlite3.Connection:
        return self.db.conn

    def connection(self, in_transaction: bool) -> sqlite3.Connection:
        return self.db.conn

    def sql(self, sql: str) -> str:
        return sql

    def atomic(self) -> contextlib.AbstractContextManager:
        if self.writer_path is None or self.db.conn.in_transaction:
            return self.db.atomic()
        return self._writing()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """A transaction taken in turn with every other writer of the file.

        SQLite's own busy handler polls for the write lock with growing sleeps
        (up to 100 ms each), so of two ingest workers one could wait round
        after round while the other, between its commits for less than a
        sleep, took the lock again: that waiting was the seconds of a
        two-worker load's p99. A writer blocked on flock() is woken the moment
        the lock is let go. A writer that never lets go stalls the others, as
        SQLite's lock did; the supervisor reports their threads stuck.
        """
        if self._writer is None:
            self._writer = self._open_writer()
        fcntl.flock(self._writer, fcntl.LOCK_EX)
        try:
            with self.db.atomic():
                yield
        finally:
            fcntl.flock(self._writer, fcntl.LOCK_UN)

    def _open_writer(self) -> int:
        """The writers' lock file, with the database's owner and mode: made by root
        (a command run by hand), it must still open for the service's user."""
        path = self.writer_path
        try:
            database = os.stat(path[:-len(WRITER_SUFFIX)])
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, database.st_mode & 0o666)
            try:
                made = os.fstat(fd)
                if os.geteuid() == 0 and (made.st_uid, made.st_gid) != (database.st_uid, database.st_gid):
                    os.fchown(fd, database.st_uid, database.st_gid)
            except OSError:
                os.close(fd)
                raise
            return fd
        except OSError as exc:
            raise StoreError(f"{path}: cannot open the writers' lock ({exc.strerror})") from exc

    def text(self, value: Any) -> Any:
        return value

    def bulk(self, table: str, columns: Sequence[str], rows: list[tuple], tail: str = "") -> None:
        # Many rows to a statement (a multi-row VALUES, up to the parameter limit):
        # SQLite is stepped, and the GIL given up and taken back, once a statement
        # instead of once a row. The drain's ratings take a fifth less CPU so
        # (docs/benchmarks.md). The rows left over go one to a statement.
        head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
        row = f"({', '.join('?' * len(columns))})"
        per = max(1, SQLITE_MAX_PARAMETERS // len(columns))
        whole = len(rows) - len(rows) % per
        if whole:
            self.db.conn.executemany(f"{head}{', '.join([row] * per)} {tail}",
                                     [tuple(itertools.chain.from_iterable(rows[start:start + per]))
                                      for start in range(0, whole, per)])
        if whole < len(rows):
            self.db.conn.executemany(f"{head}{row} {tail}", rows[whole:])

    def many(self, sql: str, rows: list[tuple]) -> None:
        self.db.conn.executemany(sql, rows)

    def grouped(self, columns: Sequence[str], kinds: Sequence[str], rows: list[tuple],
                inserts: Sequence[str], derived: Sequence[tuple[str, Sequence[str], str]] = ()) -> None:
        """Run *inserts*, each reading the *rows* as a table ``rollup_keys`` of *columns*,
        or one of the *derived* (name, columns, a SELECT over rollup_keys and those before it).

        Each goes once into a temporary table (this connection's, emptied
        after; in the caller's transaction, so a failure takes them back too).
        """
        conn = self.db.conn
        conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS rollup_keys ({', '.join(columns)})")
        conn.executemany(f"INSERT INTO rollup_keys VALUES ({', '.join('?' * len(columns))})", rows)
        for name, names, select in derived:
            conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {name} ({', '.join(names)})")
            conn.execute(f"INSERT INTO {name} {select}")
        for sql in inserts:
            conn.execute(sql)
        conn.execute("DELETE FROM rollup_keys")
        for name, _, _ in derived:
            conn.execute(f"DELETE FROM {name}")

    def update_existing(self, table: str, key: Sequence[str], columns: Sequence[str],
                        required: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> None:
        """Set *columns* of rows that exist, found by *key* (*required*: the NOT NULL
        columns an insert would need, unused here): one UPDATE each, 5 µs a
        chain state against 8 for the whole row's upsert."""
        sql = (f"UPDATE {table} SET {', '.join(f'{c} = ?' for c in columns)}"
               f" WHERE {' AND '.join(f'{c} = ?' for c in key)}")
        self.db.conn.executemany(sql, [[row[c] for c in (*columns, *key)] for row in rows])

    def exclusive(self, job: int) -> bool:
        """Whether this transaction may run *job* alone: always, SQLite's write
        lock lets one writer in at a time."""
        return True

    def insert_new(self, table: str, columns: Sequence[str], rows: dict[tuple, tuple],
                   key: tuple[str, ...]) -> set[tuple]:
        """Insert the rows (by their values of the unique *key*) whose key is not
        stored yet; return the keys inserted."""
        # Resends are rare: try everything at once first and look up which keys
        # exist only when the unique index says some do.
        try:
            with self.db.atomic():
                self.bulk(table, columns, list(rows.values()))
            return set(rows)
        except sqlite3.IntegrityError:
            pass
        *group_columns, last = key
        groups: dict[tuple, list] = {}
        for k in rows:
            groups.setdefault(k[:-1], []).append(k[-1])
        existing: set[tuple] = set()
        for group, values in groups.items():
            for start in range(0, len(values), CHUNK):
                chunk = values[start:start + CHUNK]
                where = [f"{c} = ?" for c in group_columns] + [f"{last} IN ({','.join('?' * len(chunk))})"]
                existing.update((*group, value) for (value,) in self.db.conn.execute(
                    f"SELECT {last} FROM {table} WHERE {' AND '.join(where)}", [*group, *chunk]))
        fresh = {k: row for k, row in rows.items() if k not in existing}
        self.bulk(table, columns, list(fresh.values()))
        return set(fresh)

    def stream(self, sql: str, params: Sequence[Any]) -> Iterator[tuple]:
        cursor = self.db.conn.execute(sql, params)
        try:
            while rows := cursor.fetchmany(1000):
                yield from rows
        finally:
            cursor.close()

    def migrate(self, steps: Sequence[tuple[str, Callable[[], None]]]) -> None:
        # sqlite-utils' record (_sqlite_migrations, set "onetap-server"): each
        # step and its record in one transaction, as databases already hold it.
        migrations = Migrations("onetap-server")
        for name, run in steps:
            migrations(name=name)(lambda db, run=run: run())
        migrations.apply(self.db)

    def close(self) -> None:
        self.db.conn.close()
        if self._writer is not None:
            os.close(self._writer)
            self._writer = None


class Postgres:
    """One PostgreSQL connection (psycopg 3, autocommit outside transactions), reconnected when lost."""

    name = "postgresql"
    types = {"key": "bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
             # Byte order, as SQLite sorts, whatever the database's locale.
             "name": 'text COLLATE "C"', "text": "text", "small": "smallint", "big": "bigint",
             "count": "integer", "blob": "bytea"}
    #: The rollups: a roll-up updates most of its rows' counts again and again;
    #: room left on each page lets PostgreSQL write the new row version there
    #: without touching the index (a HOT update): 92 % of the roll-up's updates
    #: instead of 41 % (docs/benchmarks.md, issue 14).
    clustered = " WITH (fillfactor = 70)"
    lock_row = " FOR UPDATE"
    byte_order = ' COLLATE "C"'
    _casts = {**types, "key": "bigint", "name": "text"}

    def __init__(self, url: str):
        import psycopg

        self.psycopg = psycopg
        self.error: type[Exception] = psycopg.Error
        self.url = url
        self.conn = self._connect()

    def _connect(self):
        try:
            return self.psycopg.connect(self.url, autocommit=True, connect_timeout=10,
                                        application_name="onetap-server")
        except self.psycopg.Error as exc:
            raise StoreError(f"{self.safe_url()}: cannot connect ({exc})".strip()) from exc

    def safe_url(self) -> str:
        """The URL without its password, for messages."""
        try:
            info = self.psycopg.conninfo.conninfo_to_dict(self.url)
        except self.psycopg.Error:
            return "postgresql://…"
        return (f"postgresql://{info.get('user', '')}@{info.get('host', '')}:{info.get('port', 5432)}"
                f"/{info.get('dbname', '')}")

    def connection(self, in_transaction: bool):
        # A restarted database server breaks the connection: the next
        # transaction or read (the ingest worker's retry) connects again.
        if self.conn.broken or self.conn.closed:
            if in_transaction:
                raise StoreError("database connection lost inside a transaction")
            log.warning("database connection lost; reconnecting")
            self.conn = self._connect()
        return self.conn

    @staticmethod
    @functools.lru_cache(maxsize=512)
    def sql(sql: str) -> str:
        return sql.replace("?", "%s")

    def atomic(self) -> contextlib.AbstractContextManager:
        return self.conn.transaction()

    def text(self, value: Any) -> Any:
        # PostgreSQL text cannot hold NUL, which SQLite keeps: a quarantined
        # topic or reason may contain anything, and must still be stored.
        return value.replace("\x00", "\\x00") if isinstance(value, str) and "\x00" in value else value

    def bulk(self, table: str, columns: Sequence[str], rows: list[tuple], tail: str = "") -> list[tuple]:
        # One statement of column arrays: a round trip per batch, not per row.
        # Sent in binary (%b): psycopg writes a text array element by element in
        # Python with a quoting check each, 2.6x the CPU (benchmarks.md, issue 14).
        arrays = ", ".join(f"%b::{self._casts[kind]}[]" for kind in _kinds(table, columns))
        with self.conn.cursor() as cur:
            cur.execute(f"INSERT INTO {table} ({', '.join(columns)}) SELECT * FROM unnest({arrays}) {tail}",
                        [list(column) for column in zip(*rows)])
            return cur.fetchall() if cur.description else []

    def many(self, sql: str, rows: list[tuple]) -> None:
        with self.conn.cursor() as cur:
            cur.executemany(self.sql(sql), rows)

    def grouped(self, columns: Sequence[str], kinds: Sequence[str], rows: list[tuple],
                inserts: Sequence[str], derived: Sequence[tuple[str, Sequence[str], str]] = ()) -> None:
        """Run *inserts*, each reading the *rows* as a relation ``rollup_keys`` of *columns*
        (of schema *kinds*), or one of the *derived* (name, columns, a SELECT
        over rollup_keys and those before it), in one statement.

        The rows go once, as column arrays; each insert is a data-modifying
        WITH query. One round trip and one statement to adapt instead of one
        per insert. PostgreSQL does not promise in which order the WITH
        queries run (each sorts its own rows); the store's roll-up, the one
        writer of the rollups, runs alone (``exclusive``), so no two
        transactions take their rows in different orders.
        """
        casts = ", ".join(f"%b::{self._casts[kind]}[]" for kind in kinds)
        withs = ", ".join([*(f"{name} ({', '.join(names)}) AS ({select})" for name, names, select in derived),
                           *(f"i{n} AS ({sql})" for n, sql in enumerate(inserts))])
        with self.conn.cursor() as cur:
            cur.execute(f"WITH rollup_keys ({', '.join(columns)}) AS (SELECT * FROM unnest({casts})),"
                        f" {withs} SELECT 1", [list(column) for column in zip(*rows)])

    def update_existing(self, table: str, key: Sequence[str], columns: Sequence[str],
                        required: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> None:
        """Set *columns* of rows that exist, found by *key*: one upsert of column
        arrays (an UPDATE per row measured slower), carrying the NOT NULL
        *required* columns an insert needs though it never inserts."""
        names = (*key, *required, *columns)
        self.bulk(table, names, [tuple(row[c] for c in names) for row in rows],
                  f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET"
                  f" {', '.join(f'{c} = excluded.{c}' for c in columns)}")

    def exclusive(self, job: int) -> bool:
        """Whether this transaction may run *job* alone: takes the advisory lock
        numbered *job* until the transaction ends, or says False at once if
        another transaction holds it."""
        with self.conn.cursor() as cur:
            cur.execute("SELECT pg_try_advisory_xact_lock(%s)", [job])
            return bool(cur.fetchone()[0])

    def insert_new(self, table: str, columns: Sequence[str], rows: dict[tuple, tuple],
                   key: tuple[str, ...]) -> set[tuple]:
        """Insert the rows (by their values of the unique *key*) whose key is not
        stored yet; return the keys inserted.

        Many workers may insert at once: the unique index settles which one
        stores a row (the other finds it stored once the first commits). Rows
        go in key order, so two workers take the index locks in the same order.
        """
        stored = self.bulk(table, columns, [row for _, row in sorted(rows.items())],
                           f"ON CONFLICT ({', '.join(key)}) DO NOTHING RETURNING {', '.join(key)}")
        return {tuple(row) for row in stored}

    def stream(self, sql: str, params: Sequence[Any]) -> Iterator[tuple]:
        # Streamed in chunks: a year's export never sits in memory whole.
        with self.connection(False).cursor() as cursor:
            yield from cursor.stream(self.sql(sql), params, size=1000)

    #: Before the one schema, PostgreSQL's m001 made what SQLite's m001 and m002 make.
    _IMPLIED = {"m002_rollups_suspect_staff": "m001_initial"}

    def migrate(self, steps: Sequence[tuple[str, Callable[[], None]]]) -> None:
        # Several workers may start at once: an advisory lock (per schema) lets
        # one migrate while the others wait and then find nothing left to do.
        applied_now = []
        with self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(hashtext('onetap-migrations:' || current_schema()))")
            self.conn.execute("CREATE TABLE IF NOT EXISTS onetap_migrations ("
                              " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
            done = {row[0] for row in self.conn.execute("SELECT name FROM onetap_migrations")}
            for name, run in steps:
                if name in done:
                    continue
                if self._IMPLIED.get(name) not in done:
                    run()
                self.conn.execute("INSERT INTO onetap_migrations (name) VALUES (%s)", [name])
                applied_now.append(name)
        if applied_now:
            log.info("database migrated: %s", ", ".join(applied_now))

    def close(self) -> None:
        self.conn.close()
