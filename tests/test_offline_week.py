"""A terminal offline for a week, part of it with its clock reset to 1970, catches up exactly."""

from __future__ import annotations

import random
import sqlite3
from collections import Counter
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import requests

from kiosk.outbox import Outbox
from kiosk.uplink import Uplink
from tests.broker import Mosquitto
from tests.server_process import TOKEN, ServerProcess

SEOUL = ZoneInfo("Asia/Seoul")
pytestmark = pytest.mark.slow


def test_week_offline_then_drain_lands_every_tap_on_its_day(tmp_path):
    path = tmp_path / "kiosk" / "outbox.db"
    path.parent.mkdir()
    outbox = Outbox.open(path)
    rng = random.Random(7)
    today = datetime.now(SEOUL).date()
    expected_days: Counter[str] = Counter()
    # A week of opening hours, about 40 taps an hour: no broker, no server.
    for days_ago in range(7, 0, -1):
        day = today - timedelta(days=days_ago)
        for hour in range(9, 18):
            for _ in range(40):
                moment = datetime(day.year, day.month, day.day, hour, rng.randrange(60),
                                  rng.randrange(60), tzinfo=SEOUL)
                outbox.record(rng.randint(1, 5), now=moment, clock_synced=True)
                expected_days[day.isoformat()] += 1
    # Then a power cut: the Pi (no RTC) boots into 1970 without NTP.
    for second in range(25):
        outbox.record(3, now=datetime(1970, 1, 1, 0, 0, second, tzinfo=timezone.utc),
                      clock_synced=False)
    expected_days[today.isoformat()] += 25
    total = sum(expected_days.values())
    assert outbox.stats().backlog == total

    broker = Mosquitto(tmp_path / "broker").start()
    server = ServerProcess(broker, tmp_path).start()
    uplink = Uplink(lambda: Outbox.open(path), site="week", terminal="counter-07",
                    broker_url=broker.url, ack_timeout=10).start()
    try:
        assert uplink.wait_idle(120), "the week's backlog did not drain"
        assert outbox.stats().backlog == 0
        response = requests.get(
            f"http://127.0.0.1:{server.port}/api/v1/aggregates",
            params={"by": "day", "from": (today - timedelta(days=7)).isoformat(),
                    "to": today.isoformat(), "site": "week"},
            headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        assert response.status_code == 200, response.text
        got = {row["day"]: row["count"] for row in response.json()["rows"]}
        assert got == dict(expected_days)
        with sqlite3.connect(server.db) as conn:
            seqs = [row[0] for row in conn.execute(
                "SELECT seq FROM ratings WHERE terminal = 'counter-07' ORDER BY seq")]
        assert seqs == list(range(1, total + 1))
    finally:
        uplink.stop()
        server.stop()
        broker.stop()
