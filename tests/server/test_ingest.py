"""Ingest: every message stored, counted as duplicate or quarantined; Acks name what they can."""

import json
import uuid
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kiosk.protocol import OFFLINE_STATUS, Ack, Rating, Status, encode_batch, topic
from server.errors import StoreError
from server.ingest import Ingest
from tests.backends import execute, memory_store, tuples

NOW = datetime(2026, 11, 27, 1, 30, tzinfo=timezone.utc)
RATINGS_T1 = topic("s1", "t1", "ratings")


def rating(seq=1, score=4, **extra):
    return Rating(id=str(uuid.uuid4()), seq=seq, score=score,
                  at="2026-11-27T10:15:02.417+09:00", clock_synced=True, **extra)


def batch(ratings, site="s1", terminal="t1"):
    return encode_batch(site, terminal, [r.encode() for r in ratings])


def make_ingest(store=None, **kw):
    store = store or memory_store()
    return Ingest(store, now=lambda: NOW, **kw), store


def test_good_batch_is_stored_and_acked(store):
    ingest, store = make_ingest(store)
    ratings = [rating(seq=i) for i in range(1, 6)]
    acks = ingest.handle([(RATINGS_T1, batch(ratings))])
    assert acks == [(topic("s1", "t1", "ack"), Ack(accepted=tuple(r.id for r in ratings)))]
    assert store.counts()["ratings"] == 5
    assert ingest.counters.ratings_accepted == 5 and ingest.counters.batches == 1
    assert store.terminals()[0]["last_seen"] is not None


def test_resent_batch_is_all_duplicate(store):
    ingest, store = make_ingest(store)
    ratings = [rating(seq=i) for i in range(1, 4)]
    ingest.handle([(RATINGS_T1, batch(ratings))])
    (_, ack), = ingest.handle([(RATINGS_T1, batch(ratings))])
    assert ack == Ack(duplicate=tuple(r.id for r in ratings))
    assert store.counts()["ratings"] == 3 and ingest.counters.ratings_duplicate == 3


def test_same_batch_twice_in_one_call(store):
    ingest, store = make_ingest(store)
    ratings = [rating(seq=i) for i in range(1, 3)]
    acks = ingest.handle([(RATINGS_T1, batch(ratings)), (RATINGS_T1, batch(ratings))])
    assert [a.accepted for _, a in acks] == [tuple(r.id for r in ratings), ()]
    assert [a.duplicate for _, a in acks] == [(), tuple(r.id for r in ratings)]
    assert store.counts()["ratings"] == 2


def test_many_terminals_in_one_commit_old_new_and_repeated(store):
    ingest, store = make_ingest(store)
    old = [rating(seq=1), rating(seq=2)]
    ingest.handle([(RATINGS_T1, batch(old))])
    new, other = [rating(seq=3)], [rating(seq=1)]
    acks = ingest.handle([
        (RATINGS_T1, batch(old + new)),
        (topic("s1", "t2", "ratings"), batch(other, terminal="t2")),
        (RATINGS_T1, batch(new)),
    ])
    assert [topic_ for topic_, _ in acks] == [topic("s1", "t1", "ack"), topic("s1", "t2", "ack"),
                                             topic("s1", "t1", "ack")]
    assert [set(a.accepted) for _, a in acks] == [{new[0].id}, {other[0].id}, set()]
    assert [set(a.duplicate) for _, a in acks] == [{r.id for r in old}, set(), {new[0].id}]
    assert store.counts()["ratings"] == 4
    assert {t["terminal"] for t in store.terminals()} == {"t1", "t2"}


def test_one_bad_rating_does_not_sink_the_others(store):
    ingest, store = make_ingest(store)
    good = [rating(seq=1), rating(seq=3)]
    bad = dict(rating(seq=2).to_dict(), score=9)
    payload = encode_batch("s1", "t1", [good[0].encode(), json.dumps(bad), good[1].encode()])
    (_, ack), = ingest.handle([(RATINGS_T1, payload)])
    assert set(ack.accepted) == {g.id for g in good}
    assert [i for i, _ in ack.rejected] == [bad["id"]]
    assert "score" in ack.rejected[0][1]
    q = store.quarantined()
    assert len(q) == 1 and q[0]["rating_id"] == bad["id"] and json.loads(q[0]["payload"])["score"] == 9


def test_reason_outside_the_sites_list_is_rejected(store):
    ingest, store = make_ingest(store, reasons_for_site=lambda site: ("parking",) if site == "s1" else ())
    ok, off = rating(seq=1, reason="parking"), rating(seq=2, reason="wait_time")
    (_, ack), = ingest.handle([(RATINGS_T1, batch([ok, off]))])
    assert ack.accepted == (ok.id,) and [i for i, _ in ack.rejected] == [off.id]


def test_a_sites_reasons_are_read_again_for_each_message(store):
    # Ingest keeps the reasons as a set per site, made again when the site's list changes.
    reasons = {"s1": ("parking",)}
    ingest, store = make_ingest(store, reasons_for_site=lambda site: reasons[site])
    first, second = rating(seq=1, reason="wait_time"), rating(seq=2, reason="wait_time")
    (_, ack), = ingest.handle([(RATINGS_T1, batch([first]))])
    assert [i for i, _ in ack.rejected] == [first.id]
    reasons["s1"] = ("parking", "wait_time")
    (_, ack), = ingest.handle([(RATINGS_T1, batch([second]))])
    assert ack.accepted == (second.id,)


def test_topic_payload_mismatch_quarantines_the_whole_batch(store):
    ingest, store = make_ingest(store)
    ratings = [rating(seq=1), rating(seq=2)]
    payload = batch(ratings, terminal="t2")
    (ack_topic, ack), = ingest.handle([(RATINGS_T1, payload)])
    assert ack_topic == topic("s1", "t1", "ack")
    assert ack.accepted == () and [i for i, _ in ack.rejected] == [r.id for r in ratings]
    assert "topic" in ack.rejected[0][1]
    q = store.quarantined()
    assert len(q) == 1 and q[0]["payload"] == payload and q[0]["topic"] == RATINGS_T1
    assert store.counts()["ratings"] == 0


def test_broken_envelope_names_readable_ids(store):
    ingest, store = make_ingest(store)
    r = rating()
    payload = json.dumps({"v": 2, "site": "s1", "terminal": "t1", "ratings": [r.to_dict()]}).encode()
    (_, ack), = ingest.handle([(RATINGS_T1, payload)])
    assert [i for i, _ in ack.rejected] == [r.id] and "version" in ack.rejected[0][1]
    assert store.quarantine_count() == 1


def test_unreadable_payload_is_quarantined_without_ack(store):
    ingest, store = make_ingest(store)
    assert ingest.handle([(RATINGS_T1, b"\xff\xfe garbage")]) == []
    assert store.quarantined()[0]["payload"] == b"\xff\xfe garbage"


@pytest.mark.parametrize("bad_topic", [
    "onetap/v1/s1/t1/ack", "onetap/v1/s1/t1/config", "onetap/v1/S1/t1/ratings",
    "onetap/v2/s1/t1/ratings", "x", "", "onetap/v1/s1/t1/ratings/extra",
])
def test_wrong_topics_are_quarantined(bad_topic, store):
    ingest, store = make_ingest(store)
    payload = batch([rating()])
    assert ingest.handle([(bad_topic, payload)]) == []
    q = store.quarantined()
    assert len(q) == 1 and q[0]["topic"] == bad_topic and q[0]["payload"] == payload
    assert store.counts()["ratings"] == 0


def test_status_and_last_will(store):
    ingest, store = make_ingest(store)
    status = Status("online", {"at": "2026-11-27T10:00:00.000+09:00", "backlog": 3, "seq": 9})
    assert ingest.handle([(topic("s1", "t1", "status"), status.encode())]) == []
    assert store.terminals()[0]["state"] == "online"
    ingest.handle([(topic("s1", "t1", "status"), OFFLINE_STATUS)])
    assert store.terminals()[0]["state"] == "offline"
    ingest.handle([(topic("s1", "t1", "status"), b'{"v":1,"state":"asleep"}')])
    assert store.quarantine_count() == 1 and ingest.counters.statuses == 2


def test_store_failure_raises_and_commits_nothing(store):
    ingest = Ingest(store, now=lambda: NOW)
    ingest.handle([(RATINGS_T1, batch([rating()]))])
    execute(store, "DROP TABLE quarantine")
    with pytest.raises(StoreError):
        ingest.handle([(RATINGS_T1, batch([rating(seq=2)])), ("bad/topic", b"x")])
    assert tuples(store, "SELECT count(*) FROM ratings") == [(1,)]  # the good batch of the failed call is not kept
    assert ingest.counters.ratings_accepted == 1  # nor counted


# -- arbitrary input ------------------------------------------------------------

idents = st.sampled_from(["s1", "t1", "t2", "S1", "", "a/b", "+", "#"])
topics = st.one_of(
    st.builds(lambda s, t, k: f"onetap/v1/{s}/{t}/{k}", idents, idents,
              st.sampled_from(["ratings", "status", "ack", "config", "other"])),
    st.text(max_size=40),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def rating_dicts(draw):
    r = rating(seq=draw(st.integers(1, 5))).to_dict()
    if draw(st.booleans()):
        r["id"] = draw(st.sampled_from(FIXED_IDS))  # collide across messages
    if draw(st.booleans()):
        r[draw(st.sampled_from(list(r) + ["extra"]))] = draw(json_values)
    return r


FIXED_IDS = [str(uuid.UUID(int=i)) for i in range(1, 4)]


@st.composite
def payloads(draw):
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.binary(max_size=60))
    if kind == 1:
        return json.dumps(draw(json_values)).encode()
    envelope = {"v": 1, "site": draw(st.sampled_from(["s1", "s2", 3])),
                "terminal": draw(st.sampled_from(["t1", "t2"])),
                "ratings": draw(st.lists(rating_dicts(), max_size=5))}
    if kind == 3:
        envelope[draw(st.sampled_from(["v", "site", "ratings", "x"]))] = draw(json_values)
    return json.dumps(envelope).encode()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(topics, payloads()), min_size=1, max_size=6))
def test_arbitrary_messages_never_raise_and_all_are_accounted_for(messages):
    ingest, store = make_ingest()
    acks = ingest.handle(messages)
    c = ingest.counters
    assert c.messages == len(messages)
    stored = store.counts()["ratings"]
    assert c.ratings_accepted == stored
    # Every message left a trace: a stored rating, a duplicate, a status or a quarantine row.
    assert c.quarantined == store.quarantine_count()
    for topic_, payload in messages:
        quarantined = any(q["topic"] == topic_ for q in store.quarantined(10_000))
        parts = topic_.split("/")
        handled_status = parts[-1] == "status" and any(
            t["site"] == parts[2] and t["terminal"] == parts[3] for t in store.terminals())
        handled_batch = parts[-1] == "ratings" and len(parts) == 5 and (
            c.batches > 0)
        assert quarantined or handled_status or handled_batch, (topic_, payload)
    # Each rating id in an Ack sits in exactly one of the tables' outcomes.
    stored_ids = {row["id"] for row in store.db.query("SELECT id FROM ratings")}
    quarantined_ids = {q["rating_id"] for q in store.quarantined(10_000)}
    for _, ack in acks:
        assert set(ack.accepted) <= stored_ids
        assert set(ack.duplicate) <= stored_ids
        for rid, error in ack.rejected:
            assert error
        Ack.decode(ack.encode())  # every Ack is valid on the wire
    assert all(a.accepted or a.duplicate or a.rejected for _, a in acks)
    assert len(stored_ids) == stored
    assert quarantined_ids is not None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(topics, payloads()), min_size=1, max_size=6))
def test_each_message_and_each_rating_has_exactly_one_outcome(messages):
    ingest, store = make_ingest()
    for topic_, payload in messages:
        before = ingest.counters.snapshot()
        q_before = store.quarantine_count()
        ingest.handle([(topic_, payload)])
        d = {k: v - before[k] for k, v in ingest.counters.snapshot().items()}
        assert d["messages"] == 1
        assert d["quarantined"] == store.quarantine_count() - q_before
        rows = store.quarantined(d["quarantined"]) if d["quarantined"] else []
        whole = [r for r in rows if r["rating_id"] is None and r["payload"] == payload]
        if d["statuses"]:
            assert d["quarantined"] == 0
        elif d["batches"] and not whole:
            # The envelope was good: each of its ratings is accepted, duplicate or rejected.
            n = len(json.loads(payload)["ratings"])
            assert d["ratings_accepted"] + d["ratings_duplicate"] + d["ratings_rejected"] == n
            assert d["ratings_rejected"] == d["quarantined"]
        else:
            assert d["quarantined"] == 1 and rows[0]["topic"] == topic_
            assert d["ratings_accepted"] == d["ratings_duplicate"] == 0


def test_unknown_terminal_or_other_site_is_quarantined_and_rejected(store):
    known = {("s1", "t1")}
    ingest, store = make_ingest(store, is_known=lambda site, terminal: (site, terminal) in known)
    good, stranger, wrong_site = [rating(seq=1)], [rating(seq=1)], [rating(seq=2)]
    acks = dict(ingest.handle([
        (RATINGS_T1, batch(good)),
        (topic("s1", "t9", "ratings"), batch(stranger, terminal="t9")),
        # t1 is provisioned for s1 only: the same name on s2 is someone else.
        (topic("s2", "t1", "ratings"), batch(wrong_site, site="s2")),
        (topic("s1", "t9", "status"), Status("online", {"backlog": 0}).encode()),
    ]))
    assert acks[topic("s1", "t1", "ack")] == Ack(accepted=(good[0].id,))
    for ack_topic, ratings, site, name in ((topic("s1", "t9", "ack"), stranger, "s1", "t9"),
                                           (topic("s2", "t1", "ack"), wrong_site, "s2", "t1")):
        ack = acks[ack_topic]
        assert not ack.accepted and not ack.duplicate
        assert [i for i, _ in ack.rejected] == [ratings[0].id]
        assert f"{name!r} is not provisioned for site {site!r}" in ack.rejected[0][1]
    assert store.counts()["ratings"] == 1
    rows = {row["topic"]: row for row in store.quarantined()}
    assert set(rows) == {topic("s1", "t9", "ratings"), topic("s2", "t1", "ratings"),
                         topic("s1", "t9", "status")}
    assert rows[topic("s1", "t9", "ratings")]["payload"] == batch(stranger, terminal="t9")
    assert all("unknown terminal" in row["reason"] for row in rows.values())
    # Neither stranger shows up as a terminal.
    assert [(t["site"], t["terminal"]) for t in store.terminals()] == [("s1", "t1")]
    assert ingest.counters.ratings_rejected == 2 and ingest.counters.quarantined == 3
