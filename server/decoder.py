"""The server's decoder of rating batches: msgspec checks a valid batch in C, kiosk.protocol decides every other."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal, Optional

import msgspec

from kiosk import protocol
from kiosk.protocol import DecodedBatch, ProtocolError, Rating

# Why a second decoder: kiosk.protocol's checks (the one definition of a valid
# rating, which the kiosk also runs, on the standard library) cost about 3 µs a
# rating in Python, half of what storing it costs. The types and checks below
# accept no more than validate_rating does; whatever they refuse, or anything
# they cannot tell (a reason outside the site's list, an impossible date), goes
# to kiosk.protocol.decode_batch, which gives the verdict and the message. A
# test checks the two agree on valid and hostile batches.


def _text(pattern: str) -> type:
    return Annotated[str, msgspec.Meta(pattern=pattern)]


def _every(pattern: str) -> "re.Pattern[str]":
    r"""A pattern that matches NUL-joined values (each followed by NUL) iff each matches *pattern*.

    One regex call for a field of the whole batch instead of one per rating
    (msgspec's per-value pattern checks were two thirds of decoding a batch).
    None of the protocol's patterns admits a NUL, so a value holding one
    cannot pass for two: it adds a NUL, and the count is checked (_all_match).
    """
    if not (pattern.startswith(r"\A") and pattern.endswith(r"\Z")) or "\0" in pattern:
        raise ValueError(f"not an anchored protocol pattern: {pattern!r}")
    return re.compile(rf"(?:{pattern[2:-2]}\x00)*")


def _shapes(pattern: str, members: str) -> tuple[bytes, "re.Pattern[str]"]:
    """A byte table that turns each of *members* into the first of them (other bytes
    kept), and *pattern* compiled: the two _all_match needs for a batch's shape.

    Only for a pattern whose every character class either holds all of
    *members* or none of them, and whose literals are not among them: a value
    then matches iff its shape does, character by character.
    """
    table = bytearray(range(256))
    for member in members.encode("ascii"):
        table[member] = ord(members[0])
    return bytes(table), re.compile(pattern)


_IDS = _every(protocol.RATING_PATTERNS["id"])
_ATS = _every(protocol.RATING_PATTERNS["at"])
_LANG = re.compile(protocol.RATING_PATTERNS["lang"])
_REASON = re.compile(protocol.RATING_PATTERNS["reason"])
_CHAINS = _every(protocol.CHAIN_PATTERN)
# Lower-case hex in ids and chains, ASCII digits in times: what varies from one
# rating to the next. The rest (hyphens, "T", the offset) is what a kiosk writes
# the same way every time.
_ID_SHAPES = _shapes(protocol.RATING_PATTERNS["id"], "0123456789abcdef")
_AT_SHAPES = _shapes(protocol.RATING_PATTERNS["at"], "0123456789")
_CHAIN_SHAPES = _shapes(protocol.CHAIN_PATTERN, "0123456789abcdef")
_Identifier = _text(rf"\A{protocol.IDENT_PATTERN}\Z")
# Literal[...] from the protocol's own tuples, so a code added there is accepted here too.
_AgeGroup = Literal[protocol.AGE_GROUPS]  # type: ignore[valid-type]
_Input = Literal[protocol.INPUTS]  # type: ignore[valid-type]
#: Payloads shorter than this (a few ratings) are checked value by value as msgspec
#: decodes them: joining the values costs more than it saves there (a one-rating
#: batch took 10.6-11.1 µs joined against 7.0-7.4 per value; bench/bench_decode.py).
PER_VALUE_BELOW = 4096


def _decoder(per_value: bool) -> msgspec.json.Decoder:
    """A decoder of batches; *per_value*: msgspec checks each text's pattern, else
    id, at, lang, reason and chain are plain text, checked per batch by _checked."""

    def text(name: str) -> type:
        pattern = protocol.CHAIN_PATTERN if name == "chain" else protocol.RATING_PATTERNS[name]
        return _text(pattern) if per_value else str

    # defstruct, not a class statement: the types differ per call, and this
    # module's annotations are strings that could not name them.
    rating = msgspec.defstruct("Rating", [
        ("id", text("id")),
        ("seq", Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]),
        ("score", Annotated[int, msgspec.Meta(ge=min(protocol.SCORES), le=max(protocol.SCORES))]),
        ("at", text("at")),
        ("clock_synced", bool),
        ("lang", text("lang")),
        ("input", _Input),
        ("reason", Optional[text("reason")], None),
        ("age_group", Optional[_AgeGroup], None),
        ("chain", Optional[text("chain")], None),
    ], forbid_unknown_fields=True)
    batch = msgspec.defstruct("Batch", [
        ("v", Literal[protocol.VERSION]),  # type: ignore[valid-type]
        ("site", _Identifier),
        ("terminal", _Identifier),
        ("ratings", Annotated[list[rating], msgspec.Meta(max_length=protocol.MAX_BATCH_RATINGS)]),  # type: ignore[valid-type]
        ("head_sig", Optional[str], None),
    ], forbid_unknown_fields=True)
    return msgspec.json.Decoder(batch)


_PER_VALUE = _decoder(per_value=True)
_PER_BATCH = _decoder(per_value=False)
_as_dict = msgspec.structs.asdict
_parse_time = datetime.fromisoformat


def _all_match(every: "re.Pattern[str]", values: list[str],
               shapes: tuple[bytes, "re.Pattern[str]"] | None = None) -> bool:
    joined = "\0".join(values) + "\0"
    if joined.count("\0") != len(values):
        return False
    if shapes is not None and joined.isascii():
        # A kiosk's values differ only in their digits: with each digit made the
        # same, a batch is one shape repeated, and matching that shape once is
        # matching every value (_shapes). bytes.translate and == run in C, where
        # the regex over the batch took 0.38 ms of a 500-rating batch's 1 ms.
        table, one = shapes
        shape = joined.encode("ascii").translate(table)
        first = shape[:shape.index(0) + 1]
        if shape == first * len(values):
            return one.fullmatch(first[:-1].decode("ascii")) is not None
    return every.fullmatch(joined) is not None


def _patterns_hold(items: list, ats: list[str], used_reasons: set[str]) -> bool:
    """Whether every id, at, lang, reason and chain of *items* matches its protocol pattern."""
    chains = [r.chain for r in items if r.chain is not None]
    # A batch holds a handful of languages and reasons: each distinct one matched once.
    return (_all_match(_IDS, [r.id for r in items], _ID_SHAPES) and _all_match(_ATS, ats, _AT_SHAPES)
            and all(_LANG.match(lang) for lang in {r.lang for r in items})
            and all(_REASON.match(reason) for reason in used_reasons)
            and (not chains or _all_match(_CHAINS, chains, _CHAIN_SHAPES)))


def _checked(items: list, reasons: frozenset[str] | None, per_value: bool) -> None:
    """Raise ProtocolError unless every rating of *items* is one validate_rating accepts
    (*per_value*: msgspec matched the patterns already, as it decoded)."""
    ats = [r.at for r in items]
    used_reasons = {r.reason for r in items}
    used_reasons.discard(None)
    if not per_value and not _patterns_hold(items, ats, used_reasons):
        raise ProtocolError("ratings", "a text its pattern refuses")
    # What a pattern cannot say: that the time exists (the pattern held, so Python's
    # parser can only refuse what parse_timestamp refuses, or a form it rewrites
    # first, which then goes the slow way), and the site's own reasons.
    for _ in map(_parse_time, ats):
        pass
    if reasons is not None and not used_reasons <= reasons:
        raise ProtocolError("reason", "not configured")


def _rating(fields: dict, new=object.__new__, assign=object.__setattr__) -> Rating:
    # Built as kiosk.protocol builds a checked rating: no second validation.
    rating = new(Rating)
    assign(rating, "__dict__", fields)
    return rating


def decode_batch(payload: bytes, reasons: frozenset[str] | None = None, *,
                 per_value: bool | None = None) -> DecodedBatch:
    """kiosk.protocol.decode_batch's result for *payload*, sooner when every rating in it is valid.

    *per_value*: check each text as it is decoded (True) or a batch's texts
    together (False); None chooses by size (PER_VALUE_BELOW). Same verdict either way.
    """
    if not isinstance(payload, (bytes, bytearray)) or len(payload) > protocol.MAX_BATCH_BYTES:
        return protocol.decode_batch(payload, reasons)
    if per_value is None:
        per_value = len(payload) < PER_VALUE_BELOW
    try:
        batch = (_PER_VALUE if per_value else _PER_BATCH).decode(payload)
        if batch.head_sig is not None:
            protocol.check_head_sig("head_sig", batch.head_sig)
        if batch.ratings:
            _checked(batch.ratings, reasons, per_value)
        ratings = tuple(map(_rating, map(_as_dict, batch.ratings)))
    except (msgspec.DecodeError, msgspec.ValidationError, ProtocolError, ValueError):
        return protocol.decode_batch(payload, reasons)
    decoded = object.__new__(DecodedBatch)
    object.__setattr__(decoded, "__dict__", {"site": batch.site, "terminal": batch.terminal,
                                             "ratings": ratings, "rejected": (),
                                             "head_sig": batch.head_sig})
    return decoded
