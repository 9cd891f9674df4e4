"""server/restarts.py: a terminal numbering from 1 again is noticed once, on both stores, and raised as an alert."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

from kiosk.protocol import Rating, format_timestamp
from server.alerts import AlertEngine
from server.config import ServerConfig
from server.restarts import find_restarts, first_taps

KST = timezone(timedelta(hours=9))
NOW = datetime(2026, 11, 27, 11, 0, tzinfo=KST)


def taps(seqs) -> list[Rating]:
    return [Rating(id=str(uuid.uuid4()), seq=seq, score=4, at=format_timestamp(NOW), clock_synced=True)
            for seq in seqs]


def test_first_taps():
    rows = [{"site": "s", "terminal": "a", "seq": 1}, {"site": "s", "terminal": "b", "seq": 2}]
    assert first_taps(rows) == {("s", "a")}


def test_a_restart_is_found_once_and_a_first_start_never(store):
    store.ingest_batch("s", "counter-04", taps(range(1, 6)), NOW)
    store.ingest_batch("s", "counter-05", taps(range(1, 3)), NOW)
    assert find_restarts(store) == {}, "a terminal's first seq 1 is no restart"
    # counter-04 is replaced by a card with an empty outbox: seq 1 again.
    store.ingest_batch("s", "counter-04", taps(range(1, 3)), NOW)
    store.ingest_batch("s", "counter-05", taps(range(3, 5)), NOW)
    assert find_restarts(store) == {("s", "counter-04"): 2}
    assert find_restarts(store) == {}, "the same restart is reported once"
    # A resend of an already stored rating is a duplicate, not a restart.
    store.ingest_batch("s", "counter-05", taps([5]), NOW)
    assert find_restarts(store) == {}


def test_a_restart_raises_an_alert_and_keeps_every_rating(store):
    engine = AlertEngine(store, ServerConfig())
    store.ingest_batch("s", "counter-04", taps(range(1, 4)), NOW)
    assert not [a for a in engine.run_once(NOW)["raised"] if a["kind"] == "seq_restart"]
    store.ingest_batch("s", "counter-04", taps([1]), NOW)
    raised = [a for a in engine.run_once(NOW + timedelta(minutes=1))["raised"]
              if a["kind"] == "seq_restart"]
    assert [(a["site"], a["terminal"]) for a in raised] == [("s", "counter-04")]
    assert "began again at 1" in raised[0]["message"]
    assert len(store.terminal_ratings("s", "counter-04", 1, 3)) == 4
    assert not [a for a in engine.run_once(NOW + timedelta(minutes=2))["raised"]
                if a["kind"] == "seq_restart"]
