"""The dialects on real SQLite and PostgreSQL: placeholders, insert-if-new, upserts and the DDL they render."""

import fcntl
import os
import threading

from server.dialect import WRITER_SUFFIX, Postgres, SQLite
from server.schema import ROLLUPS, TABLES, AddColumn, CreateTable, render
from server.store import SQLiteStore
from tests.backends import query, tuples


def test_postgres_renders_the_one_placeholder_style():
    assert Postgres.sql("SELECT a FROM t WHERE b = ? AND c IN (?, ?)") == \
        "SELECT a FROM t WHERE b = %s AND c IN (%s, %s)"


def test_insert_new_stores_only_keys_not_yet_stored(store):
    dialect = store.dialect
    with store.transaction():
        assert dialect.insert_new("meta", ("key", "value"), {("a",): ("a", "1"), ("b",): ("b", "2")},
                                  ("key",)) == {("a",), ("b",)}
    with store.transaction():
        # "a" is stored already: it is neither reported nor overwritten.
        assert dialect.insert_new("meta", ("key", "value"), {("a",): ("a", "9"), ("c",): ("c", "3")},
                                  ("key",)) == {("c",)}
    assert {r["key"]: r["value"] for r in query(store, "SELECT key, value FROM meta")} == \
        {"a": "1", "b": "2", "c": "3"}


def test_bulk_upsert_adds_counts(store):
    columns = ("day", "site", "weekday", "suspect", "n1", "n2", "n3", "n4", "n5")
    upsert = ("ON CONFLICT (day, site, suspect) DO UPDATE"
              " SET n1 = roll_site_day.n1 + excluded.n1, n4 = roll_site_day.n4 + excluded.n4")
    for n in (2, 3):
        with store.transaction():
            store.dialect.bulk("roll_site_day", columns, [("2026-11-27", "s1", 5, 0, 1, 0, 0, n, 0)], upsert)
    assert query(store, "SELECT n1, n4 FROM roll_site_day") == [{"n1": 2, "n4": 5}]


def test_each_dialect_renders_its_own_types():
    sqlite_sql, = render(CreateTable("roll_day"), SQLite.types, SQLite.clustered)
    postgres_sql, = render(CreateTable("roll_day"), Postgres.types, Postgres.clustered)
    assert sqlite_sql.endswith("WITHOUT ROWID") and "hour" not in sqlite_sql
    assert 'day text COLLATE "C" NOT NULL' in postgres_sql and "weekday smallint NOT NULL" in postgres_sql
    # A NOT NULL column added to a table with rows needs its default, in both.
    added, = render(AddColumn("ratings", "suspect"), SQLite.types, SQLite.clustered)
    assert added == "ALTER TABLE ratings ADD COLUMN suspect INTEGER NOT NULL DEFAULT 0"
    assert TABLES["ratings"].column("suspect").default == "0"


def test_postgres_leaves_room_on_rollup_pages_for_updates_in_place(store):
    if store.dialect.name != "postgresql":
        assert "fillfactor" not in SQLite.clustered
        return
    # Every rollup, those m011 rebuilt included: a roll-up's updates stay HOT (no index write).
    options = dict(tuples(store, "SELECT relname, array_to_string(reloptions, ',') FROM pg_class"
                                 " WHERE relkind = 'r' AND relnamespace = current_schema()::regnamespace"))
    assert {options[name] for name, _ in ROLLUPS} == {"fillfactor=70"}
    assert options["rollup_queue"] is None and options["ratings"] is None


def test_bulk_stores_every_row_in_order_across_statements(store):
    # SQLite puts as many rows in a statement as its parameter limit allows and the
    # rest one by one: 1,001 two-column rows are two full statements and three more.
    rows = [(f"k{i:04}", str(i)) for i in range(1001)]
    with store.transaction():
        store.dialect.bulk("meta", ("key", "value"), rows)
    assert tuples(store, "SELECT key, value FROM meta ORDER BY key") == rows


def test_bulk_upserts_across_statements(store):
    # The tail applies to every statement: each row's counts are added, none twice.
    columns = ("day", "site", "weekday", "suspect", "n1", "n2", "n3", "n4", "n5")
    upsert = "ON CONFLICT (day, site, suspect) DO UPDATE SET n1 = roll_site_day.n1 + excluded.n1"
    rows = [(f"2026-11-{1 + i % 30:02}", f"s{i:03}", 1, 0, 1, 0, 0, 0, 0) for i in range(300)]
    for _ in range(2):
        with store.transaction():
            store.dialect.bulk("roll_site_day", columns, rows, upsert)
    assert query(store, "SELECT count(*) AS n, sum(n1) AS total, max(n1) AS most FROM roll_site_day") == \
        [{"n": 300, "total": 600, "most": 2}]


def _locked_elsewhere(path) -> bool:
    """Whether another open file holds the writers' lock at *path*."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_sqlite_writers_hold_the_writers_lock_for_the_whole_transaction(tmp_path):
    store = SQLiteStore.open(tmp_path / "onetap.db")
    writer = str(tmp_path / "onetap.db") + WRITER_SUFFIX
    with store.transaction():
        store.set_meta("a", "1")
        assert _locked_elsewhere(writer)
        with store.transaction():  # a nested one is a savepoint: it lets go of nothing
            store.set_meta("b", "2")
        assert _locked_elsewhere(writer)
    assert not _locked_elsewhere(writer)
    store.close()
    # In memory there is one connection and no file to lock.
    assert SQLiteStore.open(":memory:").dialect.writer_path is None


def test_a_sqlite_writer_waits_its_turn_however_long_the_other_commits(tmp_path):
    """Two writers of one file: the second waits for the first's commit, even past
    SQLite's busy timeout, and is then let in (without the writers' lock it gave
    up with "database is locked")."""
    first, second = SQLiteStore.open(tmp_path / "onetap.db"), SQLiteStore.open(tmp_path / "onetap.db")
    second.db.conn.execute("PRAGMA busy_timeout=100")
    holding, waited = threading.Event(), []

    def write_second():
        holding.wait()
        with second.transaction():
            waited.append(second.get_meta("a"))
            second.set_meta("b", "2")

    thread = threading.Thread(target=write_second)
    thread.start()
    with first.transaction():
        first.set_meta("a", "1")
        holding.set()
        # Longer than the second's busy timeout: it must still be waiting after.
        thread.join(0.5)
        assert thread.is_alive()
    thread.join(10)
    assert waited == ["1"]
    assert (first.get_meta("a"), first.get_meta("b")) == ("1", "2")
    first.close()
    second.close()


def test_the_writers_lock_has_the_databases_owner_and_mode(tmp_path):
    """Made by a command run by hand as root, the lock must still open for the service's user."""
    database = tmp_path / "onetap.db"
    SQLiteStore.open(database).close()
    os.chmod(database, 0o640)
    if os.geteuid() == 0:
        os.chown(database, 4321, 4321)  # the service's user, say
    store = SQLiteStore.open(database)
    store.set_meta("a", "1")
    made = os.stat(str(database) + WRITER_SUFFIX)
    owner = os.stat(database)
    assert (made.st_uid, made.st_gid) == (owner.st_uid, owner.st_gid)
    assert made.st_mode & 0o777 == 0o640
    store.close()
