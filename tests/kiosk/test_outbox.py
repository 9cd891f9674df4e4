"""The outbox on real SQLite files: seq, holds, batches, Acks, pruning, a full disk."""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import sqlite_utils
from sqlite_utils.migrations import Migrations

from kiosk import protocol
from kiosk.errors import OutboxError, OutboxFullError
from kiosk.outbox import MIGRATION_SET, MIGRATIONS, Outbox, time_ordered_id
from kiosk.protocol import Ack

KST = timezone(timedelta(hours=9))
NOW = datetime(2026, 11, 27, 10, 15, 2, 417000, tzinfo=KST)


@pytest.fixture
def outbox() -> Outbox:
    return Outbox(sqlite3.connect(":memory:"))


def record(outbox: Outbox, n: int, **kw):
    kw.setdefault("clock_synced", True)
    return [outbox.record(4, **kw) for _ in range(n)]


def test_record_returns_the_committed_rating(outbox):
    rating = outbox.record(5, lang="en", input="button", now=NOW, clock_synced=False)
    assert rating.seq == 1 and rating.score == 5
    assert rating.at == "2026-11-27T10:15:02.417+09:00"
    assert rating.clock_synced is False and rating.lang == "en" and rating.input == "button"
    [(rowid, rid, payload)] = outbox.pending()
    assert rid == rating.id
    assert payload == rating.encode()
    assert protocol.Rating.from_dict(json.loads(payload)) == rating


def test_a_rating_id_is_a_version_7_uuid_that_sorts_by_the_tap_time(outbox):
    taps = [outbox.record(4, now=NOW + timedelta(milliseconds=ms), clock_synced=True)
            for ms in (0, 1, 2, 1000, 86_400_000, 3)]
    ids = [uuid.UUID(t.id) for t in taps]
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    # The first 48 bits are the tap's Unix milliseconds, so ids sort as the taps' times do.
    assert [i.int >> 80 for i in ids] == [int(NOW.timestamp() * 1000) + ms for ms in (0, 1, 2, 1000, 86_400_000, 3)]
    assert sorted(t.id for t in taps) == [taps[i].id for i in (0, 1, 2, 5, 3, 4)]
    # Two taps in one millisecond still differ (74 random bits).
    assert len({outbox.record(4, now=NOW).id for _ in range(200)}) == 200


def test_time_ordered_id_places_every_bit():
    assert time_ordered_id(0, bytes(10)) == "00000000-0000-7000-8000-000000000000"
    assert time_ordered_id(0x0123456789AB, b"\xff" * 10) == "01234567-89ab-7fff-bfff-ffffffffffff"
    # Before 1970 or past the 48 bits (a kiosk's clock gone wrong): held at the ends, never malformed.
    assert time_ordered_id(-5, bytes(10)).startswith("00000000-0000-7")
    assert time_ordered_id(1 << 60, bytes(10)).startswith("ffffffff-ffff-7")
    with pytest.raises(ValueError):
        time_ordered_id(0, bytes(9))


def test_record_rejects_bad_input_and_uses_no_seq(outbox):
    with pytest.raises(protocol.ProtocolError):
        outbox.record(6, clock_synced=True)
    with pytest.raises(protocol.ProtocolError):
        outbox.record(3, input="voice", clock_synced=True)
    assert outbox.record(3, clock_synced=True).seq == 1


def test_file_settings(tmp_path):
    outbox = Outbox.open(tmp_path / "sub" / "o.db")
    conn = outbox.conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] > 0
    plan = " ".join(str(r) for r in conn.execute(
        "EXPLAIN QUERY PLAN SELECT rowid, id, payload FROM ratings "
        "WHERE acked_at IS NULL AND held = 0 AND rowid > 0 ORDER BY rowid LIMIT 500"))
    assert "ratings_unacked" in plan


def sqlite_utils_migrations() -> Migrations:
    """The outbox's migrations as sqlite-utils ran them before the outbox was on the standard library."""
    migrations = Migrations(MIGRATION_SET)
    for migration in MIGRATIONS:
        migrations()(migration)
    return migrations


@pytest.mark.parametrize("stop_before", [None, "m002_chain"])
def test_a_file_migrated_by_sqlite_utils_opens_and_migrates_on(tmp_path, stop_before):
    path = tmp_path / "o.db"
    db = sqlite_utils.Database(path)
    sqlite_utils_migrations().apply(db, stop_before=stop_before)
    db.execute("UPDATE meta SET value = 41 WHERE key = 'last_seq'")
    db.conn.commit()
    db.close()
    outbox = Outbox.open(path, chain_seed=SEED)
    rating = outbox.record(3, now=NOW, clock_synced=True)
    assert rating.seq == 42 and rating.chain == protocol.chain_next(SEED, rating)
    names = [r[0] for r in outbox.conn.execute(
        "SELECT name FROM _sqlite_migrations WHERE migration_set = ? ORDER BY id", (MIGRATION_SET,))]
    assert names == ["m001_ratings", "m002_chain"]
    outbox.close()
    # And sqlite-utils finds nothing left to do in a file the outbox migrated.
    assert sqlite_utils_migrations().pending(sqlite_utils.Database(path)) == []


def test_a_new_file_is_migrated_once_by_two_outboxes_opening_it_together(tmp_path):
    # The UI's and the uplink's outboxes open the file on two threads at start.
    for attempt in range(10):
        path = tmp_path / f"o{attempt}.db"
        barrier = threading.Barrier(2)
        opened: list = []

        def open_it():
            barrier.wait()
            opened.append(Outbox.open(path))

        threads = [threading.Thread(target=open_it) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(opened) == 2
        with sqlite3.connect(path) as conn:
            assert conn.execute("SELECT count(*) FROM _sqlite_migrations").fetchone()[0] == len(MIGRATIONS)


def test_seq_never_reused_after_prune_and_reopen(tmp_path):
    path = tmp_path / "o.db"
    outbox = Outbox.open(path, retention_days=0)
    ratings = record(outbox, 5)
    outbox.mark_acked(Ack(accepted=tuple(r.id for r in ratings)))
    assert outbox.prune(datetime.now(timezone.utc) + timedelta(seconds=1)) == 5
    assert outbox.conn.execute("SELECT count(*) FROM ratings").fetchone()[0] == 0
    assert outbox.record(1, clock_synced=True).seq == 6
    outbox.close()
    again = Outbox.open(path)
    assert again.stats().last_seq == 6
    assert again.record(2, clock_synced=True).seq == 7


def test_hold_annotate_release(outbox):
    held = outbox.record(1, hold=True, clock_synced=True)
    other = outbox.record(5, clock_synced=True)
    assert [r[1] for r in outbox.pending()] == [other.id]
    assert outbox.stats().backlog == 2 and outbox.stats().held == 1
    updated = outbox.annotate(held.id, reason="wait_time", age_group="30s")
    assert (updated.reason, updated.age_group, updated.seq) == ("wait_time", "30s", 1)
    assert outbox.annotate(held.id, age_group="40s").reason == "wait_time"
    with pytest.raises(protocol.ProtocolError):
        outbox.annotate(held.id, age_group="teen")
    with pytest.raises(ValueError, match="score: not a follow-up answer field"):
        outbox.annotate(held.id, score=5)  # what the tap recorded never changes
    outbox.release(held.id)
    rows = outbox.pending()
    assert [r[1] for r in rows] == [held.id, other.id]
    sent = json.loads(rows[0][2])
    assert sent["reason"] == "wait_time" and sent["age_group"] == "40s"
    with pytest.raises(OutboxError, match="no longer held"):
        outbox.annotate(held.id, reason="other")
    with pytest.raises(OutboxError, match="no rating"):
        outbox.annotate("00000000-0000-4000-8000-000000000000", reason="other")


def test_release_all_held_after_a_crash(tmp_path):
    path = tmp_path / "o.db"
    outbox = Outbox.open(path)
    outbox.record(2, hold=True, clock_synced=True)
    outbox.record(1, hold=True, clock_synced=True)
    outbox.conn.close()  # as if the process died mid-follow-up
    restarted = Outbox.open(path)
    assert restarted.pending() == []
    assert restarted.release_all_held() == 2
    assert len(restarted.pending()) == 2
    assert restarted.release_all_held() == 0


def test_pending_limits_by_count_bytes_and_cursor(outbox):
    ratings = record(outbox, 1203)
    first = outbox.pending()
    assert len(first) == protocol.MAX_BATCH_RATINGS
    assert [r[1] for r in first] == [r.id for r in ratings[:500]]
    assert len(outbox.pending(limit=10)) == 10
    nxt = outbox.pending(after_rowid=first[-1][0])
    assert nxt[0][1] == ratings[500].id
    size = len(ratings[0].encode())
    # Three payloads and two commas fit exactly; one byte less does not.
    assert len(outbox.pending(max_bytes=3 * size + 2)) == 3
    assert len(outbox.pending(max_bytes=3 * size + 1)) == 2
    # A single rating is always returned, or nothing would ever be sent.
    assert len(outbox.pending(max_bytes=1)) == 1
    # And the batch really fits the protocol's limit.
    payload = protocol.encode_batch("s" * 63, "t" * 63, [r[2] for r in first])
    assert len(payload) <= protocol.MAX_BATCH_BYTES


def test_pending_respects_the_byte_limit_with_large_ratings(outbox):
    # Unicode reasons are not possible, so make big rows directly: the limit
    # must hold whatever the rows hold.
    record(outbox, 600)
    outbox.conn.execute("UPDATE ratings SET payload = payload || ?", (" " * 1000,))
    outbox.conn.commit()
    rows = outbox.pending()
    assert sum(len(r[2]) + 1 for r in rows) - 1 <= outbox.pending.__defaults__[1]
    assert len(rows) < 500


def test_mark_acked_by_rowid_and_by_id(outbox):
    ratings = record(outbox, 4)
    rows = outbox.pending()
    rowids = {rid: rowid for rowid, rid, _ in rows}
    ack = Ack(accepted=(ratings[0].id,), duplicate=(ratings[1].id,),
              rejected=((ratings[2].id, "score: bad"),))
    assert outbox.mark_acked(ack, {ratings[0].id: rowids[ratings[0].id]}) == 3
    assert outbox.mark_acked(ack) == 0  # already acked: not counted again
    outcomes = dict(outbox.conn.execute("SELECT id, ack_outcome FROM ratings").fetchall())
    assert outcomes[ratings[0].id] == "accepted"
    assert outcomes[ratings[1].id] == "duplicate"
    assert outcomes[ratings[2].id] == "rejected"
    assert outcomes[ratings[3].id] is None
    error = outbox.conn.execute(
        "SELECT ack_error FROM ratings WHERE id = ?", (ratings[2].id,)).fetchone()[0]
    assert error == "score: bad"
    # Rejected ratings are kept but never resent.
    assert [r[1] for r in outbox.pending()] == [ratings[3].id]
    stats = outbox.stats()
    assert stats.backlog == 1 and stats.last_ack_at is not None
    assert stats.oldest_pending_at == ratings[3].at
    assert stats.last_tap_at == ratings[3].at and stats.last_seq == 4


def test_mark_acked_with_a_stale_rowid_does_not_ack_another_row(outbox):
    a, b = record(outbox, 2)
    rowid_b = outbox.pending()[1][0]
    assert outbox.mark_acked(Ack(accepted=(a.id,)), {a.id: rowid_b}) == 0
    assert outbox.stats().backlog == 2


def test_an_ack_of_many_sent_ratings_marks_each_once_across_statements(outbox):
    # 1,000 by rowid: marked 400 to a statement; one id's rowid is stale (another
    # row's), so that rating stays pending and the other row is not touched.
    ratings = record(outbox, 1001)
    rowids = dict((rid, rowid) for rowid, rid in outbox.conn.execute("SELECT rowid, id FROM ratings"))
    named = ratings[:1000]
    mapping = {r.id: rowids[r.id] for r in named}
    mapping[named[10].id] = rowids[ratings[1000].id]
    assert outbox.mark_acked(Ack(accepted=tuple(r.id for r in named[:600]),
                                 duplicate=tuple(r.id for r in named[600:])), mapping) == 999
    assert [r[1] for r in outbox.pending()] == [named[10].id, ratings[1000].id]
    outcomes = dict(outbox.conn.execute("SELECT ack_outcome, count(*) FROM ratings GROUP BY ack_outcome"))
    assert outcomes == {None: 2, "accepted": 599, "duplicate": 400}


def test_unknown_ids_in_an_ack_are_harmless(outbox):
    record(outbox, 1)
    assert outbox.mark_acked(Ack(accepted=("00000000-0000-4000-8000-000000000000",))) == 0
    assert outbox.stats().backlog == 1


def test_prune_keeps_unacked_and_recent(outbox):
    ratings = record(outbox, 6)
    outbox.mark_acked(Ack(accepted=tuple(r.id for r in ratings[:4])))
    now = datetime.now(timezone.utc)
    assert outbox.prune(now + timedelta(days=29)) == 0
    assert outbox.prune(now + timedelta(days=31)) == 4
    assert outbox.stats().backlog == 2
    assert [r[1] for r in outbox.pending()] == [r.id for r in ratings[4:]]


def test_prune_in_batches(outbox, monkeypatch):
    import kiosk.outbox as module
    monkeypatch.setattr(module, "PRUNE_BATCH", 7)
    ratings = record(outbox, 30)
    outbox.mark_acked(Ack(accepted=tuple(r.id for r in ratings)))
    assert outbox.prune(datetime.now(timezone.utc) + timedelta(days=31)) == 30


def test_full_disk_rolls_back_and_recovers(tmp_path):
    path = tmp_path / "o.db"
    outbox = Outbox.open(path)
    kept = record(outbox, 20)
    pages = outbox.conn.execute("PRAGMA page_count").fetchone()[0]
    outbox.conn.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(OutboxFullError):
        for _ in range(10_000):
            outbox.record(3, clock_synced=True)
    stats = outbox.stats()
    assert stats.error is not None and "full" in stats.error
    full_seq = stats.last_seq
    # What was recorded before is intact; the failed tap left no trace.
    assert outbox.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    ids = {r[0] for r in outbox.conn.execute("SELECT id FROM ratings")}
    assert {r.id for r in kept} <= ids
    assert len(ids) == full_seq
    assert not outbox.conn.in_transaction
    # A second Outbox (another thread's) still reads everything.
    other = Outbox.open(path)
    assert other.stats().last_seq == full_seq
    # ... and reports the error too (the uplink's status comes from its own Outbox).
    assert other.stats().error == stats.error
    outbox.conn.execute("PRAGMA max_page_count = 1073741823")
    after = outbox.record(5, clock_synced=True)
    assert after.seq == full_seq + 1
    assert outbox.stats().error is None and other.stats().error is None


def test_full_disk_is_an_os_error_too():
    assert issubclass(OutboxFullError, OSError) and issubclass(OutboxFullError, OutboxError)


def test_other_sqlite_errors_become_outbox_errors(tmp_path):
    outbox = Outbox.open(tmp_path / "o.db")
    blocker = sqlite3.connect(tmp_path / "o.db", timeout=0)
    blocker.execute("BEGIN IMMEDIATE")
    outbox.conn.execute("PRAGMA busy_timeout = 0")
    with pytest.raises(OutboxError, match="locked"):
        outbox.record(3, clock_synced=True)
    blocker.rollback()
    assert outbox.record(3, clock_synced=True).seq == 1


def test_two_outboxes_on_one_file_share_seq(tmp_path):
    path = tmp_path / "o.db"
    a, b = Outbox.open(path), Outbox.open(path)
    seqs = [x.record(4, clock_synced=True).seq for x in (a, b, a, b)]
    assert seqs == [1, 2, 3, 4]


def test_clock_state_is_read_when_not_given(outbox, monkeypatch):
    import kiosk.clock
    monkeypatch.setattr(kiosk.clock, "clock_synced", lambda: True)
    assert outbox.record(4).clock_synced is True
    monkeypatch.setattr(kiosk.clock, "clock_synced", lambda: False)
    rating = outbox.record(4)
    assert rating.clock_synced is False
    assert protocol.parse_timestamp("at", rating.at).utcoffset() is not None


# -- audit chain ------------------------------------------------------------------

SEED = protocol.default_chain_seed("s", "t")


def chained_outbox() -> Outbox:
    return Outbox(sqlite3.connect(":memory:"), chain_seed=SEED)


def test_chain_is_computed_at_release_in_seq_order_over_the_answers():
    outbox = chained_outbox()
    first = outbox.record(2, now=NOW, clock_synced=True, hold=True)
    second = outbox.record(5, now=NOW, clock_synced=True)
    # The second waits for the first: the chain runs in seq order.
    assert second.chain is None and outbox.pending() == []
    outbox.annotate(first.id, reason="wait_time")
    outbox.release(first.id)
    rows = [protocol.Rating.from_dict(json.loads(p)) for _, _, p in outbox.pending()]
    assert [r.seq for r in rows] == [1, 2]
    assert rows[0].reason == "wait_time"
    head = SEED
    for rating in rows:
        head = protocol.chain_next(head, rating)
        assert rating.chain == head
    assert outbox.chain_head() == (2, head)
    third = outbox.record(3, now=NOW, clock_synced=True)
    assert third.chain == protocol.chain_next(head, third)


def test_seed_is_kept_in_the_file_for_every_outbox_on_it(tmp_path):
    path = tmp_path / "outbox.db"
    Outbox.open(path, chain_seed=SEED).close()
    other = Outbox.open(path)
    rating = other.record(4, now=NOW, clock_synced=True)
    assert rating.chain == protocol.chain_next(SEED, rating)


def test_without_a_seed_nothing_is_chained_and_an_upgraded_file_starts_after_its_backlog(tmp_path):
    path = tmp_path / "outbox.db"
    plain = Outbox.open(path)
    old = plain.record(4, now=NOW, clock_synced=True)
    assert old.chain is None and "chain" not in plain.pending()[0][2]
    plain.close()
    upgraded = Outbox.open(path, chain_seed=SEED)
    new = upgraded.record(1, now=NOW, clock_synced=True)
    # The backlog from before goes out unchained; the first chained rating chains from the seed.
    assert [r[1] for r in upgraded.pending()] == [old.id, new.id]
    assert new.chain == protocol.chain_next(SEED, new)


def test_release_all_held_chains_what_a_crash_left_held():
    outbox = chained_outbox()
    held = outbox.record(1, now=NOW, clock_synced=True, hold=True)
    assert outbox.release_all_held() == 1
    [(_, _, payload)] = outbox.pending()
    assert json.loads(payload)["chain"] == protocol.chain_next(SEED, held)


def test_bad_seed_is_refused():
    with pytest.raises(OutboxError):
        Outbox(sqlite3.connect(":memory:"), chain_seed="nothex")
