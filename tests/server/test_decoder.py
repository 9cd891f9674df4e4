"""The server's batch decoder gives kiosk.protocol's verdict on valid and hostile batches, and the valid ones sooner."""

from __future__ import annotations

import base64
import functools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kiosk import protocol
from kiosk.protocol import ProtocolError
from server import decoder

REASONS = frozenset(("wait_time", "staff_attitude"))
CHAIN = "ab" * 32
SIG = base64.b64encode(bytes(range(64))).decode()


def a_rating(**changes) -> dict:
    fields = {"id": "0190f1c2-3d4e-7a5b-8c6d-7e8f90a1b2c3", "seq": 7, "score": 4,
              "at": "2026-11-27T10:15:02.417+09:00", "clock_synced": True, "reason": "wait_time",
              "age_group": "70plus", "lang": "ko", "input": "keypad", "chain": CHAIN}
    fields.update(changes)
    return {k: v for k, v in fields.items() if v is not _MISSING}


_MISSING = object()


def a_batch(ratings: list, **changes) -> bytes:
    envelope = {"v": 1, "site": "gangnam", "terminal": "counter-03", "ratings": ratings, **changes}
    return json.dumps({k: v for k, v in envelope.items() if v is not _MISSING}).encode()


def verdict(decode, payload, reasons):
    try:
        batch = decode(payload, reasons)
    except ProtocolError as exc:
        return ("error", str(exc))
    # The attributes themselves, not only the dataclass fields equality compares.
    return ("batch", batch, [vars(r) for r in batch.ratings])


def assert_same_verdict(payload, reasons=REASONS):
    expected = verdict(protocol.decode_batch, payload, reasons)
    # Both ways of checking the texts, whatever the payload's size would choose.
    for per_value in (True, False):
        assert verdict(functools.partial(decoder.decode_batch, per_value=per_value), payload, reasons) == expected


def test_a_valid_batch_is_decoded_without_kiosk_protocol(monkeypatch):
    payload = a_batch([a_rating(), a_rating(seq=8, reason=None, age_group=None, chain=_MISSING, input="touch")],
                      head_sig=SIG)
    expected = protocol.decode_batch(payload, REASONS)

    def refuse(*args):
        raise AssertionError("the valid batch took the slow way")

    monkeypatch.setattr(protocol, "decode_batch", refuse)
    for per_value in (None, True, False):
        decoded = decoder.decode_batch(payload, REASONS, per_value=per_value)
        assert decoded == expected and decoded.rejected == () and decoded.head_sig == SIG
        assert [vars(r) for r in decoded.ratings] == [vars(r) for r in expected.ratings]
        assert decoded.ratings[1].chain is None and decoded.ratings[1].reason is None


def test_a_small_batch_is_checked_value_by_value_and_a_large_one_together(monkeypatch):
    used = []
    for name in ("_PER_VALUE", "_PER_BATCH"):
        real = getattr(decoder, name)
        monkeypatch.setattr(decoder, name, type("Spy", (), {
            "decode": lambda self, payload, real=real, name=name: used.append(name) or real.decode(payload)})())
    small = a_batch([a_rating()])
    large = a_batch([a_rating(seq=seq, id=f"0190f1c2-3d4e-7a5b-8c6d-{seq:012x}") for seq in range(1, 40)])
    assert len(small) < decoder.PER_VALUE_BELOW <= len(large)
    assert len(decoder.decode_batch(small, REASONS).ratings) == 1
    assert len(decoder.decode_batch(large, REASONS).ratings) == 39
    assert used == ["_PER_VALUE", "_PER_BATCH"]


# Each field's hostile values: wrong types, edges of the ranges, forms the
# pattern admits but the calendar does not, and forms only the slow way rewrites.
HOSTILE = {
    "id": ["0190F1C2-3D4E-7A5B-8C6D-7E8F90A1B2C3", "0190f1c23d4e7a5b8c6d7e8f90a1b2c3", "", 5, None,
           "0190f1c2-3d4e-7a5b-8c6d-7e8f90a1b2c3\n", _MISSING,
           # Two valid ids in one value: the decoder joins a batch's ids with NUL to check them at once.
           "0190f1c2-3d4e-7a5b-8c6d-7e8f90a1b2c3\x000190f1c2-3d4e-7a5b-8c6d-7e8f90a1b2c4", "\x00"],
    "seq": [0, -1, 2**63 - 1, 2**63, 10**30, True, 1.0, "7", None, _MISSING],
    "score": [0, 1, 5, 6, True, False, 4.0, "4", None, _MISSING],
    "at": ["2026-02-30T10:00:00+09:00", "2026-13-01T10:00:00+09:00", "2026-11-27T24:00:00Z",
           "2026-11-27T10:15:60+09:00", "2026-11-27t10:15:02z", "2026-11-27T10:15:02.123456789+09:00",
           "2026-11-27T10:15:02.1+24:00", "2026-11-27T10:15:02+00:00", "2026-11-27 10:15:02+09:00",
           "2026-11-27T10:15:02", "0001-01-01T00:00:00Z", 20261127, None, _MISSING,
           "2026-11-27T10:15:02+09:00\x002026-11-27T10:15:03+09:00"],
    "clock_synced": [False, 1, 0, "true", None, _MISSING],
    "reason": ["staff_attitude", "other", "Wait_time", "w" * 33, "", 3, _MISSING, "wait_time\n"],
    "age_group": ["under20", "70PLUS", "80s", "", 70, _MISSING],
    "lang": ["en", "zh-hans", "kor", "EN", "e", "en_US", "ko-", "ko\n", "ko\x00", None, 1, _MISSING],
    "input": ["touch", "button", "voice", "", None, _MISSING],
    "chain": [None, CHAIN.upper(), "ab" * 31, 64, _MISSING, f"{CHAIN}\x00{CHAIN}", CHAIN + "\n"],
    "extra": ["x", None],
}


@settings(max_examples=400, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(sorted(HOSTILE)), st.integers(0, 20), max_size=3),
                min_size=1, max_size=4),
       st.sampled_from([REASONS, None]))
def test_hostile_ratings_get_kiosk_protocols_verdict(mutations, reasons):
    ratings = []
    for seq, mutation in enumerate(mutations, 1):
        changes = {field: HOSTILE[field][pick % len(HOSTILE[field])] for field, pick in mutation.items()}
        ratings.append(a_rating(**{"seq": seq, **changes}))
    assert_same_verdict(a_batch(ratings), reasons)


@pytest.mark.parametrize("payload", [
    a_batch([a_rating()], v=True), a_batch([a_rating()], v=1.0), a_batch([a_rating()], v=2),
    a_batch([a_rating()], v=_MISSING), a_batch([a_rating()], site="Gangnam"),
    a_batch([a_rating()], terminal=""), a_batch([a_rating()], terminal=_MISSING),
    a_batch([a_rating()], extra=1), a_batch({"0": a_rating()}), a_batch([a_rating()] * 501),
    a_batch([a_rating()], head_sig="A" * 88), a_batch([a_rating()], head_sig="*" * 88),
    a_batch([a_rating()], head_sig=SIG[:-4]), a_batch([a_rating()], head_sig=None),
    a_batch([]), a_batch(["rating"]), a_batch([None, a_rating()]),
    b'{"v":1,"site":"a","terminal":"b","ratings":[]} trailing', b"\xef\xbb\xbf" + a_batch([]),
    b'{"v":1,"site":"a","site":"b","terminal":"c","ratings":[]}',
    a_batch([a_rating()]).replace(b'"seq": 7', b'"seq": 7, "seq": 0'),
    a_batch([a_rating()]).replace(b'"seq": 7', b'"seq": 1e0'),
    a_batch([a_rating()]).replace(b'"ko"', b'"\\u006bo"'),
    a_batch([a_rating()]).replace(b'"ko"', b'"k\\ud800"'),
    a_batch([a_rating()]).replace(b'"seq": 7', b'"seq": NaN'),
    a_batch([a_rating()]).replace(b"keypad", b"keypad\xff"),
    b"[]", b"", b"{", "x" * 10 + "\u00e9", b"\x00" * (protocol.MAX_BATCH_BYTES + 1),
], ids=lambda p: repr(p[:60]))
def test_hostile_envelopes_get_kiosk_protocols_verdict(payload):
    if isinstance(payload, str):
        payload = payload.encode()
    assert_same_verdict(payload)


def many_ratings(n: int = 40, **odd) -> list[dict]:
    """*n* valid ratings as one kiosk writes them, the 17th changed by *odd*."""
    ratings = [a_rating(seq=seq, id=f"0190f1c2-3d4e-7a5b-8c6d-{seq:012x}",
                        at=f"2026-11-27T10:{seq % 60:02d}:0{seq % 10}.{seq % 1000:03d}+09:00",
                        chain=f"{seq:064x}") for seq in range(1, n + 1)]
    ratings[16].update(odd)
    return ratings


@pytest.mark.parametrize("odd", [
    {},  # every value the same shape: checked once, by its shape
    # A valid value of another shape: the batch is no longer one shape, and each is matched.
    {"at": "2026-11-27T01:17:07Z"}, {"at": "2026-11-27T10:17:07.1+09:00"},
    # Refused by a pattern, in a batch of otherwise one shape.
    {"id": "0190F1C2-3D4E-7A5B-8C6D-000000000011"}, {"id": "0190f1c2-3d4e-7a5b-8c6d-00000000001g"},
    {"id": "0190f1c2-3d4e-7a5b-8c6d-00000000001\uff11"},  # a full-width digit
    {"at": "2026-11-27T10:17:07.017+09:00\n"}, {"at": "2026-11-27T10:17:0\u0667.017+09:00"},
    {"at": "2026-11-27 10:17:07.017+09:00"}, {"at": "2026-02-30T10:17:07.017+09:00"},
    {"chain": "A" * 64}, {"chain": "0" * 63 + "\u0661"},
], ids=repr)
def test_a_large_batch_checked_by_its_shape_gets_kiosk_protocols_verdict(odd):
    payload = a_batch(many_ratings(**odd))
    assert len(payload) >= decoder.PER_VALUE_BELOW  # the batch's texts are checked together
    assert_same_verdict(payload)
    assert bool(decoder.decode_batch(payload, REASONS).rejected) == (odd not in ({}, {"at": "2026-11-27T01:17:07Z"},
                                                                                {"at": "2026-11-27T10:17:07.1+09:00"}))


@pytest.mark.parametrize("field, change", [
    ("id", str.upper), ("at", lambda at: at.replace("T", " ")), ("at", lambda at: at + "\n"),
    ("chain", lambda chain: chain[1:] + "-"),
], ids=["id upper-case", "at without T", "at with a newline", "chain with a hyphen"])
def test_a_large_batch_all_of_one_wrong_shape_is_refused(field, change):
    # One shape for the whole batch, and that shape is wrong: every rating refused.
    ratings = many_ratings()
    for rating in ratings:
        rating[field] = change(rating[field])
    payload = a_batch(ratings)
    assert len(decoder.decode_batch(payload, REASONS).rejected) == len(ratings)
    assert_same_verdict(payload)


@pytest.mark.parametrize("changes", [
    {"id": "0190f1c2-3d4e-7a5b-8c6d-7e8f90a1b2c3\x000190f1c2-3d4e-7a5b-8c6d-7e8f90a1b2c4"},
    {"at": "2026-11-27T10:15:02+09:00\x002026-11-27T10:15:03+09:00"},
    {"chain": f"{CHAIN}\x00{CHAIN}"},
    {"lang": "ko\x00"},
    {"reason": "wait_time\x00"},
], ids=lambda c: next(iter(c)))
def test_a_value_holding_nul_is_not_taken_for_two_valid_ones(changes):
    # The decoder checks a field of the whole batch in one match over NUL-joined values.
    payload = a_batch([a_rating(**changes), a_rating(seq=8, id="0190f1c2-3d4e-7a5b-8c6d-7e8f90a1b2c5")])
    assert decoder.decode_batch(payload, REASONS, per_value=False).rejected
    assert_same_verdict(payload)
