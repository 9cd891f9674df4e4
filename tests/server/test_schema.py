"""The one schema: its migrations build what it defines, and old databases migrate forward without loss."""

import sqlite3
import uuid
from datetime import date, datetime, timedelta, timezone

import psycopg
import pytest
from sqlite_utils import Database

from kiosk.protocol import Rating
from server.schema import INDEXES, MIGRATIONS, TABLES
from server.store import Filters, PostgresStore, SQLiteStore
from tests import legacy_schema
from tests.backends import query

RECEIVED = datetime(2026, 11, 27, 1, 30, tzinfo=timezone.utc)
OLD_ID = "11111111-1111-4111-8111-111111111111"
DAY = Filters(date(2026, 11, 27), date(2026, 11, 27))


def columns_of(store, table):
    if store.dialect.name == "sqlite":
        return {row["name"] for row in query(store, f"PRAGMA table_info({table})")}
    return {row["column_name"] for row in query(
        store, "SELECT column_name FROM information_schema.columns"
               " WHERE table_schema = current_schema() AND table_name = ?", [table])}


def indexes_of(store):
    if store.dialect.name == "sqlite":
        rows = query(store, "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
                            " AND tbl_name != '_sqlite_migrations'")
        return {row["name"] for row in rows}
    rows = query(store, "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
                        " AND indexname NOT LIKE ?", ['%pkey'])
    return {row["indexname"] for row in rows}


def migration_names(store):
    if store.dialect.name == "sqlite":
        return [r["name"] for r in query(store, "SELECT name FROM _sqlite_migrations"
                                                " WHERE migration_set = 'onetap-server' ORDER BY id")]
    return sorted(r["name"] for r in query(store, "SELECT name FROM onetap_migrations"))


def test_migrations_build_exactly_the_defined_schema(store):
    # A column or index added to server/schema.py without its migration step
    # (or the other way round) fails here, on both backends.
    for name, table in TABLES.items():
        assert columns_of(store, name) == {c.name for c in table.columns}, name
    assert indexes_of(store) == set(INDEXES)
    assert sorted(migration_names(store)) == sorted(name for name, _ in MIGRATIONS)


def old_rows(execute):
    """What a database of the old code held: a rating (counted in the rollups, as
    the old ingest kept them), a terminal and an open alert."""
    execute("INSERT INTO ratings (id, site, terminal, seq, score, at, clock_synced, lang, input,"
            " received_at, day, hour, weekday) VALUES ('" + OLD_ID + "', 's1', 't1', 1, 4,"
            " '2026-11-27T10:00:00+09:00', 1, 'ko', 'touch', '2026-11-27T01:00:00.000+00:00',"
            " '2026-11-27', 10, 5)")
    for name, dims in legacy_schema.ROLLUPS:
        select = ", ".join(f"coalesce({d}, '')" if d in legacy_schema._NULLABLE else d for d in dims)
        execute(f"INSERT INTO {name} ({', '.join(dims)}, weekday, suspect, score, n)"
                f" SELECT {select}, weekday, 0, score, 1 FROM ratings")
    execute("INSERT INTO terminals (site, terminal, updated_at, last_seen) VALUES"
            " ('s1', 't1', '2026-11-27T01:00:00.000+00:00', '2026-11-27T01:00:00.000+00:00')")
    execute("INSERT INTO alerts (site, terminal, kind, message, raised_at)"
            " VALUES ('s1', 't1', 'offline', 'gone', '2026-11-27T01:00:00.000+00:00')")


def check_migrated(store):
    old = Rating(id=OLD_ID, seq=1, score=4, at="2026-11-27T10:00:00.000+09:00", clock_synced=True)
    # The old rating is still counted, by the rollups too, and is still the same rating.
    assert store.summary(DAY)[4] == 1
    assert [r["id"] for r in store.iter_ratings(DAY)] == [OLD_ID]
    assert store.ingest_batch("s1", "t1", [old], RECEIVED).duplicate == [OLD_ID]
    assert store.ingest_batch("s1", "t2", [old], RECEIVED).accepted == [OLD_ID]
    assert store.summary(DAY)[4] == 2
    assert store.quarantine_usage("s1", "t9", RECEIVED - timedelta(days=1)) == (1, 1)
    store.seen("s1", "t2", RECEIVED)
    assert {t["terminal"] for t in store.terminals()} == {"t1", "t2"}
    assert store.retire_terminal("s1", "t2", RECEIVED + timedelta(hours=1))
    assert [t["terminal"] for t in store.terminals()] == ["t1"]
    assert [a["kind"] for a in store.open_alerts()] == ["offline"]
    for name, table in TABLES.items():
        assert columns_of(store, name) == {c.name for c in table.columns}, name
    assert indexes_of(store) == set(INDEXES)
    assert sorted(migration_names(store)) == sorted(name for name, _ in MIGRATIONS)


@pytest.mark.parametrize("stop_before", [
    "m003_rating_identity_site_terminal_id", "m005_quarantine_by_terminal", None])
def test_a_sqlite_database_of_the_old_code_migrates_forward(tmp_path, stop_before):
    path = tmp_path / "old.db"
    db = Database(sqlite3.connect(path))
    legacy_schema.migrations.apply(db, stop_before=stop_before)
    old_rows(db.execute)
    if stop_before is None:  # the old code's m005 on: it named the terminal itself
        db.execute("INSERT INTO quarantine (received_at, topic, payload, reason, site, terminal)"
                   " VALUES ('2026-11-27T01:00:00.000+00:00', 'onetap/v1/s1/t9/status', x'00', 'bad', 's1', 't9')")
    else:  # before it: the migration names the terminal from the topic
        db.execute("INSERT INTO quarantine (received_at, topic, payload, reason)"
                   " VALUES ('2026-11-27T01:00:00.000+00:00', 'onetap/v1/s1/t9/status', x'00', 'bad')")
    db.conn.commit()
    db.conn.close()
    store = SQLiteStore.open(path)
    try:
        check_migrated(store)
        # Records stay in sqlite-utils' table, so the old code's names are not run twice.
        assert len(migration_names(store)) == len(set(migration_names(store)))
    finally:
        store.close()
    SQLiteStore.open(path).close()


@pytest.mark.parametrize("applied", [1, 2, len(legacy_schema.MIGRATIONS)])
def test_a_postgres_schema_of_the_old_code_migrates_forward(postgres_database, applied):
    url = postgres_database.new_schema()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            # The old code's steps up to where an older server stood, recorded as it did.
            conn.execute("CREATE TABLE onetap_migrations (name text PRIMARY KEY,"
                         " applied_at timestamptz NOT NULL DEFAULT now())")
            for name, statements in legacy_schema.MIGRATIONS[:applied]:
                for sql in statements:
                    conn.execute(sql)
                conn.execute("INSERT INTO onetap_migrations (name) VALUES (%s)", [name])
            old_rows(conn.execute)
            # Before the old m005 the migration names the terminal from the topic; after, the old code did.
            named = ("", "") if applied < 4 else (", site, terminal", ", 's1', 't9'")
            conn.execute(f"INSERT INTO quarantine (received_at, topic, payload, reason{named[0]}) VALUES"
                         f" ('2026-11-27T01:00:00.000+00:00', 'onetap/v1/s1/t9/status', '\\x00', 'bad'{named[1]})")
        store = PostgresStore.open(url)
        try:
            check_migrated(store)
        finally:
            store.close()
        PostgresStore.open(url).close()
    finally:
        postgres_database.drop_schema(url)


def test_a_fresh_database_runs_every_step_once(tmp_path):
    store = SQLiteStore.open(tmp_path / "new.db")
    store.close()
    again = SQLiteStore.open(tmp_path / "new.db")
    try:
        assert migration_names(again) == [name for name, _ in MIGRATIONS]
        again.ingest_batch("s1", "t1", [Rating(id=str(uuid.uuid4()), seq=1, score=5,
                                               at="2026-11-27T10:00:00.000+09:00", clock_synced=True)],
                           RECEIVED)
        assert again.summary(DAY)[5] == 1
    finally:
        again.close()
