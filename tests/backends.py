"""Both store backends for tests: SQLite files, and a throwaway PostgreSQL database with a schema per test.

The PostgreSQL server is found through ONETAP_TEST_POSTGRES (default
postgresql://postgres@127.0.0.1:5432/postgres, the maintenance database it
connects to). Each test session creates its own database onetap_test_<random>
there and drops it at the end; each test gets a fresh schema in it. Nothing
else on that server is touched. No server there is a failure, not a skip:
deploy/dev-setup.sh (run by .ci/run) makes sure one is running.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import quote, urlsplit, urlunsplit

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
BACKENDS = ("sqlite", "postgres")


def admin_url() -> str:
    return os.environ.get("ONETAP_TEST_POSTGRES", DEFAULT_POSTGRES)


def _with_database(url: str, database: str, query: str = "") -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, query, ""))


class PostgresDatabase:
    """One database for a test session, created on the server at ONETAP_TEST_POSTGRES."""

    def __init__(self, admin: str | None = None):
        self.admin = admin or admin_url()
        self.name = f"onetap_test_{uuid.uuid4().hex[:12]}"
        self.url = _with_database(self.admin, self.name)

    def create(self, durable: bool = False) -> "PostgresDatabase":
        import psycopg

        try:
            with psycopg.connect(self.admin, autocommit=True, connect_timeout=10) as conn:
                conn.execute(f'CREATE DATABASE "{self.name}"')
                # Tests never crash the database server: commits need not wait
                # for the disk (this database only; the server's others keep theirs).
                if not durable:
                    conn.execute(f'ALTER DATABASE "{self.name}" SET synchronous_commit = off')
        except psycopg.OperationalError as exc:
            raise RuntimeError(
                f"no PostgreSQL at {self.admin} (set ONETAP_TEST_POSTGRES, or run"
                f" deploy/dev-setup.sh which starts one): {exc}") from exc
        return self

    def drop(self) -> None:
        import psycopg

        with psycopg.connect(self.admin, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def new_schema(self) -> str:
        """A fresh schema; returns a URL whose connections use it."""
        import psycopg

        schema = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        return _with_database(self.admin, self.name,
                              "options=" + quote(f"-csearch_path={schema}"))

    def drop_schema(self, url: str) -> None:
        import psycopg

        schema = url.rsplit("%3D", 1)[-1]
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("SET lock_timeout = '20s'")
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


class Backend:
    """Opens stores on one database of one backend: ``open()`` may be called many times."""

    def __init__(self, kind: str, db: str | Path, cleanup=None):
        self.kind = kind
        self.db = db
        self._cleanup = cleanup

    def open(self, timezone: str = "Asia/Seoul"):
        from server.backend import open_store

        return open_store(self.db, timezone)

    def close(self) -> None:
        if self._cleanup is not None:
            self._cleanup()

    def __repr__(self) -> str:
        return f"Backend({self.kind}, {self.db})"


def make_backend(kind: str, tmp_path: Path, postgres: PostgresDatabase | None, name: str = "onetap.db") -> Backend:
    if kind == "sqlite":
        return Backend(kind, tmp_path / name)
    assert postgres is not None
    url = postgres.new_schema()
    return Backend(kind, url, cleanup=lambda: postgres.drop_schema(url))


# -- SQL on either backend, for assertions only ---------------------------------


def query(store, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """Rows as dicts (placeholders: ? on either backend; %s also on PostgreSQL)."""
    return store._dicts(sql, list(params))


def tuples(store, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
    return [tuple(row) for row in store._rows(sql, list(params))]


def execute(store, sql: str) -> None:
    """Run one statement outside any transaction and commit it (breaking things on purpose)."""
    store.conn.execute(sql)
    if store.dialect.name == "sqlite":
        store.conn.commit()


_memory_template: sqlite3.Connection | None = None


def memory_store():
    """A fresh, migrated SQLite store in memory, for tests that need hundreds (a property
    test's examples): migrating takes 0.4 s, copying a migrated one 3 ms."""
    from sqlite_utils import Database

    from server.store import SQLiteStore

    global _memory_template
    if _memory_template is None:
        _memory_template = SQLiteStore(Database(memory=True)).dialect.conn
    conn = sqlite3.connect(":memory:")
    _memory_template.backup(conn)
    return SQLiteStore(Database(conn))
