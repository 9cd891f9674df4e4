"""A seeded dashboard behind a TestClient (no browser): two sites that both have counter-01, groups, marks, alerts."""

import re
import uuid
from datetime import date, datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient

from kiosk.protocol import Rating, Status
from server.api import create_app
from server.auth import hash_password
from server.config import GroupConfig, ServerConfig, SiteConfig, UserConfig
from server.store import SQLiteStore

NOW = datetime(2026, 11, 27, 3, 0, tzinfo=timezone.utc)  # noon in Seoul, a Friday
PASSWORD = "맞는-비밀번호-0123"
TOKEN = "an-api-token-long-enough-0123"


def seed(path):
    """Nov 2 .. Nov 26 (weekdays): gangnam counter-01 (10 a day), counter-02 (5 a day), seocho counter-01
    (4 a day); plus 6 suspect ratings at gangnam counter-01 today."""
    store = SQLiteStore.open(path)
    seqs = {}
    reasons = ["wait_time", None, "staff_attitude", "information"]
    ages = [None, "70plus", "under20", "30s"]
    for offset in range(25):
        day = date(2026, 11, 2) + timedelta(days=offset)
        if day.weekday() >= 5:
            continue
        for site, terminal, n, score in (("gangnam-office", "counter-01", 10, 4), ("gangnam-office", "counter-02", 5, 2),
                                         ("seocho-office", "counter-01", 4, 5)):
            batch = []
            for i in range(n):
                seqs[site, terminal] = seq = seqs.get((site, terminal), 0) + 1
                at = datetime(day.year, day.month, day.day, 9 + i % 8, 10, tzinfo=timezone(timedelta(hours=9)))
                s = score if i % 3 else max(1, score - 2)
                batch.append(Rating(id=str(uuid.uuid4()), seq=seq, score=s, at=at.isoformat(timespec="milliseconds"),
                                    clock_synced=True, reason=reasons[i % 4] if s <= 2 else None,
                                    age_group=ages[i % 4]))
            store.ingest_batch(site, terminal, batch, NOW)
    burst = []
    for i in range(6):
        seqs["gangnam-office", "counter-01"] = seq = seqs["gangnam-office", "counter-01"] + 1
        burst.append(Rating(id=str(uuid.uuid4()), seq=seq, score=1, clock_synced=True,
                            at=f"2026-11-27T11:00:0{i}.000+09:00"))
    store.ingest_batch("gangnam-office", "counter-01", burst, NOW)
    pks = [r["pk"] for r in store.terminal_ratings("gangnam-office", "counter-01", seq - 5, seq)]
    store.mark_suspect(pks)
    # The kiosk's Status still says an older last tap: the board must show the stored one.
    store.update_status("gangnam-office", "counter-01", Status("online", {
        "last_tap_at": "2026-11-26T09:00:00.000+09:00", "clock_synced": True, "backlog": 0}), NOW)
    store.update_status("gangnam-office", "counter-02", Status("online", {"clock_synced": False}), NOW)
    store.update_status("seocho-office", "counter-01", Status("offline"), NOW - timedelta(minutes=40))
    store.add_mark(None, date(2026, 11, 16), "번호표 <도입>", "admin", NOW)
    store.raise_alert("gangnam-office", "counter-02", "clock", "gangnam-office/counter-02 clock not synchronised (NTP)", NOW)
    store.raise_alert("seocho-office", "counter-01", "offline",
                      "seocho-office/counter-01 offline for 40 min during opening hours", NOW)
    store.raise_alert("gangnam-office", "counter-01", "low_scores",
                      "gangnam-office/counter-01: 6 scores <= 2 in the last 30 min", NOW)
    store.close()


def config_for(path):
    return ServerConfig(
        db=path, api_token=TOKEN, institution="강남구청",
        sites={"gangnam-office": SiteConfig(name="강남구청 민원실", terminals={"counter-01": "1번 창구"}, target=70.0)},
        groups={"south": GroupConfig(("gangnam-office", "seocho-office"), "남부 권역", 60.0),
                "north": GroupConfig(("mapo-office",), "북부 권역")},
        users={"admin": UserConfig(hash_password(PASSWORD), None),
               "gangnam": UserConfig(hash_password(PASSWORD), frozenset({"gangnam-office"})),
               # Scoped by a group only: sees the north group's sites.
               "north": UserConfig(hash_password(PASSWORD), groups=("north",))})


def login(client, user="admin"):
    page = client.get("/login?lang=ko")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]
    done = client.post("/login", data={"csrf": csrf, "username": user, "password": PASSWORD}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/"
    return client


def csrf_of(client):
    return re.search(r'name="csrf" value="([^"]+)"', client.get("/alerts").text)[1]


@pytest.fixture(scope="module")
def site_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("dashboard") / "onetap.db"
    seed(path)
    return path


def client_for(path, user="admin"):
    client = TestClient(create_app(lambda: SQLiteStore.open(path), config_for(path), now=lambda: NOW),
                        raise_server_exceptions=False)
    return login(client, user)


@pytest.fixture
def admin(site_db):
    return client_for(site_db)


@pytest.fixture
def gangnam(site_db):
    return client_for(site_db, "gangnam")
