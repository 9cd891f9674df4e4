"""HTTP API v1 on a real SQLite file and a real PostgreSQL: auth, parameters, answers, CSV, metrics."""

import csv
import io
import itertools
import uuid
from datetime import datetime, timezone

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from kiosk.protocol import Rating, Status
from server.aggregate import AGGREGATE_KEYS
from server.api import create_app
from server.config import ServerConfig
from server.ingest import IngestCounters
from server.store import RATING_COLUMNS
from server.supervisor import Problem, Supervisor
from tests.backends import execute

TOKEN = "s3cret-token"
NOW = datetime(2026, 11, 27, 3, 0, tzinfo=timezone.utc)  # noon in Seoul
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def rating(score, at="2026-11-27T10:15:02.417+09:00", **extra):
    return Rating(id=str(uuid.uuid4()), seq=1, score=score, at=at, clock_synced=True, **extra)


class FakeLinkState:
    """Only the link's read side: connected, counters, queue depth, health (no broker needed here)."""

    connected = True
    queue_depth = 0
    INGEST = {"pending": 0, "queue": 0, "last_received_s": 1.5, "last_processed_s": 1.4, "waiting_s": None}

    def __init__(self):
        self.counters = IngestCounters(messages=3, ratings_accepted=7, quarantine_dropped=2)
        self.supervisor = Supervisor()

    def ingest_state(self):
        return self.INGEST


@pytest.fixture
def db_path(backend):
    store = backend.open()
    store.ingest_batch("s1", "t1", [rating(5), rating(4, reason="wait_time"), rating(1, lang="en")], NOW)
    store.ingest_batch("s1", "t2", [rating(3, input="button", age_group="30s")], NOW)
    store.ingest_batch("s2", "t1", [rating(2, at="2026-11-26T09:00:00.000+09:00")], NOW)
    store.ingest_batch("s2", "t1", [rating(5, reason="other", at="2026-11-27T11:00:00.000+09:00")], NOW)
    store.update_status("s1", "t1", Status("online", {"at": "2026-11-27T11:59:00.000+09:00", "backlog": 2,
                                                      "seq": 3, "version": "0.1.0", "clock_synced": True}), NOW)
    store.update_status("s2", "t1", Status("offline"), NOW)
    store.seen("s1", "t2", NOW)  # as ingest does for a batch
    store.close()
    return backend.db


@pytest.fixture
def client(db_path, backend):
    config = ServerConfig(db=db_path, api_token=TOKEN)
    app = create_app(backend.open, config, FakeLinkState(), now=lambda: NOW)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def test_healthz_needs_no_token(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "broker": "connected", "db": "ok",
                               "ingest": FakeLinkState.INGEST, "threads": {}}


def test_healthz_is_503_with_the_reason_when_the_supervisor_sees_a_problem(db_path, backend):
    link = FakeLinkState()
    problems = []
    link.supervisor.add_check(lambda: problems[0] if problems else None)
    app = create_app(backend.open, ServerConfig(db=db_path, api_token=TOKEN), link, now=lambda: NOW)
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        problems.append(Problem("ingest is stuck: 3 messages waiting, none processed for 25 s", restart=True))
        response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"status": "error", "broker": "connected", "db": "ok",
                               "reason": "ingest is stuck: 3 messages waiting, none processed for 25 s",
                               "ingest": FakeLinkState.INGEST, "threads": {}}


@pytest.mark.parametrize("path", ["/api/v1/summary", "/api/v1/aggregates?by=day", "/api/v1/terminals",
                                  "/api/v1/ratings.csv"])
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                                     {"Authorization": f"Basic {TOKEN}"}])
def test_401_without_the_right_token(client, path, headers):
    response = client.get(path, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_no_token_configured_refuses_everyone(db_path, backend):
    app = create_app(backend.open, ServerConfig(db=db_path), now=lambda: NOW)
    with TestClient(app) as client:
        assert client.get("/api/v1/summary", headers={"Authorization": "Bearer "}).status_code == 401
        assert client.get("/healthz").json()["broker"] == "disconnected"


def test_summary_defaults_to_today(client):
    body = client.get("/api/v1/summary", headers=AUTH).json()
    assert body == {"count": 5, "distribution": {"1": 1, "2": 0, "3": 1, "4": 1, "5": 2},
                    "mean": 3.6, "csat": 60.0, "index": 65.0}


def test_summary_filters_and_range(client):
    get = lambda q: client.get(f"/api/v1/summary?{q}", headers=AUTH).json()  # noqa: E731
    assert get("from=2026-11-26&to=2026-11-27")["count"] == 6
    assert get("site=s1")["count"] == 4
    assert get("site=s1&terminal=t2")["distribution"]["3"] == 1
    empty = get("from=2025-01-01&to=2025-01-01")
    assert empty == {"count": 0, "distribution": {str(s): 0 for s in range(1, 6)},
                     "mean": None, "csat": None, "index": None}


@pytest.mark.parametrize("query, status", [
    ("from=2026-13-01", 400), ("from=2026-02-30", 400), ("from=yesterday", 422), ("to=2026-1-1", 422),
    ("from=2026-11-28&to=2026-11-27", 400), ("site=Bad_Site", 422), ("terminal=a/b", 422),
    ("site=" + "x" * 80, 422),
])
def test_bad_parameters_are_4xx(client, query, status):
    response = client.get(f"/api/v1/summary?{query}", headers=AUTH)
    assert response.status_code == status, response.text
    assert response.json()["detail"]


@pytest.mark.parametrize("by", ["", "score", "day,hour,site,terminal", "day,day", "day;", "x" * 200])
def test_bad_by_is_4xx(client, by):
    response = client.get(f"/api/v1/aggregates?by={by}", headers=AUTH)
    assert response.status_code in (400, 422), response.text
    assert client.get("/api/v1/aggregates", headers=AUTH).status_code == 422


def test_aggregates_every_key_and_pair(client):
    query = "from=2026-11-26&to=2026-11-27"
    for key in AGGREGATE_KEYS:
        body = client.get(f"/api/v1/aggregates?by={key}&{query}", headers=AUTH).json()
        assert body["by"] == [key]
        assert sum(row["count"] for row in body["rows"]) == 6, key
        for row in body["rows"]:
            assert row["count"] == sum(row["distribution"].values())
    for pair in itertools.permutations(AGGREGATE_KEYS, 2):
        response = client.get(f"/api/v1/aggregates?by={','.join(pair)}&{query}", headers=AUTH)
        assert response.status_code == 200, pair
        body = response.json()
        assert body["by"] == list(pair)
        assert sum(row["count"] for row in body["rows"]) == 6, pair
        assert all(set(pair) <= row.keys() for row in body["rows"])
    for triple in itertools.combinations(AGGREGATE_KEYS, 3):
        response = client.get(f"/api/v1/aggregates?by={','.join(triple)}&{query}", headers=AUTH)
        assert response.status_code == 200, triple
        assert sum(row["count"] for row in response.json()["rows"]) == 6, triple


def test_aggregates_values(client):
    body = client.get("/api/v1/aggregates?by=site,day&from=2026-11-26&to=2026-11-27", headers=AUTH).json()
    assert [(r["site"], r["day"], r["count"]) for r in body["rows"]] == [
        ("s1", "2026-11-27", 4), ("s2", "2026-11-26", 1), ("s2", "2026-11-27", 1)]
    hours = client.get("/api/v1/aggregates?by=hour,weekday", headers=AUTH).json()["rows"]
    assert {(r["hour"], r["weekday"]) for r in hours} == {(10, 5), (11, 5)}


def test_terminals(client):
    body = client.get("/api/v1/terminals", headers=AUTH).json()
    by_name = {(t["site"], t["terminal"]): t for t in body}
    t1 = by_name[("s1", "t1")]
    assert t1["state"] == "online" and t1["backlog"] == 2 and t1["version"] == "0.1.0"
    assert t1["clock_synced"] is True and t1["last_seen"]
    assert by_name[("s2", "t1")]["state"] == "offline"
    assert by_name[("s1", "t2")]["state"] == "unknown"  # ratings, no status yet
    only = client.get("/api/v1/terminals?site=s2", headers=AUTH).json()
    assert [(t["site"], t["terminal"]) for t in only] == [("s2", "t1")]


def test_csv_is_bom_utf8_with_the_contract_header(client):
    response = client.get("/api/v1/ratings.csv?from=2026-11-26&to=2026-11-27", headers=AUTH)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    raw = response.content
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    assert rows[0] == [*RATING_COLUMNS, "local_day"]
    assert ",".join(rows[0]) == ("id,site,terminal,seq,score,at,clock_synced,reason,age_group,lang,input,received_at,"
                                 "local_day")
    assert len(rows) == 7
    assert {r[6] for r in rows[1:]} == {"true"}


def test_csv_is_formula_injection_safe(backend):
    store = backend.open()
    # Nothing valid on the wire starts with a formula character, but a row
    # written by anything else must still come out inert.
    execute(store,
        "INSERT INTO ratings (id, site, terminal, seq, score, at, clock_synced, reason, age_group,"
        " lang, input, received_at, day, hour, weekday) VALUES"
        " ('=1+1', '+s', '-t', 1, 5, '@at', 1, '\tx', '\ry', 'ko', 'touch', 'r', '2026-11-27', 1, 5)")
    store.close()
    app = create_app(backend.open, ServerConfig(api_token=TOKEN), now=lambda: NOW)
    with TestClient(app) as client:
        text = client.get("/api/v1/ratings.csv", headers=AUTH).content.decode("utf-8-sig")
    row = list(csv.reader(io.StringIO(text)))[1]
    assert row[:8] == ["'=1+1", "'+s", "'-t", "1", "5", "'@at", "true", "'\tx"]
    assert row[8] == "'\ry"


def test_csv_many_rows_streams_all(backend):
    store = backend.open()
    store.ingest_batch("s1", "t1", [rating(1 + i % 5) for i in range(2500)], NOW)
    store.close()
    app = create_app(backend.open, ServerConfig(api_token=TOKEN), now=lambda: NOW)
    with TestClient(app) as client:
        text = client.get("/api/v1/ratings.csv", headers=AUTH).content.decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text)))
    assert len(rows) == 2501 and len({r[0] for r in rows[1:]}) == 2500


def test_metrics_need_a_token_and_a_scoped_token_sees_only_its_sites(db_path, backend):
    from server.auth import token_hash
    from server.config import TokenConfig

    scoped = "scoped-metrics-token-0123456789"
    config = ServerConfig(api_token=TOKEN, tokens={"s2": TokenConfig(token_hash(scoped), frozenset({"s2"}))})
    with TestClient(create_app(backend.open, config, FakeLinkState(), now=lambda: NOW)) as client:
        answer = client.get("/metrics")
        assert answer.status_code == 401 and "onetap_" not in answer.text
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        text = client.get("/metrics", headers={"Authorization": f"Bearer {scoped}"}).text
        assert 'onetap_site_ratings_today{site="s2"} 1' in text
        assert 'onetap_site_terminals{site="s2",state="offline"} 1' in text
        assert 's1' not in text and "onetap_ratings_stored" not in text and "onetap_ingest" not in text
        everything = client.get("/metrics", headers=AUTH).text
        assert 'onetap_site_ratings_today{site="s1"} 4' in everything and "onetap_ratings_stored 6" in everything


def test_metrics(client):
    text = client.get("/metrics", headers=AUTH).text
    assert "onetap_ratings_stored 6" in text
    assert "onetap_broker_connected 1" in text
    assert 'onetap_ingest_ratings_total{result="accepted"} 7' in text
    assert 'onetap_terminals{state="offline"} 1' in text
    assert "# TYPE onetap_ingest_messages_total counter" in text
    assert "onetap_ingest_quarantine_dropped_total 2" in text
    assert "onetap_ingest_retained_refused_total 0" in text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("onetap_ratings_stored", ())] == 6
    assert samples[("onetap_ingest_ratings_total", (("result", "accepted"),))] == 7
    assert samples[("onetap_ingest_quarantine_dropped_total", ())] == 2
    assert {name for name, _ in samples} >= {
        "onetap_site_ratings_today", "onetap_site_terminals", "onetap_quarantine_stored", "onetap_terminals",
        "onetap_broker_connected", "onetap_ingest_messages_total", "onetap_ingest_batches_total",
        "onetap_ingest_quarantined_total", "onetap_ingest_statuses_total", "onetap_ingest_acks_total",
        "onetap_ingest_store_errors_total", "onetap_ingest_queue_depth", "onetap_rollup_queue_rows",
        "onetap_ingest_roll_up_errors_total"}


def test_openapi_describes_the_endpoints(client):
    spec = client.get("/openapi.json").json()
    for path in ("/healthz", "/api/v1/summary", "/api/v1/aggregates", "/api/v1/terminals",
                 "/api/v1/ratings.csv", "/metrics"):
        assert path in spec["paths"]
    summary = spec["paths"]["/api/v1/summary"]["get"]
    assert {p["name"] for p in summary["parameters"]} >= {"from", "to", "site", "terminal"}
    assert "200" in summary["responses"] and "401" in summary["responses"]


def test_broken_database_is_503_not_500(backend):
    backend.open().close()
    stores = []

    def factory():
        store = backend.open()
        stores.append(store)
        return store

    app = create_app(factory, ServerConfig(api_token=TOKEN), now=lambda: NOW)
    with TestClient(app, raise_server_exceptions=False) as client:
        client.get("/healthz")
        execute(stores[0], "DROP TABLE ratings" + (" CASCADE" if backend.kind == "postgres" else ""))
        assert client.get("/api/v1/summary", headers=AUTH).status_code == 503
        health = client.get("/healthz")
        assert health.status_code == 503 and health.json()["db"] == "error"


@pytest.fixture
def grouped(db_path, backend):
    from server.config import GroupConfig, TokenConfig
    from server.auth import token_hash

    store = backend.open()
    store.raise_alert("s1", "t1", "clock", "s1/t1 clock not synchronised (NTP)", NOW)
    store.raise_alert("s2", "t1", "offline", "s2/t1 offline for 40 min during opening hours", NOW)
    store.raise_alert("s2", "t1", "backlog", "s2/t1 backlog 3 not draining", datetime(2026, 11, 20, 3, tzinfo=timezone.utc))
    store.close()
    config = ServerConfig(db=db_path, api_token=TOKEN,
                          groups={"north": GroupConfig(("s1", "s2"), "북부"), "one": GroupConfig(("s1",))},
                          tokens={"s2only": TokenConfig(token_hash("s2-token-long-enough"), frozenset({"s2"}))})
    app = create_app(backend.open, config, FakeLinkState(), now=lambda: NOW)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def test_alerts_endpoint_is_scoped_and_ranged(grouped):
    today = grouped.get("/api/v1/alerts", headers=AUTH).json()
    assert today["from"] == today["to"] == "2026-11-27"
    assert sorted(a["kind"] for a in today["alerts"]) == ["clock", "offline"]
    week = grouped.get("/api/v1/alerts?from=2026-11-20&to=2026-11-27&site=s2", headers=AUTH).json()
    assert sorted(a["kind"] for a in week["alerts"]) == ["backlog", "offline"]
    scoped = {"Authorization": "Bearer s2-token-long-enough"}
    assert {a["site"] for a in grouped.get("/api/v1/alerts", headers=scoped).json()["alerts"]} == {"s2"}
    assert grouped.get("/api/v1/alerts?site=s1", headers=scoped).status_code == 403
    assert grouped.get("/api/v1/alerts").status_code == 401
    assert grouped.get("/api/v1/alerts?from=2026-11-28&to=2026-11-27", headers=AUTH).status_code == 400
    assert grouped.get("/api/v1/alerts?group=one", headers=AUTH).json()["alerts"][0]["site"] == "s1"


def test_aggregates_by_group_sum_each_site_into_its_groups(grouped):
    rows = grouped.get("/api/v1/aggregates?by=group&from=2026-11-26&to=2026-11-27", headers=AUTH).json()["rows"]
    counts = {row["group"]: row["count"] for row in rows}
    assert counts == {"north": 6, "one": 4}
    rows = grouped.get("/api/v1/aggregates?by=group,site&from=2026-11-26&to=2026-11-27", headers=AUTH).json()["rows"]
    assert {(r["group"], r["site"]): r["count"] for r in rows} == {("north", "s1"): 4, ("north", "s2"): 2,
                                                                   ("one", "s1"): 4}
    scoped = {"Authorization": "Bearer s2-token-long-enough"}
    rows = grouped.get("/api/v1/aggregates?by=group&from=2026-11-26&to=2026-11-27", headers=scoped).json()["rows"]
    assert {row["group"]: row["count"] for row in rows} == {"north": 2}
    assert grouped.get("/api/v1/summary?group=one", headers=scoped).status_code == 403
    assert grouped.get("/api/v1/summary?group=nope", headers=AUTH).status_code == 400
    assert grouped.get("/api/v1/summary?group=one", headers=AUTH).json()["count"] == 4
