"""Retention: old raw ratings deleted in batches, daily counts unchanged, kept at least N days after arrival."""

from __future__ import annotations

import csv
import io
import time
import uuid
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient

from kiosk.protocol import Rating
from server.aggregate import AGGREGATE_KEYS
from server.api import create_app
from server.config import ServerConfig
from server.retention import RetentionRunner, cutoff
from server.store import Filters, SQLiteStore

SEOUL = ZoneInfo("Asia/Seoul")
NOW = datetime(2026, 11, 27, 3, 0, tzinfo=timezone.utc)  # noon in Seoul
TOKEN = "retention-token"


def rating(day: date, seq: int, **extra) -> Rating:
    fields = {"score": 1 + seq % 5, "reason": "wait_time" if seq % 3 == 0 else None,
              "age_group": "30s" if seq % 4 == 0 else None, "lang": "en" if seq % 2 else "ko",
              "input": "button" if seq % 5 == 0 else "touch"} | extra
    return Rating(id=str(uuid.uuid4()), seq=seq, at=f"{day.isoformat()}T{9 + seq % 8:02d}:15:02.417+09:00",
                  clock_synced=True, **fields)


@pytest.fixture
def db_path(tmp_path):
    """40 days of ratings at two terminals, each day received on its own day."""
    path = tmp_path / "onetap.db"
    store = SQLiteStore.open(path)
    seq = 0
    for back in range(40, -1, -1):
        day = (NOW.astimezone(SEOUL) - timedelta(days=back)).date()
        received = NOW - timedelta(days=back)
        for terminal in ("t1", "t2"):
            batch = []
            for _ in range(3):
                seq += 1
                batch.append(rating(day, seq))
            store.ingest_batch("s1", terminal, batch, received)
    store.close()
    return path


EVERYTHING = Filters(date(2026, 1, 1), date(2026, 12, 31))


def figures(store: SQLiteStore) -> dict:
    """Every answer the rollups give: summary per filter, aggregates by each key and pair."""
    out = {"summary": store.summary(EVERYTHING),
           "t1": store.summary(Filters(EVERYTHING.date_from, EVERYTHING.date_to, site="s1", terminal="t1"))}
    for key in AGGREGATE_KEYS:
        out[key] = store.aggregates([key], EVERYTHING)
        out[f"day+{key}"] = store.aggregates(["day", key], EVERYTHING) if key != "day" else None
    return out


def test_cutoff_is_local_days_and_time_since_arrival():
    assert cutoff(NOW, SEOUL, 30) == ("2026-10-28", NOW - timedelta(days=30))
    # 01:00 on the 27th in Seoul is still the 26th in UTC: the local day counts.
    late = datetime(2026, 11, 26, 16, 0, tzinfo=timezone.utc)
    assert cutoff(late, SEOUL, 1)[0] == "2026-11-26"
    with pytest.raises(ValueError):
        cutoff(NOW, SEOUL, 0)


def test_prune_deletes_old_raw_ratings_and_keeps_every_figure(db_path):
    store = SQLiteStore.open(db_path)
    before = figures(store)
    total = store.counts()["ratings"]
    assert total == 41 * 6
    before_day, received_before = cutoff(NOW, SEOUL, 30)
    # Small batches: the loop, not one statement, has to get them all.
    deleted = store.prune_ratings(before_day, received_before, batch=7)
    assert deleted == 10 * 6
    assert store.counts()["ratings"] == total - deleted
    assert min(r["at"] for r in store.iter_ratings(EVERYTHING))[:10] == before_day
    assert figures(store) == before
    # Again: nothing more is due, nothing changes.
    assert store.prune_ratings(before_day, received_before) == 0
    store.close()
    # Reopened (migrations run again): the rollups are not rebuilt from what is left.
    store = SQLiteStore.open(db_path)
    assert figures(store) == before
    assert store.summary_raw(EVERYTHING) != before["summary"]
    store.close()


def test_an_old_day_that_arrived_recently_is_kept(db_path):
    store = SQLiteStore.open(db_path)
    # A kiosk back after 50 days offline: its taps of 50 days ago arrive now.
    old_day = (NOW - timedelta(days=50)).astimezone(SEOUL).date()
    late = [rating(old_day, 1000 + i) for i in range(4)]
    store.ingest_batch("s1", "t3", late, NOW)
    store.prune_ratings(*cutoff(NOW, SEOUL, 30))
    kept = [r["id"] for r in store.iter_ratings(Filters(old_day, old_day))]
    assert kept == [r.id for r in late]
    # Had it gone, the kiosk's resend (its Ack lost) would be counted twice; it is a duplicate.
    assert store.ingest_batch("s1", "t3", late, NOW).duplicate == [r.id for r in late]
    # Thirty days later it goes too, and its counts stay.
    counts = store.summary(Filters(old_day, old_day))
    store.prune_ratings(*cutoff(NOW + timedelta(days=31), SEOUL, 30))
    assert list(store.iter_ratings(Filters(old_day, old_day))) == []
    assert store.summary(Filters(old_day, old_day)) == counts and sum(counts.values()) == 4
    store.close()


def test_suspect_flagging_after_pruning_keeps_counts_consistent(db_path):
    store = SQLiteStore.open(db_path)
    store.prune_ratings(*cutoff(NOW, SEOUL, 30))
    before = store.summary(EVERYTHING)
    remaining = [r["pk"] for r in store.ratings_after(0)]
    assert store.mark_suspect(remaining[:5]) == 5
    assert store.summary(EVERYTHING) == before
    kept_out = Filters(EVERYTHING.date_from, EVERYTHING.date_to, suspect=False)
    assert sum(store.summary(kept_out).values()) == sum(before.values()) - 5
    store.close()


def test_ratings_csv_lists_only_the_kept_days_and_summary_all(db_path):
    store = SQLiteStore.open(db_path)
    store.prune_ratings(*cutoff(NOW, SEOUL, 30))
    store.close()
    config = ServerConfig(db=db_path, api_token=TOKEN)
    app = create_app(lambda: SQLiteStore.open(db_path), config, now=lambda: NOW)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    span = "from=2026-10-01&to=2026-11-27"
    with TestClient(app) as client:
        rows = list(csv.DictReader(io.StringIO(
            client.get(f"/api/v1/ratings.csv?{span}", headers=auth).content.decode("utf-8-sig"))))
        summary = client.get(f"/api/v1/summary?{span}", headers=auth).json()
        days = client.get(f"/api/v1/aggregates?by=day&{span}", headers=auth).json()["rows"]
    assert len(rows) == 31 * 6 and min(r["at"] for r in rows)[:10] == "2026-10-28"
    assert summary["count"] == 41 * 6
    assert [r["day"] for r in days][:2] == ["2026-10-18", "2026-10-19"]
    assert all(r["count"] == 6 for r in days)


def test_runner_prunes_at_start_in_its_thread(db_path):
    runner = RetentionRunner(30, SEOUL, lambda: SQLiteStore.open(db_path), interval_s=3600,
                             now=lambda: NOW).start()
    try:
        deadline = time.monotonic() + 30
        while runner.runs == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        runner.stop()
    assert runner.runs == 1 and runner.pruned == 60
    store = SQLiteStore.open(db_path)
    assert store.counts()["ratings"] == 31 * 6
    store.close()


@pytest.mark.parametrize("rating_days", [0, 30])
def test_quarantine_rows_older_than_quarantine_days_are_pruned(backend, rating_days):
    store = backend.open()
    try:
        for back in (0, 5, 9, 11, 40):
            store.quarantine(received_at=NOW - timedelta(days=back, seconds=1), topic="onetap/v1/s1/t1/ratings",
                             payload=b"junk", reason=f"{back} days old", site="s1", terminal="t1")
        store.ingest_batch("s1", "t1", [rating(date(2026, 9, 1), 1)], NOW - timedelta(days=80))
        runner = RetentionRunner(rating_days, SEOUL, backend.open, quarantine_days=10, now=lambda: NOW)
        deleted = runner.run_once(store)
        assert sorted(q["reason"] for q in store.quarantined()) == ["0 days old", "5 days old", "9 days old"]
        assert runner.pruned_quarantine == 2
        # Ratings follow retention_days only (0: kept).
        assert deleted == (1 if rating_days else 0)
        assert store.counts()["ratings"] == (0 if rating_days else 1)
    finally:
        store.close()
