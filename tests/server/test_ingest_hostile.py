"""Ingest against a hostile terminal, on SQLite and PostgreSQL: poison values, retained batches,
another terminal's ids, quarantine caps; and Hypothesis driving decode -> plan -> store -> Ack."""

import json
import uuid
from datetime import date, datetime, timedelta, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kiosk.protocol import CLOCK_SUSPECT_FIELDS, Ack, Rating, Status, encode_batch, topic
from server.alerts import AlertEngine
from server.config import ServerConfig
from server.ingest import MAX_QUARANTINE_PAYLOAD, Ingest, QuarantineCaps
from server.store import Filters
from tests.backends import query

NOW = datetime(2026, 11, 27, 1, 30, tzinfo=timezone.utc)  # 10:30 in Seoul
TODAY = Filters(date(2026, 11, 27), date(2026, 11, 27))
POISON_TIMES = ("9999-12-31T23:59:59Z", "0001-01-01T00:00:00+14:00")


def rating(seq=1, score=4, at="2026-11-27T10:15:02.417+09:00", rating_id=None):
    return Rating(id=rating_id or str(uuid.uuid4()), seq=seq, score=score, at=at, clock_synced=True)


def batch(ratings, site="s1", terminal="t1"):
    return encode_batch(site, terminal, [r.encode() for r in ratings])


def acks_by_topic(acks):
    return {t: a for t, a in acks}


def test_poison_times_are_counted_by_receipt_and_ingest_goes_on(store):
    ingest = Ingest(store, now=lambda: NOW)
    poison = [rating(seq=i, at=at) for i, at in enumerate(POISON_TIMES, 1)]
    others = [rating(seq=1) for _ in range(3)]
    acks = acks_by_topic(ingest.handle(
        [(topic("s1", "t1", "ratings"), batch(poison))]
        + [(topic("s1", f"o{i}", "ratings"), batch([r], terminal=f"o{i}")) for i, r in enumerate(others)]))
    assert sorted(acks[topic("s1", "t1", "ack")].accepted) == sorted(r.id for r in poison)
    for i, r in enumerate(others):
        assert acks[topic("s1", f"o{i}", "ack")].accepted == (r.id,)
    assert sum(store.summary(TODAY).values()) == 5
    flags = {r["id"]: r["clock_suspect"] for r in query(store, "SELECT id, clock_suspect FROM ratings")}
    assert [flags[r.id] for r in poison] == [1, 1] and not any(flags[r.id] for r in others)


def test_a_rating_with_a_surrogate_or_a_huge_integer_rejects_only_itself(store):
    ingest = Ingest(store, now=lambda: NOW)
    good = [rating(seq=1), rating(seq=4)]
    bad_lang = rating(seq=2).encode().replace('"lang":"ko"', '"lang":"\\ud800"')
    bad_seq = rating(seq=3).encode().replace('"seq":3', '"seq":' + "7" * 5000)
    payload = ('{"v":1,"site":"s1","terminal":"t1","ratings":['
               + ",".join([good[0].encode(), bad_lang, bad_seq, good[1].encode()]) + "]}").encode()
    (_, ack), = ingest.handle([(topic("s1", "t1", "ratings"), payload)])
    assert sorted(ack.accepted) == sorted(r.id for r in good)
    errors = [error for _, error in ack.rejected]
    assert len(errors) == 2 and "lang" in errors[0] and "5000 digits" in errors[1]
    assert not any("internal error" in q["reason"] for q in store.quarantined())
    Ack.decode(ack.encode())


def test_a_retained_batch_is_refused_never_counted_nor_acked(store):
    ingest = Ingest(store, now=lambda: NOW)
    r = rating()
    assert ingest.handle([(topic("s1", "t1", "ratings"), batch([r]), True)]) == []
    assert store.counts()["ratings"] == 0 and ingest.counters.retained_refused == 1
    (row,) = store.quarantined()
    assert "retained" in row["reason"] and row["payload"] == batch([r])
    # The same batch sent as a kiosk sends it (not retained) is counted.
    (_, ack), = ingest.handle([(topic("s1", "t1", "ratings"), batch([r]), False)])
    assert ack.accepted == (r.id,)
    # A retained status is what a status is: stored.
    status = Status("online", {"at": "2026-11-27T10:29:00+09:00", "backlog": 0, "seq": 1})
    ingest.handle([(topic("s1", "t1", "status"), status.encode(), True)])
    assert store.terminals()[0]["state"] == "online"


def test_a_terminal_cannot_suppress_anothers_ratings_through_ingest(store):
    ingest = Ingest(store, now=lambda: NOW)
    real = [rating(seq=i, score=5) for i in range(1, 11)]
    forged = [rating(seq=i, score=1, rating_id=r.id) for i, r in enumerate(real, 1)]
    ingest.handle([(topic("s1", "a", "ratings"), batch(forged, terminal="a"))])
    (_, ack), = ingest.handle([(topic("s1", "b", "ratings"), batch(real, terminal="b"))])
    assert ack.accepted == tuple(r.id for r in real) and ack.duplicate == ()
    assert dict(store.aggregates(["terminal"], TODAY))[("b",)][5] == 10


def test_poison_status_is_bounded_and_the_board_and_alerts_go_on(store):
    ingest = Ingest(store, now=lambda: NOW)
    poison = (b'{"v":1,"state":"online","at":"2026-11-27T10:29:00+09:00","backlog":5,"seq":1,'
              b'"oldest_pending_at":"0001-01-01T00:00:00+14:00"}')
    surrogate = (b'{"v":1,"state":"online","at":"2026-11-27T10:29:00+09:00","backlog":0,"seq":1,'
                 b'"version":"\\ud800"}')
    ingest.handle([(topic("s1", "t1", "status"), poison), (topic("s1", "t2", "status"), surrogate)])
    (t1,) = store.terminals()
    assert t1["oldest_pending_at"] is None and t1[CLOCK_SUSPECT_FIELDS] == ["oldest_pending_at"]
    assert "version" in store.quarantined()[0]["reason"]
    engine = AlertEngine(store, ServerConfig())
    engine.run_once(NOW + timedelta(hours=2))  # would format the poison time, were it kept


def test_quarantine_caps_count_and_drop_per_terminal_and_alert_once(store):
    caps = QuarantineCaps(rows_per_day=3, bytes_per_day=10_000)
    ingest = Ingest(store, now=lambda: NOW, quarantine_caps=caps)
    junk = (topic("s1", "bad", "ratings"), b"x" * 100)
    ingest.handle([junk] * 5)
    assert store.quarantine_usage("s1", "bad", NOW.replace(hour=0, minute=0)) == (3, 300)
    assert ingest.counters.quarantine_dropped == 2 and ingest.counters.quarantined == 3
    # Another terminal still has its own allowance, and valid ratings are never capped.
    r = rating()
    acks = ingest.handle([(topic("s1", "ok", "ratings"), b"not json"),
                          (topic("s1", "bad", "ratings"), batch([r], terminal="bad"))])
    assert acks[0][1].accepted == (r.id,)
    assert store.quarantine_usage("s1", "ok", NOW.replace(hour=0, minute=0)) == (1, 8)
    alerts = [a for a in store.open_alerts() if a["kind"] == "quarantine"]
    assert [(a["site"], a["terminal"]) for a in alerts] == [("s1", "bad")]
    # The alert engine delivers it (webhook, MQTT) once, like the alerts it raises itself.
    published = []
    engine = AlertEngine(store, ServerConfig(), publish=lambda t, p: published.append((t, json.loads(p))))
    raised = engine.run_once(NOW + timedelta(seconds=30))["raised"]
    assert [(a["kind"], a["terminal"]) for a in raised] == [("quarantine", "bad")]
    assert [a["kind"] for a in published[-1][1]["alerts"]] == ["quarantine"]
    assert engine.run_once(NOW + timedelta(seconds=60))["raised"] == []
    # A restarted ingest (a new Ingest on the same store) keeps the day's cap.
    again = Ingest(store, now=lambda: NOW, quarantine_caps=caps)
    again.handle([junk])
    assert again.counters.quarantine_dropped == 1
    assert len([a for a in store.open_alerts() if a["terminal"] == "bad"]) == 1  # not raised again
    # Bytes cap: a 1 MB payload exceeds 10 kB at once.
    ingest.handle([(topic("s1", "big", "ratings"), b"y" * 1_000_000)])
    assert store.quarantine_usage("s1", "big", NOW.replace(hour=0, minute=0)) == (0, 0)
    # The next day the terminal may quarantine again.
    tomorrow = Ingest(store, now=lambda: NOW + timedelta(days=1), quarantine_caps=caps)
    tomorrow.handle([junk])
    assert tomorrow.counters.quarantined == 1


def test_one_quarantine_row_keeps_at_most_a_mebibyte_and_says_so(store):
    ingest = Ingest(store, now=lambda: NOW)
    ingest.handle([(topic("s1", "t1", "ratings"), b"z" * 3_000_000)])
    (row,) = store.quarantined()
    assert len(row["payload"]) == MAX_QUARANTINE_PAYLOAD
    assert "payload of 3000000 bytes" in row["reason"]


# -- the whole path under Hypothesis: decode -> plan -> store -> Ack --------------

extreme_times = st.one_of(
    st.sampled_from(POISON_TIMES + ("2019-12-31T23:59:59Z", "2026-11-28T01:30:01Z", "0000-01-01T00:00:00Z",
                                    "2026-02-30T00:00:00Z", "2026-11-27T24:00:00Z", "2026-11-27T10:00:60Z",
                                    "2026-11-27T10:00:00+23:59", "2026-11-27T10:00:00-99:99")),
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                 timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=14)),
                                            timezone(timedelta(hours=-12))])).map(lambda d: d.isoformat()),
)
extreme_values = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70), st.floats(), st.text(max_size=6),
    st.sampled_from(["\ud800", "\x00", "\u2028", "ko\n", "\udfff"]), st.none(), st.booleans(),
)
RAW_NUMBERS = ["9" * 5000, "-" + "1" * 4400, "1e400", "NaN", "Infinity", "-Infinity", "1" * 20]


@st.composite
def hostile_rating(draw, seq):
    r = rating(seq=seq, score=draw(st.integers(1, 5))).to_dict()
    r["at"] = draw(extreme_times)
    if draw(st.booleans()):
        r[draw(st.sampled_from(["seq", "score", "lang", "reason", "age_group", "input", "clock_synced",
                                "id", "\ud800", "x\x01"]))] = draw(extreme_values)
    text = json.dumps(r, ensure_ascii=draw(st.booleans()), allow_nan=True)
    if draw(st.integers(0, 4)) == 0:
        field = draw(st.sampled_from(["seq", "score"]))
        text = text.replace(f'"{field}": {r[field]}' if type(r[field]) is int else "@@",
                            f'"{field}": {draw(st.sampled_from(RAW_NUMBERS))}')
    return text


@st.composite
def hostile_messages(draw):
    terminal = draw(st.sampled_from(["t1", "t2", "t3"]))
    kind = draw(st.sampled_from(["ratings", "ratings", "status"]))
    retained = draw(st.booleans())
    if kind == "ratings":
        items = [draw(hostile_rating(seq)) for seq in range(1, draw(st.integers(1, 4)) + 1)]
        payload = ('{"v":1,"site":"s1","terminal":"' + terminal + '","ratings":[' + ",".join(items) + "]}")
    else:
        fields = {"at": draw(extreme_times), "backlog": draw(extreme_values), "seq": 1}
        for name in draw(st.lists(st.sampled_from(["oldest_pending_at", "last_tap_at", "last_ack_at"]),
                                  max_size=3)):
            fields[name] = draw(extreme_times)
        if draw(st.booleans()):
            fields[draw(st.sampled_from(["version", "error", "uptime_s", "disk_free_mb", "config_version",
                                         "clock_synced"]))] = draw(extreme_values)
        payload = json.dumps({"v": 1, "state": "online", **fields}, ensure_ascii=draw(st.booleans()),
                             allow_nan=True)
        if draw(st.booleans()):
            payload = payload.replace('"seq": 1', '"seq": ' + draw(st.sampled_from(RAW_NUMBERS)))
    return (topic("s1", terminal, kind), payload.encode("utf-8", "surrogatepass"), retained)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                HealthCheck.function_scoped_fixture])
@given(st.lists(hostile_messages(), min_size=1, max_size=5))
def test_hostile_values_never_raise_through_ingest_store_board_and_alerts(store, messages):
    ingest = Ingest(store, now=lambda: NOW)
    before = store.counts()["ratings"]
    acks = ingest.handle(messages)  # must not raise: every outcome is stored, duplicate or quarantined
    assert not any(q["reason"].startswith("internal error") for q in store.quarantined(1000))
    for _, ack in acks:
        Ack.decode(ack.encode())
        assert ack.accepted or ack.duplicate or ack.rejected
    # A retained batch is never counted nor Acked: a topic that only sent retained ones gets no Ack.
    plain = {m[0] for m in messages if not m[2]}
    retained_only = {m[0] for m in messages if m[2] and m[0].endswith("/ratings")} - plain
    assert not {t.replace("/ratings", "/ack") for t in retained_only} & {t for t, _ in acks}
    assert store.counts()["ratings"] - before == sum(len(a.accepted) for _, a in acks)
    # Whatever was stored is computable: days inside the window, by receipt when outside it.
    for row in query(store, "SELECT day, clock_suspect FROM ratings"):
        assert "2020-01-01" <= row["day"] <= "2026-11-28"
        assert not row["clock_suspect"] or row["day"] == "2026-11-27"
    for t in store.terminals():
        json.dumps(t, ensure_ascii=False).encode("utf-8")
    AlertEngine(store, ServerConfig()).run_once(NOW + timedelta(minutes=5))


# -- the Status path under Hypothesis: store -> board/API -> dashboard -> alerts ----

PASSWORD = "status-path-password"


@st.composite
def hostile_statuses(draw):
    fields = {}
    for name in draw(st.lists(st.sampled_from(["at", "oldest_pending_at", "last_tap_at", "last_ack_at"]),
                              max_size=4)):
        fields[name] = draw(extreme_times)
    for name in draw(st.lists(st.sampled_from(["version", "error", "backlog", "seq", "uptime_s",
                                               "disk_free_mb", "config_version", "ignored_taps",
                                               "clock_synced"]), max_size=4)):
        fields[name] = draw(extreme_values)
    fields.setdefault("at", draw(extreme_times))
    fields.setdefault("backlog", 1)
    fields.setdefault("seq", 1)
    state = draw(st.sampled_from(["online", "online", "offline"]))
    text = json.dumps({"v": 1, "state": state, **fields}, ensure_ascii=draw(st.booleans()), allow_nan=True)
    if draw(st.booleans()):
        text = text.replace('"seq": 1', '"seq": ' + draw(st.sampled_from(RAW_NUMBERS)))
    return text.encode("utf-8", "surrogatepass")


def test_hostile_statuses_never_break_the_board_the_dashboard_or_the_alerts(backend):
    import re

    from fastapi.testclient import TestClient

    from server.api import create_app
    from server.auth import hash_password
    from server.config import UserConfig

    config = ServerConfig(api_token="s" * 24, users={"admin": UserConfig(hash_password(PASSWORD), None)})
    store = backend.open()
    app = create_app(backend.open, config, now=lambda: NOW)
    with TestClient(app, raise_server_exceptions=False) as client:
        page = client.get("/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        assert client.post("/login", data={"csrf": csrf, "username": "admin", "password": PASSWORD},
                           follow_redirects=False).status_code == 303
        ingest = Ingest(store, now=lambda: NOW)
        engine = AlertEngine(store, config)

        @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(st.lists(st.tuples(st.sampled_from(["t1", "t2"]), hostile_statuses()), min_size=1, max_size=3))
        def check(statuses):
            ingest.handle([(topic("s1", terminal, "status"), payload, True) for terminal, payload in statuses])
            assert not any(q["reason"].startswith("internal error") for q in store.quarantined(1000))
            api = client.get("/api/v1/terminals", headers={"Authorization": f"Bearer {config.api_token}"})
            assert api.status_code == 200, api.text
            for path in ("/", "/live"):
                assert client.get(path).status_code == 200, path
            engine.run_once(NOW + timedelta(hours=1))

        try:
            check()
        finally:
            store.close()
