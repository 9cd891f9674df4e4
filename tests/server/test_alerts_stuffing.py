"""Stuffing detection on the server's own evidence (receipt times, seq order), on SQLite and PostgreSQL:
ratings go in through ingest at controlled receipt times, the alert engine flags them."""

import random
import uuid
from datetime import date, datetime, timedelta, timezone

import pytest

from kiosk.protocol import Rating, encode_batch, format_timestamp, topic
from server.alerts import AlertEngine
from server.config import ServerConfig
from server.ingest import Ingest
from server.store import Filters

NOW = datetime(2026, 11, 27, 4, 0, tzinfo=timezone.utc)  # 13:00 in Seoul
KST = timezone(timedelta(hours=9))
DAY = Filters(date(2026, 11, 27), date(2026, 11, 27))


class Clock:
    def __init__(self, moment):
        self.moment = moment

    def __call__(self):
        return self.moment


def tap(seq, at, score=5):
    return Rating(id=str(uuid.uuid4()), seq=seq, score=score, at=format_timestamp(at.astimezone(KST)),
                  clock_synced=True)


def deliver(store, clock, ratings, terminal="t1", per_batch=500, spacing_s=0.5):
    """Publish-like: batches of *per_batch*, received *spacing_s* apart."""
    ingest = Ingest(store, now=clock)
    for start in range(0, len(ratings), per_batch):
        chunk = ratings[start:start + per_batch]
        ingest.handle([(topic("s1", terminal, "ratings"),
                        encode_batch("s1", terminal, [r.encode() for r in chunk]))])
        clock.moment += timedelta(seconds=spacing_s)


def flagged(store, engine, when):
    changes = engine.run_once(when)
    return sum(store.summary(Filters(DAY.date_from, DAY.date_to, suspect=True)).values()), changes


def test_three_hundred_top_scores_with_seq_gaps_are_flagged(store):
    clock = Clock(NOW)
    # Human-looking claimed spacing (a minute apart), but seqs that skip: made up.
    start = NOW - timedelta(hours=5)
    ratings = [tap(2 * i + 1, start + timedelta(seconds=60 * i)) for i in range(300)]
    deliver(store, clock, ratings, per_batch=100)
    count, changes = flagged(store, AlertEngine(store, ServerConfig()), clock.moment)
    assert count == 300
    assert [a["kind"] for a in changes["raised"]] == ["suspect"]


def test_three_hundred_top_scores_with_invented_spacing_arriving_in_a_burst_are_flagged(store):
    clock = Clock(NOW)
    start = NOW - timedelta(seconds=3.5 * 300)
    ratings = [tap(i + 1, start + timedelta(seconds=3.5 * i)) for i in range(300)]
    deliver(store, clock, ratings, per_batch=50)
    count, _ = flagged(store, AlertEngine(store, ServerConfig()), clock.moment)
    assert count == 300


def test_a_control_burst_is_flagged_as_before(store):
    clock = Clock(NOW)
    ingest = Ingest(store, now=clock)
    at = NOW
    for seq in range(1, 21):  # 20 taps 0.2 s apart, each sent live
        r = tap(seq, at, score=random.Random(seq).randint(1, 5))
        ingest.handle([(topic("s1", "t1", "ratings"), encode_batch("s1", "t1", [r.encode()]))])
        at += timedelta(seconds=0.2)
        clock.moment = at + timedelta(seconds=0.05)
    count, _ = flagged(store, AlertEngine(store, ServerConfig()), clock.moment)
    assert count == 20


def test_a_kiosk_back_from_offline_is_not_flagged(store):
    clock = Clock(NOW)
    rng = random.Random(7)
    at = NOW - timedelta(days=3)
    ratings = []
    for seq in range(1, 301):  # three days of a counter's taps, a few minutes apart
        at += timedelta(seconds=rng.randint(60, 600))
        ratings.append(tap(seq, at, score=rng.choice([3, 4, 4, 5, 5, 5])))
    # ... and a long happy streak, people two minutes apart.
    for seq in range(301, 331):
        at += timedelta(seconds=120)
        ratings.append(tap(seq, at, score=5))
    deliver(store, clock, ratings, per_batch=500)
    everything = Filters(date(2026, 11, 20), date(2026, 11, 27), suspect=True)
    engine = AlertEngine(store, ServerConfig())
    changes = engine.run_once(clock.moment)
    assert sum(store.summary(everything).values()) == 0
    assert changes["raised"] == []


@pytest.mark.parametrize("pace_s", [25, 40])
def test_live_people_are_not_flagged(store, pace_s):
    clock = Clock(NOW)
    ingest = Ingest(store, now=clock)
    at = NOW
    for seq in range(1, 41):
        r = tap(seq, at, score=5)
        clock.moment = at + timedelta(seconds=0.3)
        ingest.handle([(topic("s1", "t1", "ratings"), encode_batch("s1", "t1", [r.encode()]))])
        at += timedelta(seconds=pace_s)
    count, _ = flagged(store, AlertEngine(store, ServerConfig()), clock.moment)
    assert count == 0


def test_a_rating_backdated_to_a_past_month_is_flagged(store):
    clock = Clock(NOW)
    ingest = Ingest(store, now=clock)
    at = NOW - timedelta(hours=3)
    ratings = []
    for seq in range(1, 6):  # people, live; one clock correction of 40 s back
        at += timedelta(minutes=10) if seq != 3 else -timedelta(seconds=40)
        ratings.append(tap(seq, at, score=4))
    backdated = tap(6, NOW - timedelta(days=35), score=1)
    for r in [*ratings, backdated]:
        clock.moment = max(clock.moment, datetime.fromisoformat(r.at) + timedelta(seconds=1))
        ingest.handle([(topic("s1", "t1", "ratings"), encode_batch("s1", "t1", [r.encode()]))])
    AlertEngine(store, ServerConfig()).run_once(clock.moment)
    everything = Filters(date(2026, 10, 1), date(2026, 11, 30), suspect=True)
    assert store.summary(everything) == {1: 1, 2: 0, 3: 0, 4: 0, 5: 0}


def test_made_up_seqs_never_make_a_pass_read_a_terminals_whole_history(store):
    clock = Clock(NOW)
    rng = random.Random(3)
    at = NOW - timedelta(days=20)
    history = []
    for seq in range(1, 3001):
        at += timedelta(seconds=rng.randint(200, 400))
        history.append(tap(seq, at, score=rng.randint(1, 5)))
    deliver(store, clock, history)
    engine = AlertEngine(store, ServerConfig())
    engine.run_once(clock.moment)
    read = []
    original = store.terminal_ratings

    def spy(*args, **kwargs):
        rows = original(*args, **kwargs)
        read.append(len(rows))
        return rows

    store.terminal_ratings = spy
    clock.moment += timedelta(minutes=1)
    deliver(store, clock, [tap(1, clock.moment, score=5), tap(2**63 - 1, clock.moment, score=5)])
    engine.run_once(clock.moment)
    assert read and max(read) <= 4 * (2 + ServerConfig().alerts.run_length)
