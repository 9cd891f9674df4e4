"""Backend: opens the Store that config ``db`` names (a SQLite file, or a postgresql:// URL)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from urllib.parse import urlsplit

from server.config import POSTGRES_SCHEMES
from server.errors import StoreError
from server.store import PostgresStore, SQLiteStore, Store


def is_postgres_url(db: str | Path) -> bool:
    return isinstance(db, str) and urlsplit(db).scheme in POSTGRES_SCHEMES


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
