"""The store on real SQLite files and a real PostgreSQL: idempotent inserts, local-day buckets, queries, quarantine."""

import sqlite3
import uuid
from datetime import date, datetime, timedelta, timezone

import pytest
from sqlite_utils import Database

from kiosk.protocol import Rating, Status
from server.errors import StoreError
from server.backend import open_store
from server.store import Filters, SQLiteStore, Store
from tests.backends import execute, query, tuples

KST = timezone(timedelta(hours=9))
RECEIVED = datetime(2026, 11, 27, 1, 30, tzinfo=timezone.utc)  # 10:30 in Seoul, a Friday


def rating(seq=1, score=5, at="2026-11-27T10:15:02.417+09:00", synced=True, **extra):
    return Rating(id=str(uuid.uuid4()), seq=seq, score=score, at=at, clock_synced=synced, **extra)


def day(d="2026-11-27", **kw):
    return Filters(date.fromisoformat(d), date.fromisoformat(d), **kw)


def test_is_a_store_with_wal_and_full_sync(tmp_path):
    store = SQLiteStore.open(tmp_path / "onetap.db")
    assert isinstance(store, Store)
    conn = store.db.conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    # ratings is a rowid table with a unique index on its identity (site, terminal, id)
    assert store.db["ratings"].pks == ["pk"]
    assert any(i.unique and i.columns == ["site", "terminal", "id"] for i in store.db["ratings"].indexes)
    assert not any(i.unique and i.columns == ["id"] for i in store.db["ratings"].indexes)
    store.close()


def test_postgres_is_a_store_with_a_bigint_key_and_unique_id(postgres_database):
    from server.store import PostgresStore

    url = postgres_database.new_schema()
    store = open_store(url)
    assert isinstance(store, PostgresStore) and isinstance(store, Store)
    columns = {r["column_name"]: r["data_type"] for r in query(
        store, "SELECT column_name, data_type FROM information_schema.columns"
               " WHERE table_schema = current_schema() AND table_name = 'ratings'")}
    assert columns["pk"] == "bigint" and columns["id"] == "text"
    indexes = [r["indexdef"] for r in query(
        store, "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema()"
               " AND tablename = 'ratings'")]
    assert any("UNIQUE" in d and "(site, terminal, id)" in d for d in indexes)
    assert not any("UNIQUE" in d and "(id)" in d for d in indexes)
    assert any("PRIMARY" in d or "pkey" in d for d in indexes)
    assert query(store, "SELECT current_setting('synchronous_commit') AS s")[0]["s"] in ("on", "off")
    store.close()
    postgres_database.drop_schema(url)


def test_insert_is_idempotent_by_id(store):
    batch = [rating(seq=i) for i in range(1, 4)]
    first = store.ingest_batch("s1", "t1", batch, RECEIVED)
    assert first.accepted == [r.id for r in batch] and first.duplicate == []
    extra = rating(seq=4)
    again = store.ingest_batch("s1", "t1", batch + [extra], RECEIVED)
    assert again.accepted == [extra.id]
    assert again.duplicate == [r.id for r in batch]
    assert store.counts()["ratings"] == 4


def test_ids_repeated_within_one_call_count_once(store):
    r = rating()
    result = store.ingest_batch("s1", "t1", [r, r, r], RECEIVED)
    assert result.accepted == [r.id] and result.duplicate == []
    assert store.counts()["ratings"] == 1
    # An id already stored and repeated in the call is one duplicate.
    result = store.ingest_batch("s1", "t1", [r, r], RECEIVED)
    assert result.accepted == [] and result.duplicate == [r.id]


def test_store_survives_reopen_and_migrates_once(backend):
    first = backend.open()
    first.ingest_batch("s1", "t1", [rating()], RECEIVED)
    first.close()
    second = backend.open()
    assert second.counts()["ratings"] == 1
    second.close()


def test_synced_clock_buckets_by_at_in_server_time_zone(store):
    # 23:30 UTC on the 26th is 08:30 on Friday the 27th in Seoul.
    store.ingest_batch("s1", "t1", [rating(at="2026-11-26T23:30:00Z")], RECEIVED)
    row = query(store, "SELECT day, hour, weekday FROM ratings")[0]
    assert row == {"day": "2026-11-27", "hour": 8, "weekday": 5}


def test_other_time_zone(backend):
    store = backend.open(timezone="UTC")
    store.ingest_batch("s1", "t1", [rating(at="2026-11-27T02:00:00.000+09:00")], RECEIVED)
    row = query(store, "SELECT day, hour, weekday FROM ratings")[0]
    assert row == {"day": "2026-11-26", "hour": 17, "weekday": 4}
    store.close()


def test_unsynced_clock_buckets_by_received_at_even_in_1970(store):
    lost = rating(at="1970-01-01T00:00:05.000+00:00", synced=False)
    store.ingest_batch("s1", "t1", [lost], RECEIVED)
    row = query(store, "SELECT day, hour, weekday, at FROM ratings")[0]
    assert row == {"day": "2026-11-27", "hour": 10, "weekday": 5,
                   "at": "1970-01-01T00:00:05.000+00:00"}  # the kiosk's claim is kept
    assert store.summary(day())[5] == 1
    assert store.summary(day("1970-01-01"))[5] == 0


def test_summary_and_filters(store):
    store.ingest_batch("s1", "t1", [rating(score=s) for s in (1, 2, 5, 5)], RECEIVED)
    store.ingest_batch("s1", "t2", [rating(score=4)], RECEIVED)
    store.ingest_batch("s2", "t1", [rating(score=3, at="2026-11-28T09:00:00.000+09:00")], RECEIVED)
    assert store.summary(day()) == {1: 1, 2: 1, 3: 0, 4: 1, 5: 2}
    assert store.summary(day(site="s1", terminal="t2")) == {1: 0, 2: 0, 3: 0, 4: 1, 5: 0}
    both = Filters(date(2026, 11, 27), date(2026, 11, 28))
    assert sum(store.summary(both).values()) == 6
    assert sum(store.summary(Filters(date(2026, 11, 27), date(2026, 11, 28), sites=frozenset({"s2"}))).values()) == 1
    assert sum(store.summary(Filters(date(2026, 11, 27), date(2026, 11, 28), sites=frozenset())).values()) == 0


def test_aggregates_by_two_keys(store):
    store.ingest_batch("s1", "t1", [
        rating(score=5, reason=None, lang="ko"),
        rating(score=1, reason="wait_time", lang="ko"),
        rating(score=2, reason="wait_time", lang="en"),
        rating(score=2, reason="wait_time", lang="en", at="2026-11-27T14:00:00.000+09:00"),
    ], RECEIVED)
    rows = dict(store.aggregates(["reason", "lang"], day()))
    assert rows == {
        (None, "ko"): {1: 0, 2: 0, 3: 0, 4: 0, 5: 1},
        ("wait_time", "en"): {1: 0, 2: 2, 3: 0, 4: 0, 5: 0},
        ("wait_time", "ko"): {1: 1, 2: 0, 3: 0, 4: 0, 5: 0},
    }
    hours = dict(store.aggregates(["hour"], day()))
    assert hours == {(10,): {1: 1, 2: 1, 3: 0, 4: 0, 5: 1}, (14,): {1: 0, 2: 1, 3: 0, 4: 0, 5: 0}}
    with pytest.raises(StoreError):
        store.aggregates(["score; DROP TABLE ratings"], day())


def test_iter_ratings_streams_every_column(store):
    r = rating(reason="other", age_group="30s", lang="en", input="button")
    store.ingest_batch("s1", "t1", [r], RECEIVED)
    rows = list(store.iter_ratings(day()))
    assert rows == [{**r.to_dict(), "site": "s1", "terminal": "t1",
                     "received_at": "2026-11-27T01:30:00.000+00:00", "local_day": r.at[:10]}]


def test_quarantine_keeps_raw_bytes(store):
    raw = b"\xff\x00not json"
    store.quarantine(received_at=RECEIVED, topic="onetap/v1/s1/t1/ratings", payload=raw,
                     reason="bad batch", rating_id=None)
    assert store.quarantine_count() == 1
    row = store.quarantined()[0]
    assert row["payload"] == raw and row["reason"] == "bad batch"
    assert row["topic"] == "onetap/v1/s1/t1/ratings"


def test_status_and_last_will(store):
    online = Status("online", {"at": "2026-11-27T10:00:00.000+09:00", "backlog": 7, "seq": 42,
                               "version": "0.1.0", "clock_synced": True})
    store.update_status("s1", "t1", online, RECEIVED)
    store.seen("s1", "t2", RECEIVED)  # ratings but no status yet
    terminals = store.terminals()
    assert [(t["terminal"], t["state"]) for t in terminals] == [("t1", "online"), ("t2", "unknown")]
    assert terminals[0]["backlog"] == 7 and terminals[0]["version"] == "0.1.0"
    later = RECEIVED + timedelta(minutes=5)
    store.update_status("s1", "t1", Status("offline"), later)
    t1 = store.terminals(site="s1")[0]
    assert t1["state"] == "offline"
    assert t1["backlog"] == 7  # last known fields are kept
    assert store.counts()["terminals_offline"] == 1
    assert store.terminals(sites=frozenset({"other"})) == []


def test_the_terminals_a_commit_saw_are_one_statement_and_each_as_if_seen_in_turn(store):
    online = Status("online", {"at": "2026-11-27T10:00:00.000+09:00", "backlog": 0, "seq": 1,
                               "version": "0.1.0", "clock_synced": True})
    store.update_status("s1", "known", online, RECEIVED)
    later, latest = RECEIVED + timedelta(seconds=1), RECEIVED + timedelta(seconds=2)
    with store.transaction():
        store.seen("s1", "known", later)
        store.seen("s1", "new", later)
        # Seen twice in one commit: PostgreSQL refuses one statement touching a row twice.
        store.seen("s1", "new", latest)
        store.seen("s2", "other", latest)
    seen = {(t["site"], t["terminal"]): t for t in store.terminals()}
    assert {key: (t["state"], t["last_seen"]) for key, t in seen.items()} == {
        ("s1", "known"): ("online", "2026-11-27T01:30:01.000+00:00"),
        ("s1", "new"): ("unknown", "2026-11-27T01:30:02.000+00:00"),
        ("s2", "other"): ("unknown", "2026-11-27T01:30:02.000+00:00")}
    rows = {(site, terminal): updated for site, terminal, updated in
            tuples(store, "SELECT site, terminal, updated_at FROM terminals")}
    # Added when first seen; a known terminal's row keeps its time of change.
    assert rows == {("s1", "known"): "2026-11-27T01:30:00.000+00:00",
                    ("s1", "new"): "2026-11-27T01:30:01.000+00:00",
                    ("s2", "other"): "2026-11-27T01:30:02.000+00:00"}


def test_transaction_rolls_back_everything(store):
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.ingest_batch("s1", "t1", [rating()], RECEIVED)
            store.quarantine(received_at=RECEIVED, topic="x", payload=b"x", reason="r")
            raise RuntimeError("boom")
    assert store.counts()["ratings"] == 0 and store.quarantine_count() == 0


def test_database_errors_become_store_errors(store):
    execute(store, "DROP TABLE quarantine")
    with pytest.raises(StoreError):
        store.quarantine(received_at=RECEIVED, topic="x", payload=b"x", reason="r")
    assert store.ping() is True  # ratings still readable
    with pytest.raises(StoreError):
        store.quarantine_count()
    execute(store, "DROP TABLE ratings CASCADE" if not isinstance(store, SQLiteStore) else "DROP TABLE ratings")
    with pytest.raises(StoreError):
        store.summary(day())
    assert store.ping() is False


def test_sqlite_store_errors_on_a_raw_connection(tmp_path):
    store = SQLiteStore(Database(sqlite3.connect(tmp_path / "x.db")))
    store.db.conn.execute("DROP TABLE quarantine")
    with pytest.raises(StoreError):
        store.quarantine(received_at=RECEIVED, topic="x", payload=b"x", reason="r")


def test_open_in_missing_directory_is_a_store_error(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        SQLiteStore.open(tmp_path / "nope" / "x.db")


def test_unreachable_postgres_is_a_store_error():
    # Port 1 on localhost: nothing listens there.
    with pytest.raises(StoreError, match="cannot connect"):
        open_store("postgresql://postgres:secret@127.0.0.1:1/onetap")
    with pytest.raises(StoreError) as info:
        open_store("postgresql://postgres:secret@127.0.0.1:1/onetap")
    assert "secret" not in str(info.value)


def test_postgres_reconnects_after_losing_its_connection(postgres_database):
    import psycopg

    url = postgres_database.new_schema()
    store = open_store(url)
    store.ingest_batch("s1", "t1", [rating(seq=1)], RECEIVED)
    pid = store.conn.info.backend_pid
    with psycopg.connect(postgres_database.url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    # The first use after the loss may fail (a kiosk resends); the next one works.
    try:
        store.ingest_batch("s1", "t1", [rating(seq=2)], RECEIVED)
    except StoreError:
        store.ingest_batch("s1", "t1", [rating(seq=2)], RECEIVED)
    assert store.counts()["ratings"] == 2
    store.close()
    postgres_database.drop_schema(url)


def test_concurrent_stores_store_each_id_once(backend):
    """Two writers (two ingest workers) racing on the same ids: one stores, the other sees duplicates."""
    import threading

    stores = [backend.open(), backend.open()]
    batches = [[rating(seq=i) for i in range(n, n + 50)] for n in range(1, 1001, 50)]
    results = [[], []]

    def work(k):
        for b in (batches if k == 0 else batches[::-1]):
            while True:
                try:
                    results[k].append(stores[k].ingest_batch("s1", "t1", b, RECEIVED))
                    break
                except StoreError:  # deadlock or busy: a worker retries, as the Link does
                    continue

    threads = [threading.Thread(target=work, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    accepted = [i for r in results[0] + results[1] for i in r.accepted]
    assert len(accepted) == len(set(accepted)) == 1000
    duplicates = [i for r in results[0] + results[1] for i in r.duplicate]
    assert sorted(duplicates) == sorted(r.id for b in batches for r in b)
    assert stores[0].counts()["ratings"] == 1000
    assert sum(stores[1].summary(day()).values()) == 1000
    for s in stores:
        s.close()


def test_prune_ratings_keeps_the_rollups(store):
    old = [rating(seq=i, score=1 + i % 5, at="2026-10-01T10:00:00.000+09:00") for i in range(1, 26)]
    new = [rating(seq=100 + i, at="2026-11-27T10:00:00.000+09:00") for i in range(1, 4)]
    store.ingest_batch("s1", "t1", old + new, RECEIVED)
    october = Filters(date(2026, 10, 1), date(2026, 10, 31))
    before = store.summary(october)
    assert store.prune_ratings("2026-11-01", RECEIVED - timedelta(days=1)) == 0  # received too recently
    assert store.prune_ratings("2026-11-01", batch=10) == 25
    assert store.prune_ratings("2026-11-01") == 0  # again: nothing left to do
    assert store.counts()["ratings"] == 3
    assert store.summary(october) == before and sum(before.values()) == 25
    assert list(store.iter_ratings(october)) == []


def test_last_taps_are_the_newest_stored_rating_of_each_terminal(store):
    """The terminals board's "last tap": from what ingest stored, the kiosk's time if its clock was
    synchronised, else when the server received it; two sites' counter-01 stay apart."""
    received = datetime(2026, 11, 27, 3, 0, tzinfo=timezone.utc)
    store.ingest_batch("s1", "counter-01", [rating(seq=1, at="2026-11-27T10:00:00.000+09:00"),
                                            rating(seq=2, at="2026-11-27T11:30:00.000+09:00")], received)
    store.ingest_batch("s2", "counter-01", [rating(seq=7, at="2019-01-01T00:00:00.000+09:00", synced=False)],
                       received)
    taps = store.last_taps()
    assert datetime.fromisoformat(taps["s1", "counter-01"]) == datetime(2026, 11, 27, 2, 30, tzinfo=timezone.utc)
    # An unsynchronised clock: received time, not the kiosk's 2019.
    assert datetime.fromisoformat(taps["s2", "counter-01"].replace("Z", "+00:00")) == received
    assert set(store.last_taps(frozenset({"s2"}))) == {("s2", "counter-01")}


def test_a_last_tap_outside_the_contracts_bounds_reads_as_its_receipt(store):
    received = datetime(2026, 11, 27, 3, 0, tzinfo=timezone.utc)
    store.ingest_batch("s1", "t1", [rating(seq=1, at="2031-01-01T00:00:00.000+09:00")], received)
    store.ingest_batch("s1", "t2", [rating(seq=1, at="2019-06-01T00:00:00.000+09:00")], received)
    taps = store.last_taps()
    for terminal in ("t1", "t2"):
        assert datetime.fromisoformat(taps["s1", terminal].replace("Z", "+00:00")) == received


def test_chain_states_saved_with_the_rows_read_are_what_was_saved(store):
    # Ingest hands save_chain_states the rows it read (on SQLite only the moving columns
    # are then written): every column must still land, whichever way each row goes.
    from server import audit

    now = datetime(2026, 11, 27, 3, 0, tzinfo=timezone.utc)
    with store.transaction():
        store.save_chain_states([audit.new_state(site, terminal, now)
                                 for site, terminal in (("s1", "t1"), ("s1", "t2"), ("s2", "t1"))])
    later = "2026-11-27T03:05:00.000+00:00"
    with store.transaction():
        read = store.chain_states_for_update([("s2", "t1"), ("s1", "t2"), ("s1", "t1"), ("s1", "t3"), ("s1", "t2")])
        assert sorted(read) == [("s1", "t1"), ("s1", "t2"), ("s2", "t1")]  # t3 has none yet
        moving = dict(read["s1", "t1"], max_seq=5, contiguous_seq=5, tip_seq=5, tip_chain="ab" * 32,
                      head_seq=5, head_chain="ab" * 32, head_sig="A" * 86 + "==", head_at=later, updated_at=later)
        gap = dict(read["s1", "t2"], max_seq=9, contiguous_seq=2, missing='[[3,8,"x"]]', missing_since=later,
                   status=audit.BROKEN, broken_seq=9, checkpoint_seq=1, updated_at=later)
        other_site = dict(read["s2", "t1"], max_seq=1, contiguous_seq=1, updated_at=later)
        new = dict(audit.new_state("s1", "t3", now), max_seq=2)
        store.save_chain_states([moving, gap, new, other_site], read)
    saved = {(s["site"], s["terminal"]): s for s in store.chain_states()}
    assert saved == {("s1", "t1"): moving, ("s1", "t2"): gap, ("s1", "t3"): new, ("s2", "t1"): other_site}


def test_one_minute_bucketed_apart_by_clock_sync_in_one_batch(store):
    # The plan works each minute out once: a synced and an unsynced rating of
    # the same minute still take different buckets (the claim, the receipt).
    synced = rating(seq=1, at="2026-11-27T08:30:01.000+09:00")
    unsynced = rating(seq=2, at="2026-11-27T08:30:59.000+09:00", synced=False)
    store.ingest_batch("s1", "t1", [synced, unsynced, rating(seq=3, at="2026-11-27T08:30:30.000+09:00")], RECEIVED)
    rows = {r["seq"]: (r["hour"], r["clock_suspect"]) for r in
            query(store, "SELECT seq, hour, clock_suspect FROM ratings")}
    assert rows == {1: (8, 0), 2: (10, 0), 3: (8, 0)}
    assert store.summary(day())[5] == 3


def test_a_rating_that_cannot_be_bucketed_is_still_counted_by_its_receipt(store, monkeypatch, caplog):
    bucket = store.buckets.rating

    def failing(r, received, received_at):
        if r.at.startswith("2026-11-27T08:31"):
            raise OverflowError("date value out of range")
        return bucket(r, received, received_at)

    monkeypatch.setattr(store.buckets, "rating", failing)
    doomed = [rating(seq=1, at="2026-11-27T08:31:00.000+09:00"), rating(seq=2, at="2026-11-27T08:31:40.000+09:00")]
    result = store.ingest_batch("s1", "t1", [*doomed, rating(seq=3, at="2026-11-27T08:30:00.000+09:00")], RECEIVED)
    assert len(result.accepted) == 3 and not result.duplicate
    rows = {r["seq"]: (r["day"], r["hour"], r["clock_suspect"]) for r in
            query(store, "SELECT seq, day, hour, clock_suspect FROM ratings")}
    assert rows == {1: ("2026-11-27", 10, 1), 2: ("2026-11-27", 10, 1), 3: ("2026-11-27", 8, 0)}
    assert store.summary(day())[5] == 3
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [
        f"cannot bucket rating {doomed[0].id} at '2026-11-27T08:31:00.000+09:00'"]  # once for the minute
