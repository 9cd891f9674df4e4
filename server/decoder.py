"""The server's decoder of rating batches: msgspec checks a valid batch in C, kiosk.protocol decides every other."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, Optional

import msgspec

from kiosk import protocol
from kiosk.protocol import DecodedBatch, ProtocolError, Rating

# Why a second decoder: kiosk.protocol's checks (the one definition of a valid
# rating, which the kiosk also runs, on the standard library) cost about 3 µs a
# rating in Python, half of what storing it costs. The types below accept no
# more than validate_rating does; whatever they refuse, or anything they cannot
# tell (a reason outside the site's list, an impossible date), goes to
# kiosk.protocol.decode_batch, which gives the verdict and the message. A test
# checks the two agree on valid and hostile batches.


def _text(pattern: str) -> type:
    return Annotated[str, msgspec.Meta(pattern=pattern)]


_Id = _text(protocol.RATING_PATTERNS["id"])
_At = _text(protocol.RATING_PATTERNS["at"])
_Lang = _text(protocol.RATING_PATTERNS["lang"])
_Reason = _text(protocol.RATING_PATTERNS["reason"])
_Chain = _text(protocol.CHAIN_PATTERN)
_Identifier = _text(rf"\A{protocol.IDENT_PATTERN}\Z")
# Literal[...] from the protocol's own tuples, so a code added there is accepted here too.
_AgeGroup = Literal[protocol.AGE_GROUPS]  # type: ignore[valid-type]
_Input = Literal[protocol.INPUTS]  # type: ignore[valid-type]


class _Rating(msgspec.Struct, forbid_unknown_fields=True):
    id: _Id
    seq: Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
    score: Annotated[int, msgspec.Meta(ge=min(protocol.SCORES), le=max(protocol.SCORES))]
    at: _At
    clock_synced: bool
    lang: _Lang
    input: _Input
    reason: Optional[_Reason] = None
    age_group: Optional[_AgeGroup] = None
    chain: Optional[_Chain] = None


class _Batch(msgspec.Struct, forbid_unknown_fields=True):
    v: Literal[protocol.VERSION]  # type: ignore[valid-type]
    site: _Identifier
    terminal: _Identifier
    ratings: Annotated[list[_Rating], msgspec.Meta(max_length=protocol.MAX_BATCH_RATINGS)]
    head_sig: Optional[str] = None


_DECODER = msgspec.json.Decoder(_Batch)
_as_dict = msgspec.structs.asdict
_parse_time = datetime.fromisoformat


def decode_batch(payload: bytes, reasons: frozenset[str] | None = None) -> DecodedBatch:
    """kiosk.protocol.decode_batch's result for *payload*, sooner when every rating in it is valid."""
    if len(payload) > protocol.MAX_BATCH_BYTES or not isinstance(payload, (bytes, bytearray)):
        return protocol.decode_batch(payload, reasons)
    try:
        batch = _DECODER.decode(payload)
        if batch.head_sig is not None:
            protocol.check_head_sig("head_sig", batch.head_sig)
        ratings = []
        for item in batch.ratings:
            # What a pattern cannot say: that the time exists (the pattern held, so Python's
            # parser can only refuse what parse_timestamp refuses, or a form it rewrites
            # first, which then goes the slow way), and the site's own reasons.
            _parse_time(item.at)
            if reasons is not None and item.reason is not None and item.reason not in reasons:
                raise ProtocolError("reason", "not configured")
            # Built as kiosk.protocol builds a checked rating: no second validation.
            rating = object.__new__(Rating)
            object.__setattr__(rating, "__dict__", _as_dict(item))
            ratings.append(rating)
    except (msgspec.DecodeError, msgspec.ValidationError, ProtocolError, ValueError):
        return protocol.decode_batch(payload, reasons)
    decoded = object.__new__(DecodedBatch)
    object.__setattr__(decoded, "__dict__", {"site": batch.site, "terminal": batch.terminal,
                                             "ratings": tuple(ratings), "rejected": (),
                                             "head_sig": batch.head_sig})
    return decoded
