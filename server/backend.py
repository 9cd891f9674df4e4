"""Backend: opens the Store that config ``db`` names (a SQLite file, or a postgresql:// URL)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from urllib.parse import urlsplit

from server.errors import StoreError
from server.store import PostgresStore, SQLiteStore, Store

POSTGRES_SCHEMES = ("postgresql", "postgres")


class DatabaseURL(str):
    """A postgresql:// URL whose repr (say, in --check-config) hides its password."""

    def __repr__(self) -> str:
        return repr(describe(str(self)))


def is_postgres_url(db: str | Path) -> bool:
    return isinstance(db, str) and urlsplit(db).scheme in POSTGRES_SCHEMES


def check_postgres_url(url: str) -> str:
    """A postgresql:// URL that libpq can read, or ValueError saying why not."""
    parts = urlsplit(url)
    if parts.scheme not in POSTGRES_SCHEMES:
        raise ValueError(f"{url!r} is not a postgresql:// URL")
    if not parts.path.strip("/") and "dbname=" not in parts.query:
        raise ValueError(f"{url!r} names no database (postgresql://user@host:5432/DATABASE)")
    try:
        parts.port
    except ValueError:
        raise ValueError(f"{url!r} has an invalid port") from None
    return url


def describe(db: str | Path) -> str:
    """*db* for logs and messages: a URL without its password."""
    if not is_postgres_url(db):
        return str(db)
    parts = urlsplit(str(db))
    host = parts.hostname or "localhost"
    user = f"{parts.username}@" if parts.username else ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{user}{host}{port}{parts.path}"


def open_store(db: str | Path, timezone: str = "Asia/Seoul") -> Store:
    """The store for *db*, migrated: on PostgreSQL for a postgresql:// URL, else on SQLite.

    The only place that knows which backend is in use; everything else takes
    a ``store_factory`` that calls this.
    """
    if is_postgres_url(db):
        if importlib.util.find_spec("psycopg") is None:
            raise StoreError("a postgresql:// database needs psycopg: pip install 'onetap[server]'")
        return PostgresStore.open(str(db), timezone)
    return SQLiteStore.open(db, timezone)
