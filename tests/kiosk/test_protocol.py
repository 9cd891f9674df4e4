"""Protocol v1: round trips, and every malformed message rejected by field."""

import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kiosk import protocol
from kiosk.protocol import (
    Ack,
    ProtocolError,
    Rating,
    Status,
    decode_batch,
    encode_batch,
    parse_topic,
    topic,
)

identifiers = st.from_regex(r"\A[a-z0-9][a-z0-9-]{0,20}\Z")
moments = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=9)),
                               timezone(timedelta(hours=-5, minutes=-30))]),
)
ratings = st.builds(
    Rating,
    id=st.uuids(version=4).map(str),
    seq=st.integers(1, 2**63 - 1),
    score=st.sampled_from(protocol.SCORES),
    at=moments.map(protocol.format_timestamp),
    clock_synced=st.booleans(),
    reason=st.none() | st.sampled_from(protocol.DEFAULT_REASONS),
    age_group=st.none() | st.sampled_from(protocol.AGE_GROUPS),
    lang=st.sampled_from(["ko", "en", "zh", "vi", "ja", "zh-hans"]),
    input=st.sampled_from(protocol.INPUTS),
)


def a_rating(**changes):
    fields = dict(id=str(uuid.uuid4()), seq=1, score=5, at="2026-11-27T10:15:02.417+09:00",
                  clock_synced=True, reason=None, age_group=None, lang="ko", input="touch")
    fields.update(changes)
    return fields


@given(identifiers, identifiers, st.lists(ratings, max_size=20))
def test_batch_round_trip(site, terminal, items):
    payload = encode_batch(site, terminal, [r.encode() for r in items])
    decoded = decode_batch(payload)
    assert (decoded.site, decoded.terminal) == (site, terminal)
    assert decoded.ratings == tuple(items)
    assert decoded.rejected == ()


def test_contract_example_decodes():
    payload = json.dumps({
        "v": 1, "site": "gangnam-office", "terminal": "counter-03",
        "ratings": [{"id": "5f0c1d2e-8a4b-4c1e-9d7a-0b1c2d3e4f50", "seq": 1042, "score": 5,
                     "at": "2026-11-27T10:15:02.417+09:00", "clock_synced": True,
                     "reason": None, "age_group": None, "lang": "ko", "input": "touch"}]}).encode()
    batch = decode_batch(payload)
    assert batch.ratings[0].seq == 1042
    assert batch.ratings[0].moment == datetime(2026, 11, 27, 1, 15, 2, 417000, tzinfo=timezone.utc)


@given(st.lists(st.uuids().map(str), max_size=5), st.lists(st.uuids().map(str), max_size=5),
       st.lists(st.tuples(st.uuids().map(str), st.text(max_size=30)), max_size=5))
def test_ack_round_trip(accepted, duplicate, rejected):
    ack = Ack(tuple(accepted), tuple(duplicate), tuple(rejected))
    assert Ack.decode(ack.encode()) == ack
    assert ack.ids == {*accepted, *duplicate, *(i for i, _ in rejected)}


@given(st.lists(st.text(max_size=12), max_size=4), st.lists(st.text(max_size=12), max_size=4),
       st.lists(st.tuples(st.text(max_size=12), st.text(max_size=30)), max_size=4))
def test_ack_encodes_as_compact_json_does(accepted, duplicate, rejected):
    # Ack.encode writes its text itself (it is sent for every message): byte for byte
    # what json.dumps makes of it, whatever the text (quotes, controls, U+2028, Hangul).
    ack = Ack(tuple(accepted), tuple(duplicate), tuple(rejected))
    expected = json.dumps({"v": 1, "accepted": accepted, "duplicate": duplicate,
                           "rejected": [{"id": i, "error": e} for i, e in rejected]},
                          ensure_ascii=False, separators=(",", ":"))
    try:
        encoded = expected.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: neither can send it
        with pytest.raises(UnicodeEncodeError):
            ack.encode()
        return
    assert ack.encode() == encoded


def test_decoded_ratings_are_the_ratings_sent():
    # decode_batch builds valid Ratings without their __init__: equal in every field,
    # the optional ones left out of the JSON at their defaults.
    sent = [Rating("5f0c1d2e-8a4b-4c1e-9d7a-0b1c2d3e4f50", 7, 2, "2026-11-27T10:15:02.417+09:00", False),
            Rating("5f0c1d2e-8a4b-4c1e-9d7a-0b1c2d3e4f51", 8, 5, "2026-11-27T10:15:03Z", True, reason="parking",
                   age_group="30s", lang="en", input="keypad", chain="ab" * 32)]
    items = [sent[0].to_dict(), sent[1].to_dict()]
    del items[0]["reason"], items[0]["age_group"]
    batch = decode_batch(json.dumps({"v": 1, "site": "s", "terminal": "t", "ratings": items}).encode())
    assert batch.ratings == tuple(sent) and batch.rejected == ()
    assert [vars(r) == vars(s) for r, s in zip(batch.ratings, sent)] == [True, True]
    assert batch == protocol.DecodedBatch("s", "t", tuple(sent), ())


@given(identifiers, identifiers, st.sampled_from(protocol.TERMINAL_TOPIC_KINDS))
def test_topic_round_trip(site, terminal, kind):
    assert parse_topic(topic(site, terminal, kind)) == (site, terminal, kind)


@pytest.mark.parametrize("bad, field", [
    ("onetap/v1/site/term", "topic"),
    ("onetap/v2/site/term/ratings", "topic"),
    ("onetap/v1/Site/term/ratings", "topic.site"),
    ("onetap/v1/site/-term/ratings", "topic.terminal"),
    ("onetap/v1/site/term/rating", "topic.kind"),
    ("onetap/v1/site/term/ratings/x", "topic"),
])
def test_bad_topics_name_the_part(bad, field):
    with pytest.raises(ProtocolError) as caught:
        parse_topic(bad)
    assert caught.value.field == field


@pytest.mark.parametrize("change, field", [
    ({"id": "not-a-uuid"}, "id"),
    ({"id": "5F0C1D2E-8A4B-4C1E-9D7A-0B1C2D3E4F50"}, "id"),
    ({"seq": 0}, "seq"),
    ({"seq": True}, "seq"),
    ({"seq": 1.0}, "seq"),
    ({"score": 6}, "score"),
    ({"score": "5"}, "score"),
    ({"at": "2026-11-27T10:15:02"}, "at"),
    ({"at": "2026-13-27T10:15:02+09:00"}, "at"),
    ({"at": "yesterday"}, "at"),
    ({"clock_synced": 1}, "clock_synced"),
    ({"reason": "Wait Time"}, "reason"),
    ({"age_group": "teen"}, "age_group"),
    ({"lang": "korean!"}, "lang"),
    ({"input": "voice"}, "input"),
    ({"extra": 1}, "extra"),
])
def test_bad_rating_fields_are_named(change, field):
    item = a_rating(**change)
    payload = json.dumps({"v": 1, "site": "s", "terminal": "t",
                          "ratings": [a_rating(), item]}).encode()
    batch = decode_batch(payload)
    assert len(batch.ratings) == 1, "the good rating survives its bad neighbour"
    [rejected] = batch.rejected
    assert rejected.error.startswith(f"ratings[1].{field}:")
    assert json.loads(rejected.raw) == item


def test_rating_with_missing_field_is_named():
    item = a_rating()
    del item["score"]
    [rejected] = decode_batch(json.dumps(
        {"v": 1, "site": "s", "terminal": "t", "ratings": [item]}).encode()).rejected
    assert rejected.error == "ratings[0].score: is missing"
    assert rejected.id == item["id"]


def test_reason_outside_site_config_is_rejected():
    payload = encode_batch("s", "t", [Rating(**a_rating(reason="parking")).encode()])
    assert decode_batch(payload).rejected == ()
    [rejected] = decode_batch(payload, reasons=protocol.DEFAULT_REASONS).rejected
    assert "not configured" in rejected.error


@pytest.mark.parametrize("payload, field", [
    (b"\xff\xfe", "batch"),
    (b"{", "batch"),
    (b"[]", "batch"),
    (b'{"site":"s","terminal":"t","ratings":[]}', "v"),
    (b'{"v":2,"site":"s","terminal":"t","ratings":[]}', "v"),
    (b'{"v":1,"site":"S","terminal":"t","ratings":[]}', "site"),
    (b'{"v":1,"site":"s","ratings":[]}', "terminal"),
    (b'{"v":1,"site":"s","terminal":"t","ratings":{}}', "ratings"),
    (b'{"v":1,"site":"s","terminal":"t","ratings":[],"x":1}', "x"),
])
def test_bad_envelopes_are_named(payload, field):
    with pytest.raises(ProtocolError) as caught:
        decode_batch(payload)
    assert caught.value.field == field


def test_batch_limits():
    many = [Rating(**a_rating(seq=i + 1)).encode() for i in range(protocol.MAX_BATCH_RATINGS + 1)]
    with pytest.raises(ProtocolError):
        encode_batch("s", "t", many)
    payload = ('{"v":1,"site":"s","terminal":"t","ratings":[' + ",".join(many) + "]}").encode()
    with pytest.raises(ProtocolError) as caught:
        decode_batch(payload)
    assert caught.value.field in ("ratings", "batch")
    with pytest.raises(ProtocolError) as caught:
        decode_batch(b" " * (protocol.MAX_BATCH_BYTES + 1))
    assert caught.value.field == "batch"


@settings(max_examples=300)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_arbitrary_bytes_never_raise_anything_but_protocol_error(payload):
    for decode in (decode_batch, Ack.decode, Status.decode):
        try:
            decode(payload)
        except ProtocolError:
            pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300)
@given(st.dictionaries(st.sampled_from(["v", "site", "terminal", "ratings", "x"]), json_values))
def test_arbitrary_json_envelopes_are_decoded_or_named(obj):
    try:
        batch = decode_batch(json.dumps(obj).encode())
    except ProtocolError as exc:
        assert exc.field and exc.reason
    else:
        assert len(batch.ratings) + len(batch.rejected) == len(obj["ratings"])


def test_status_online_and_offline():
    online = Status("online", {"at": "2026-11-27T10:15:02.417+09:00", "version": "0.1.0",
                               "backlog": 3, "oldest_pending_at": None, "seq": 7,
                               "clock_synced": False, "uptime_s": 12.5})
    assert Status.decode(online.encode()) == online
    assert Status.decode(protocol.OFFLINE_STATUS).state == "offline"
    with pytest.raises(ProtocolError) as caught:
        Status.decode(b'{"v":1,"state":"online","at":"2026-11-27T10:15:02+09:00","seq":1}')
    assert caught.value.field == "backlog"
    with pytest.raises(ProtocolError) as caught:
        Status.decode(b'{"v":1,"state":"online","at":"x","seq":1,"backlog":0}')
    assert caught.value.field == "at"
    with pytest.raises(ProtocolError) as caught:
        Status.decode(b'{"v":1,"state":"online","at":"2026-11-27T10:15:02+09:00","seq":1,"backlog":-1}')
    assert caught.value.field == "backlog"


def test_rating_constructor_validates():
    with pytest.raises(ProtocolError):
        Rating(**a_rating(score=0))


def test_timestamps_keep_offset_and_accept_z_and_nanoseconds():
    moment = datetime(2026, 11, 27, 10, 15, 2, 417000, tzinfo=timezone(timedelta(hours=9)))
    text = protocol.format_timestamp(moment)
    assert text == "2026-11-27T10:15:02.417+09:00"
    assert protocol.parse_timestamp("at", text) == moment
    assert protocol.parse_timestamp("at", "2026-11-27T01:15:02.417123456Z") == \
        datetime(2026, 11, 27, 1, 15, 2, 417123, tzinfo=timezone.utc)
    with pytest.raises(ValueError):
        protocol.format_timestamp(datetime(2026, 1, 1))


# -- the sanitising boundary ---------------------------------------------------

RECEIVED = datetime(2026, 11, 27, 1, 30, tzinfo=timezone.utc)


def _rating_dict(**change):
    good = Rating(id=str(uuid.uuid4()), seq=1, score=5, at="2026-11-27T10:15:02.417+09:00",
                  clock_synced=True).to_dict()
    good.update(change)
    return good


def _batch_text(items):
    return ('{"v":1,"site":"s1","terminal":"t1","ratings":[' + ",".join(items) + "]}").encode()


@pytest.mark.parametrize("at", ["9999-12-31T23:59:59Z", "0001-01-01T00:00:00+14:00",
                                "2019-12-31T23:59:59Z", "2026-11-28T01:30:01Z"])
def test_times_outside_the_window_are_clock_suspect_and_never_overflow(at):
    # Valid RFC 3339: accepted by decoding, but flagged for the server to count by receipt.
    decoded = decode_batch(encode_batch("s1", "t1", [json.dumps(_rating_dict(at=at))]))
    assert decoded.rejected == () and len(decoded.ratings) == 1
    assert protocol.clock_suspect(at, RECEIVED)
    assert not protocol.in_time_window(protocol.parse_timestamp("at", at), RECEIVED)


@pytest.mark.parametrize("at", ["2020-01-01T00:00:00Z", "2026-11-27T10:15:02+09:00",
                                "2026-11-28T01:30:00Z"])
def test_times_inside_the_window_are_not_suspect(at):
    assert not protocol.clock_suspect(at, RECEIVED)


def test_non_ascii_digits_are_not_a_time():
    with pytest.raises(ProtocolError):
        protocol.parse_timestamp("at", "٢٠٢٦-11-27T10:15:02Z")


@pytest.mark.parametrize("field_text", [
    '"lang":"\\ud800"', '"lang":"k\\u0000"', '"reason":"a\\nb"', '"\\ud800x":1', '"lang":"\\udfff"',
])
def test_lone_surrogates_and_control_characters_reject_only_their_rating(field_text):
    good = _rating_dict()
    bad = json.dumps(_rating_dict())[:-1] + "," + field_text + "}"
    decoded = decode_batch(_batch_text([json.dumps(good), bad, json.dumps(_rating_dict())]))
    assert [r.id for r in decoded.ratings][0] == good["id"] and len(decoded.ratings) == 2
    (rejected,) = decoded.rejected
    # The error and the raw bytes can always be encoded, stored and Acked.
    rejected.error.encode("utf-8")
    assert rejected.error.isprintable()
    assert isinstance(rejected.raw, bytes)
    protocol.Ack(rejected=((rejected.id or good["id"], rejected.error),)).encode()


@pytest.mark.parametrize("field", ["seq", "score"])
def test_a_five_thousand_digit_integer_rejects_only_its_rating(field):
    huge = "9" * 5000
    bad = json.dumps(_rating_dict())
    bad = bad.replace(f'"{field}": {json.loads(bad)[field]}', f'"{field}": {huge}')
    assert huge in bad
    decoded = decode_batch(_batch_text([json.dumps(_rating_dict()), bad]))
    assert len(decoded.ratings) == 1
    (rejected,) = decoded.rejected
    assert rejected.error.startswith(f"ratings[1].{field}: <number of 5000 digits>")
    assert b"5000 digits" in rejected.raw


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_are_rejected_with_their_field(constant):
    bad = json.dumps(_rating_dict()).replace('"score": 5', f'"score": {constant}')
    decoded = decode_batch(_batch_text([bad]))
    assert decoded.ratings == () and "score" in decoded.rejected[0].error
    with pytest.raises(ProtocolError, match="uptime_s"):
        Status.decode(('{"v":1,"state":"online","at":"2026-11-27T10:00:00Z","backlog":0,"seq":1,'
                       f'"uptime_s":{constant}}}').encode())


def _status(**fields):
    body = {"v": 1, "state": "online", "at": "2026-11-27T10:00:00+09:00", "backlog": 0, "seq": 3}
    body.update(fields)
    return json.dumps(body).encode()


@pytest.mark.parametrize("field", ["oldest_pending_at", "last_tap_at", "last_ack_at", "at"])
@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59Z"])
def test_status_times_outside_the_window_are_dropped_and_named(field, value):
    status = Status.decode(_status(**{field: value}), now=RECEIVED)
    assert status.fields[field] is None
    assert status.fields[protocol.CLOCK_SUSPECT_FIELDS] == [field]
    # Without the server's time (the kiosk's own decoding) nothing is changed.
    assert Status.decode(_status(**{field: value})).fields[field] == value


@pytest.mark.parametrize("text", ['"\\ud800"', '"1.0\\u0007"', '"' + "v" * 201 + '"'])
def test_status_version_with_surrogates_control_characters_or_too_long_is_rejected(text):
    payload = _status()[:-1] + b',"version":' + text.encode() + b"}"
    with pytest.raises(ProtocolError, match="version"):
        Status.decode(payload)


def test_status_error_text_is_escaped_and_shortened_not_rejected():
    payload = _status()[:-1] + b',"error":"disk\\nfull \\ud800' + b"x" * 500 + b'"}'
    error = Status.decode(payload).fields["error"]
    assert error.startswith("disk\\nfull \\ud800") and len(error) < 260 and error.isprintable()


@pytest.mark.parametrize("field,value", [("backlog", 2**63), ("ignored_taps", "9" * 5000),
                                         ("disk_free_mb", -1), ("uptime_s", "1e308")])
def test_status_numbers_are_bounded(field, value):
    payload = _status()[:-1] + f',"{field}":{value}}}'.encode()
    with pytest.raises(ProtocolError, match=field):
        Status.decode(payload)


def test_bound_status_fields_drops_what_is_invalid_and_never_raises():
    stored = {"at": "2026-11-27T10:00:00+09:00", "version": "\ud800", "backlog": -3,
              "oldest_pending_at": "0001-01-01T00:00:00+14:00", "unknown": 1, "seq": 4,
              "error": "a\nb"}
    bounded = protocol.bound_status_fields(stored, RECEIVED)
    assert bounded == {"at": "2026-11-27T10:00:00+09:00", "oldest_pending_at": None, "seq": 4,
                       "error": "a\\nb", protocol.CLOCK_SUSPECT_FIELDS: ["oldest_pending_at"]}


@settings(max_examples=300, deadline=None)
@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20))
def test_any_status_value_is_bounded_or_named(value):
    payload = json.dumps({"v": 1, "state": "online", "at": "2026-11-27T10:00:00Z",
                          "backlog": 0, "seq": 1, "version": value}).encode()
    try:
        status = Status.decode(payload, now=RECEIVED)
    except ProtocolError as exc:
        str(exc).encode("utf-8")
        return
    json.dumps(status.fields, ensure_ascii=False).encode("utf-8")


def test_a_status_larger_than_16_kib_is_rejected_unread():
    payload = _status()[:-1] + b',"error":"' + b"e" * protocol.MAX_STATUS_BYTES + b'"}'
    with pytest.raises(ProtocolError, match="exceeds"):
        Status.decode(payload)


# -- audit chain ------------------------------------------------------------------

chains = st.binary(min_size=32, max_size=32).map(bytes.hex)
signatures = st.binary(min_size=64, max_size=64).map(lambda b: __import__("base64").b64encode(b).decode())


@given(ratings, chains)
def test_canonical_bytes_ignore_the_chain_and_key_order(rating, chain):
    import dataclasses

    chained = dataclasses.replace(rating, chain=chain)
    shuffled = dict(reversed(list(rating.to_dict().items())))
    assert protocol.canonical_rating(chained) == protocol.canonical_rating(rating)
    assert protocol.canonical_rating(shuffled) == protocol.canonical_rating(rating)
    assert protocol.canonical_rating(rating).isascii()
    assert json.loads(protocol.canonical_rating(rating)) == [
        rating.to_dict()[name] for name in protocol.CANONICAL_FIELDS]


@given(ratings, chains, st.sampled_from(["score", "reason", "age_group", "at", "seq", "lang"]))
def test_changing_any_field_changes_the_chain(rating, previous, name):
    import dataclasses

    other = {"score": rating.score % 5 + 1, "seq": rating.seq % (2**63 - 2) + 1,
             "reason": "other" if rating.reason != "other" else None,
             "age_group": "30s" if rating.age_group != "30s" else None,
             "at": "2021-02-03T04:05:06.007+09:00" if rating.at != "2021-02-03T04:05:06.007+09:00"
             else "2021-02-03T04:05:06.008+09:00",
             "lang": "en" if rating.lang != "en" else "ko"}[name]
    changed = dataclasses.replace(rating, **{name: other})
    assert protocol.chain_next(previous, changed) != protocol.chain_next(previous, rating)
    assert protocol.is_chain(protocol.chain_next(previous, rating))


@given(identifiers, identifiers, st.lists(ratings, min_size=1, max_size=10), chains, signatures)
def test_chain_and_head_sig_round_trip(site, terminal, items, chain, signature):
    import dataclasses

    items = [dataclasses.replace(r, chain=chain) for r in items]
    payload = encode_batch(site, terminal, [r.encode() for r in items], signature)
    batch = decode_batch(payload)
    assert batch.head_sig == signature
    assert batch.ratings == tuple(items)
    assert len(payload) - sum(len(r.encode().encode()) for r in items) - (len(items) - 1) \
        == protocol.batch_overhead(site, terminal)


def test_unchained_rating_encodes_as_before():
    rating = Rating(str(uuid.uuid4()), 1, 5, "2026-01-02T09:00:00.000+09:00", True)
    assert "chain" not in json.loads(rating.encode())
    assert decode_batch(encode_batch("s", "t", [rating.encode()])).head_sig is None


@pytest.mark.parametrize("bad", ["A" * 63, "g" * 64, "A" * 64, "a" * 65, 7, ""])
def test_bad_chain_is_named(bad):
    rating = dict(Rating(str(uuid.uuid4()), 1, 5, "2026-01-02T09:00:00.000+09:00", True).to_dict(), chain=bad)
    batch = decode_batch(json.dumps({"v": 1, "site": "s", "terminal": "t", "ratings": [rating]}).encode())
    assert not batch.ratings and "ratings[0].chain" in batch.rejected[0].error


@pytest.mark.parametrize("bad", ["A" * 88, "A" * 86 + "=", "*" * 86 + "==", "A" * 84 + "====",
                                 __import__("base64").b64encode(b"x" * 63).decode(), 5])
def test_bad_head_sig_refuses_the_batch(bad):
    payload = json.dumps({"v": 1, "site": "s", "terminal": "t", "head_sig": bad, "ratings": []}).encode()
    with pytest.raises(ProtocolError) as info:
        decode_batch(payload)
    assert info.value.field == "head_sig"


def test_seed_depends_on_site_terminal_and_key():
    seeds = {protocol.default_chain_seed("s", "t"), protocol.default_chain_seed("s", "u"),
             protocol.default_chain_seed("s2", "t"), protocol.default_chain_seed("s", "t", b"k" * 32)}
    assert len(seeds) == 4 and all(protocol.is_chain(s) for s in seeds)
    assert protocol.default_chain_seed("s", "t") == protocol.default_chain_seed("s", "t")


def test_readable_rating_ids_of_a_broken_batch():
    rating_id = str(uuid.uuid4())
    payload = json.dumps({"v": 9, "ratings": [{"id": rating_id, "score": 99}, {"id": "nope"}, 5,
                                              {"id": rating_id}]}).encode()
    assert protocol.readable_rating_ids(payload) == [rating_id]
    assert protocol.readable_rating_ids(b"[]") == [] and protocol.readable_rating_ids(b"\xff") == []
    assert protocol.readable_rating_ids(b'{"ratings": {"id": "x"}}') == []


def test_site_alerts_round_trip_and_rejections():
    alert = {"pk": 3, "site": "gangnam", "terminal": "c1", "kind": "clock", "message": "시계",
             "raised_at": "2026-11-27T10:30:00.000+09:00", "cleared_at": None, "acked_at": None,
             "acked_by": None}
    stored_row = {**alert, "internal_column": 1}  # a store row: only the protocol's fields travel
    message = protocol.SiteAlerts("gangnam", (stored_row,))
    decoded = protocol.SiteAlerts.decode(message.encode())
    assert decoded == protocol.SiteAlerts("gangnam", (alert,))
    assert protocol.SiteAlerts.decode(protocol.SiteAlerts("gangnam").encode()).alerts == ()
    bad = {
        b'{"v":1,"site":"gangnam"}': "alerts",
        b'{"v":2,"site":"gangnam","alerts":[]}': "v",
        b'{"v":1,"site":"Gangnam","alerts":[]}': "site",
        b'{"v":1,"site":"gangnam","alerts":[],"extra":1}': "extra",
        b'{"v":1,"site":"gangnam","alerts":[1]}': "alerts[0]",
        json.dumps({"v": 1, "site": "gangnam", "alerts": [{**alert, "site": "other"}]}).encode(): "alerts[0].site",
        json.dumps({"v": 1, "site": "gangnam", "alerts": [{**alert, "x": 1}]}).encode(): "alerts[0].x",
        json.dumps({"v": 1, "site": "gangnam", "alerts": [{**alert, "kind": None}]}).encode(): "alerts[0]",
    }
    for payload, field in bad.items():
        with pytest.raises(ProtocolError) as error:
            protocol.SiteAlerts.decode(payload)
        assert error.value.field == field, payload


def test_is_open_on_parsed_hours():
    hours = protocol.parse_hours("hours", ["mon-fri 09:00-12:00 13:00-18:00"])
    thursday = datetime(2026, 11, 26, 9, 0)
    assert protocol.is_open(thursday, hours)
    assert not protocol.is_open(thursday.replace(hour=12, minute=30), hours)
    assert not protocol.is_open(thursday.replace(hour=18), hours)
    assert not protocol.is_open(thursday + timedelta(days=2), hours)  # Saturday
    assert protocol.is_open(thursday.replace(hour=3), ())  # no hours: always open


def test_a_hashed_maintenance_pin_accepts_its_pin_only_and_a_plain_one_still_works():
    from kiosk.protocol import hash_pin, is_pin_setting, pin_matches

    stored = hash_pin("482913", iterations=1000)
    assert stored.startswith("pbkdf2_sha256$1000$") and "482913" not in stored
    assert is_pin_setting(stored) and pin_matches("482913", stored)
    assert not pin_matches("482914", stored) and not pin_matches("", stored)
    assert hash_pin("482913", iterations=1000) != stored  # salted
    assert is_pin_setting("2468") and pin_matches("2468", "2468") and not pin_matches("2469", "2468")
    for bad in ("12", "abcd", "pbkdf2_sha256$1000$zz$00", stored + "0"):
        assert not is_pin_setting(bad)


def test_format_timestamp_keeps_each_moments_own_offset_for_equal_moments():
    # Equal instants in two zones compare (and hash) equal: nothing may conflate them.
    from datetime import datetime, timedelta, timezone

    from kiosk.protocol import format_timestamp

    utc = datetime(2026, 1, 1, 1, 0, tzinfo=timezone.utc)
    kst = utc.astimezone(timezone(timedelta(hours=9)))
    assert format_timestamp(utc) == "2026-01-01T01:00:00.000+00:00"
    assert format_timestamp(kst) == "2026-01-01T10:00:00.000+09:00"
