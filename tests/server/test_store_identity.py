"""The store against hostile terminals, on SQLite and PostgreSQL: identity (site, terminal, id),
times outside the window, the migration of existing data, quarantine usage and pruning, bounded statuses."""

import json
import uuid
from datetime import date, datetime, timedelta, timezone

import pytest
from sqlite_utils import Database

from kiosk.protocol import CLOCK_SUSPECT_FIELDS, Rating, Status
from server.store import Filters, SQLiteStore
from tests.legacy_schema import migrations
from tests.backends import query

RECEIVED = datetime(2026, 11, 27, 1, 30, tzinfo=timezone.utc)  # 10:30 in Seoul
TODAY = Filters(date(2026, 11, 27), date(2026, 11, 27))


def rating(seq=1, score=5, at="2026-11-27T10:15:02.417+09:00", rating_id=None, synced=True):
    return Rating(id=rating_id or str(uuid.uuid4()), seq=seq, score=score, at=at, clock_synced=synced)


def test_one_terminal_cannot_suppress_or_claim_anothers_ratings(store):
    real = [rating(seq=i, score=5) for i in range(1, 11)]
    # Terminal A pre-sends B's ids with score 1 on its own topic.
    forged = [rating(seq=i, score=1, rating_id=r.id) for i, r in enumerate(real, 1)]
    a = store.ingest_batch("s1", "a", forged, RECEIVED)
    assert a.accepted == [r.id for r in forged]
    b = store.ingest_batch("s1", "b", real, RECEIVED)
    assert b.accepted == [r.id for r in real] and b.duplicate == []
    per_terminal = dict(store.aggregates(["terminal"], TODAY))
    assert per_terminal[("b",)][5] == 10 and per_terminal[("a",)][1] == 10
    # B's resend is B's duplicate; A's ratings stay A's.
    again = store.ingest_batch("s1", "b", real, RECEIVED)
    assert again.accepted == [] and again.duplicate == [r.id for r in real]
    assert store.counts()["ratings"] == 20


def test_same_id_from_two_terminals_in_one_call(store):
    shared = rating()
    results = store.ingest_many([("s1", "a", [shared]), ("s1", "b", [shared]), ("s2", "a", [shared]),
                                 ("s1", "a", [shared])], RECEIVED)
    assert [r.accepted for r in results] == [[shared.id], [shared.id], [shared.id], []]
    assert results[3].duplicate == [shared.id]


@pytest.mark.parametrize("at", ["9999-12-31T23:59:59Z", "0001-01-01T00:00:00+14:00",
                                "2019-06-01T10:00:00+09:00", "2099-01-01T00:00:00+09:00"])
def test_a_time_outside_the_window_is_counted_by_receipt_and_flagged(store, at):
    far = rating(at=at)
    normal = rating(seq=2)
    result = store.ingest_batch("s1", "t1", [far, normal], RECEIVED)
    assert sorted(result.accepted) == sorted([far.id, normal.id])
    assert sum(store.summary(TODAY).values()) == 2  # both on the day they arrived
    rows = {r["id"]: r for r in query(store, "SELECT id, day, hour, clock_suspect, at FROM ratings")}
    assert rows[far.id]["day"] == "2026-11-27" and rows[far.id]["hour"] == 10
    assert rows[far.id]["clock_suspect"] == 1 and rows[far.id]["at"] == at  # the claim is kept
    assert rows[normal.id]["clock_suspect"] == 0
    # A day ahead of the receipt is still the kiosk's claim (a clock a little fast).
    ahead = rating(seq=3, at="2026-11-28T09:00:00+09:00")
    store.ingest_batch("s1", "t1", [ahead], RECEIVED)
    row = query(store, "SELECT day, clock_suspect FROM ratings WHERE seq = 3")[0]
    assert row == {"day": "2026-11-28", "clock_suspect": 0}


def test_quarantine_usage_is_per_terminal_and_day_and_pruned(store):
    for terminal, size in (("t1", 100), ("t1", 50), ("t2", 7)):
        store.quarantine(received_at=RECEIVED, topic=f"onetap/v1/s1/{terminal}/ratings",
                         payload=b"x" * size, reason="bad", site="s1", terminal=terminal)
    store.quarantine(received_at=RECEIVED - timedelta(days=2), topic="onetap/v1/s1/t1/ratings",
                     payload=b"old", reason="bad", site="s1", terminal="t1")
    midnight = RECEIVED.replace(hour=0, minute=0)
    assert store.quarantine_usage("s1", "t1", midnight) == (2, 150)
    assert store.quarantine_usage("s1", "t2", midnight) == (1, 7)
    assert store.quarantine_usage("s2", "t1", midnight) == (0, 0)
    assert store.prune_quarantine(RECEIVED - timedelta(days=1)) == 1
    assert store.quarantine_count() == 3
    assert store.prune_quarantine(RECEIVED + timedelta(seconds=1)) == 3
    assert store.quarantine_count() == 0


def test_stored_statuses_are_bounded_when_read(store):
    # As a status stored before the boundary existed: times far out, a lone surrogate.
    status = Status("online", {"at": "2026-11-27T10:00:00+09:00", "backlog": 3, "seq": 9,
                               "oldest_pending_at": "0001-01-01T00:00:00+14:00",
                               "version": "\ud800"})
    store.update_status("s1", "t1", status, RECEIVED)
    (row,) = store.terminals()
    assert row["oldest_pending_at"] is None and row[CLOCK_SUSPECT_FIELDS] == ["oldest_pending_at"]
    assert "version" not in row and row["backlog"] == 3
    json.dumps(row, ensure_ascii=False).encode("utf-8")


def test_sqlite_migration_keeps_existing_data(tmp_path):
    path = tmp_path / "old.db"
    db = Database(path)
    migrations.apply(db, stop_before="m003_rating_identity_site_terminal_id")
    db.execute("INSERT INTO ratings (id, site, terminal, seq, score, at, clock_synced, lang, input,"
               " received_at, day, hour, weekday) VALUES ('11111111-1111-4111-8111-111111111111', 's1',"
               " 't1', 1, 4, '2026-11-27T10:00:00+09:00', 1, 'ko', 'touch', '2026-11-27T01:00:00.000+00:00',"
               " '2026-11-27', 10, 5)")
    db.execute("INSERT INTO quarantine (received_at, topic, payload, reason)"
               " VALUES ('2026-11-27T01:00:00.000+00:00', 'onetap/v1/s1/t9/status', x'00', 'bad')")
    db.conn.commit()
    db.conn.close()
    store = SQLiteStore.open(path)
    try:
        row = query(store, "SELECT clock_suspect, suspect FROM ratings")[0]
        assert row == {"clock_suspect": 0, "suspect": 0}
        old = rating(rating_id="11111111-1111-4111-8111-111111111111")
        assert store.ingest_batch("s1", "t1", [old], RECEIVED).duplicate == [old.id]
        assert store.ingest_batch("s1", "t2", [old], RECEIVED).accepted == [old.id]
        assert store.quarantine_usage("s1", "t9", RECEIVED - timedelta(days=1)) == (1, 1)
    finally:
        store.close()


def test_postgres_migration_keeps_existing_data(postgres_database):
    import psycopg

    from server.store import PostgresStore
    from tests.legacy_schema import MIGRATIONS

    url = postgres_database.new_schema()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE onetap_migrations (name text PRIMARY KEY,"
                         " applied_at timestamptz NOT NULL DEFAULT now())")
            for name, statements in MIGRATIONS[:1]:
                for sql in statements:
                    conn.execute(sql)
                conn.execute("INSERT INTO onetap_migrations (name) VALUES (%s)", [name])
            conn.execute(
                "INSERT INTO ratings (id, site, terminal, seq, score, at, clock_synced, lang, input,"
                " received_at, day, hour, weekday) VALUES ('11111111-1111-4111-8111-111111111111',"
                " 's1', 't1', 1, 4, '2026-11-27T10:00:00+09:00', 1, 'ko', 'touch',"
                " '2026-11-27T01:00:00.000+00:00', '2026-11-27', 10, 5)")
            conn.execute("INSERT INTO quarantine (received_at, topic, payload, reason)"
                         " VALUES ('2026-11-27T01:00:00.000+00:00', 'onetap/v1/s1/t9/status', '\\x00', 'bad')")
        store = PostgresStore.open(url)
        try:
            names = [r["name"] for r in query(store, "SELECT name FROM onetap_migrations ORDER BY name")]
            assert {"m003_rating_identity_site_terminal_id", "m004_ratings_clock_suspect",
                    "m005_quarantine_by_terminal"} <= set(names)
            old = rating(rating_id="11111111-1111-4111-8111-111111111111")
            assert store.ingest_batch("s1", "t1", [old], RECEIVED).duplicate == [old.id]
            assert store.ingest_batch("s1", "t2", [old], RECEIVED).accepted == [old.id]
            assert store.quarantine_usage("s1", "t9", RECEIVED - timedelta(days=1)) == (1, 1)
        finally:
            store.close()
    finally:
        postgres_database.drop_schema(url)
