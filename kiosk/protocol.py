"""onetap MQTT protocol v1: topics and messages, encoded, decoded and validated.

This module is the one home of the wire format spoken between a kiosk and the
server (see docs/protocol.md). It imports only the standard
library so that the server, the simulator and anyone's own client can share it.

Every decoding function raises :class:`ProtocolError`, which names the field
that is wrong and why, and never anything else for bad input.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import math
from json.encoder import encode_basestring
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit
from typing import Any, Iterable, Mapping, Sequence

VERSION = 1
TOPIC_ROOT = "onetap/v1"

#: Topic kinds, by direction.
RATINGS = "ratings"
ACK = "ack"
STATUS = "status"
CONFIG = "config"
ALERTS = "alerts"
TERMINAL_TOPIC_KINDS = (RATINGS, ACK, STATUS, CONFIG)

MAX_BATCH_RATINGS = 500
MAX_BATCH_BYTES = 256 * 1024
#: A status is a few hundred bytes; anything near this is not one.
MAX_STATUS_BYTES = 16 * 1024

SCORES = (1, 2, 3, 4, 5)
DEFAULT_REASONS = (
    "wait_time",
    "staff_attitude",
    "resolution",
    "information",
    "facilities",
    "other",
)
AGE_GROUPS = ("under20", "20s", "30s", "40s", "50s", "60s", "70plus")
INPUTS = ("touch", "button", "keypad")

IDENT_PATTERN = r"[a-z0-9][a-z0-9-]{0,62}"
_IDENT_RE = re.compile(rf"\A{IDENT_PATTERN}\Z")
# UUIDs are lower-case 8-4-4-4-12 hex on the wire; a regex is several times
# faster than uuid.UUID() on the server's hot path.
_UUID_RE = re.compile(r"\A[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
# A language tag: "ko", "en", "zh", "vi", "ja", or with a region ("zh-hans").
_LANG_RE = re.compile(r"\A[a-z]{2,3}(-[a-z0-9]{2,8})?\Z")
_REASON_RE = re.compile(r"\A[a-z][a-z0-9_]{0,31}\Z")
# RFC 3339 requires the date/time separator, seconds and an offset; Python's
# fromisoformat alone accepts far more (no offset, week dates, ...).
# ASCII digits only: \d would let other scripts' digits through to fromisoformat.
_RFC3339_RE = re.compile(
    r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})\Z"
)
#: The pattern each string field of a rating must match, as validate_rating checks
#: it (``at`` must also be a real time): the server's faster decoder reuses them.
RATING_PATTERNS = {"id": _UUID_RE.pattern, "at": _RFC3339_RE.pattern,
                   "lang": _LANG_RE.pattern, "reason": _REASON_RE.pattern}
_MAX_SEQ = 2**63 - 1
#: The most digits an integer on the wire may have (2**63 - 1 has 19): longer
#: ones are never converted, so no message can reach Python's int-str limit.
_MAX_INT_DIGITS = 19
#: The time window the server computes with. A rating's ``at`` outside it is
#: counted by receipt time and flagged clock_suspect; a Status time outside it
#: is dropped (see :func:`bound_status_fields`).
TIME_FLOOR = datetime(2020, 1, 1, tzinfo=timezone.utc)
MAX_CLOCK_AHEAD = timedelta(hours=24)
#: Longest free-text status values (version, error) and field names in errors.
MAX_STATUS_TEXT = 200
_MAX_FIELD_NAME = 80

OFFLINE_STATUS = b'{"v":1,"state":"offline"}'
#: Compact JSON as the messages are written; json.dumps with options builds an encoder per call.
_COMPACT_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


class ProtocolError(ValueError):
    """A message does not follow protocol v1.

    ``field`` names the offending field (dotted, e.g. ``ratings[3].score``) and
    ``reason`` says what is wrong with it; ``str()`` gives both.
    """

    def __init__(self, field: str, reason: str):
        # Both may quote hostile input (an unknown key, a value): escaped and
        # bounded here so that an error can always be stored, logged and Acked.
        field = printable(field, _MAX_FIELD_NAME)
        reason = printable(reason, 2 * MAX_STATUS_TEXT)
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def is_clean_text(value: str) -> bool:
    """Whether *value* holds no lone surrogate and no control character.

    str.isprintable() is False for both (and for the line and paragraph
    separators), True for Korean, CJK and every other script's letters.
    """
    return value.isprintable()


def printable(text: object, limit: int = MAX_STATUS_TEXT) -> str:
    """*text* with lone surrogates and control characters escaped, at most *limit* characters.

    For error messages and quarantine reasons: whatever a terminal sent, the
    result can be encoded as UTF-8 and stored in any database.
    """
    if not isinstance(text, str):
        text = repr(text)
    if len(text) > limit:
        text = text[:limit] + "…"
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii")
                   for c in text)


# -- broker URLs ------------------------------------------------------------

BROKER_DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


def is_loopback(host: str) -> bool:
    """Whether *host* is this machine, where plain MQTT never touches a network."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_broker_url(url: str) -> tuple[str, str, int]:
    """Split ``mqtt://host:port`` or ``mqtts://host:port`` into (scheme, host, port).

    The port defaults to 1883 (mqtt) or 8883 (mqtts). Anything else (another
    scheme, a path, a query, credentials in the URL) is a ValueError naming
    what is wrong: passwords belong in the config or environment, not in a URL
    that ends up in logs and process lists.
    """
    if not isinstance(url, str) or not url:
        raise ValueError("broker URL is empty")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{url!r} is not a broker URL ({exc})") from None
    if parts.scheme not in BROKER_DEFAULT_PORTS:
        raise ValueError(f"{url!r}: the scheme must be mqtt:// or mqtts://")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{url!r}: put the user and password in the config or environment, not the URL")
    if not parts.hostname:
        raise ValueError(f"{url!r} has no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{url!r}: only mqtt[s]://host:port is allowed (no path or query)")
    return parts.scheme, parts.hostname, port if port is not None else BROKER_DEFAULT_PORTS[parts.scheme]


def broker_security_problem(broker: str, *, ca_file: object = None, certfile: object = None,
                            keyfile: object = None, allow_plain_remote: bool = False,
                            prefix: str = "") -> tuple[str, str] | None:
    """(key, why) when a broker connection's settings do not hold together, else None.

    The one rule for the kiosk's config, the server's and provision: a client
    certificate needs both files; TLS files need mqtts://; plain mqtt:// to
    another machine (the password and ratings in clear) needs
    allow_plain_remote. *prefix* qualifies the key names said ("mqtt.").
    """
    scheme, host, _ = parse_broker_url(broker)
    if (certfile is None) != (keyfile is None):
        return ("keyfile" if keyfile is None else "certfile",
                f"is missing: a client certificate needs both {prefix}certfile and {prefix}keyfile")
    if scheme == "mqtts":
        return None
    if ca_file is not None or certfile is not None:
        return ("ca_file" if ca_file is not None else "certfile",
                f"is set but the broker {broker!r} is mqtt://, not mqtts://")
    if not is_loopback(host) and not allow_plain_remote:
        return ("broker", "is plain MQTT to another machine: the password and ratings "
                          f"would cross the network unencrypted; use mqtts:// with {prefix}ca_file, "
                          f"or set {prefix}allow_plain_remote = true")
    return None


# -- topics -----------------------------------------------------------------


def is_identifier(value: object) -> bool:
    """Whether *value* is a valid site or terminal identifier."""
    return isinstance(value, str) and _IDENT_RE.match(value) is not None


def check_identifier(name: str, value: object) -> str:
    """Return *value* if it is a valid identifier, else raise ProtocolError."""
    if not isinstance(value, str):
        raise ProtocolError(name, f"must be a string, not {type(value).__name__}")
    if not _IDENT_RE.match(value):
        raise ProtocolError(
            name, f"{value!r} is not an identifier (^{IDENT_PATTERN}$)"
        )
    return value


def topic(site: str, terminal: str, kind: str) -> str:
    """The topic of one terminal's *kind* (ratings, ack, status, config)."""
    check_identifier("site", site)
    check_identifier("terminal", terminal)
    if kind not in TERMINAL_TOPIC_KINDS:
        raise ProtocolError("topic", f"unknown kind {kind!r}")
    return f"{TOPIC_ROOT}/{site}/{terminal}/{kind}"


def site_topic(site: str, kind: str) -> str:
    """A per-site topic, such as ``onetap/v1/{site}/alerts``."""
    check_identifier("site", site)
    return f"{TOPIC_ROOT}/{site}/{kind}"


def parse_topic(value: str) -> tuple[str, str, str]:
    """Split a terminal topic into (site, terminal, kind), validating each part."""
    if not isinstance(value, str):
        raise ProtocolError("topic", "must be a string")
    parts = value.split("/")
    if len(parts) != 5 or f"{parts[0]}/{parts[1]}" != TOPIC_ROOT:
        raise ProtocolError(
            "topic", f"{value!r} is not {TOPIC_ROOT}/<site>/<terminal>/<kind>"
        )
    site, terminal, kind = parts[2], parts[3], parts[4]
    check_identifier("topic.site", site)
    check_identifier("topic.terminal", terminal)
    if kind not in TERMINAL_TOPIC_KINDS:
        raise ProtocolError("topic.kind", f"unknown kind {kind!r}")
    return site, terminal, kind


# -- field checks -----------------------------------------------------------


def _require(obj: Mapping[str, Any], key: str, where: str) -> Any:
    try:
        return obj[key]
    except KeyError:
        raise ProtocolError(f"{where}{key}", "is missing") from None


def _check_version(obj: Mapping[str, Any], where: str = "") -> None:
    version = _require(obj, "v", where)
    if type(version) is not int or version != VERSION:
        raise ProtocolError(f"{where}v", f"unsupported version {version!r} (expected {VERSION})")


def _check_keys(obj: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    if obj.keys() <= allowed:
        return
    unknown = obj.keys() - allowed
    if unknown:
        raise ProtocolError(f"{where}{sorted(unknown)[0]}", "is not a field of protocol v1")


def parse_timestamp(name: str, value: object) -> datetime:
    """Parse an RFC 3339 timestamp with an offset, or raise ProtocolError."""
    if not isinstance(value, str) or not _RFC3339_RE.match(value):
        raise ProtocolError(name, f"{value!r} is not an RFC 3339 time with offset")
    text = value
    if text[-1] in "Zz":
        text = text[:-1] + "+00:00"
    # fromisoformat takes at most 6 fractional digits.
    if "." in text:
        head, _, tail = text.partition(".")
        digits = tail[:-6]
        text = f"{head}.{digits[:6].ljust(6, '0')}{tail[-6:]}"
    try:
        return datetime.fromisoformat(text.replace("t", "T"))
    except ValueError as exc:
        raise ProtocolError(name, f"{value!r} is not a valid time ({exc})") from None


def in_time_window(moment: datetime, now: datetime) -> bool:
    """Whether *moment* is between 2020-01-01 and a day after *now* (both aware).

    Comparing aware datetimes never overflows; converting one near year 1 or
    9999 to another offset does, so nothing outside this window is converted.
    """
    return TIME_FLOOR <= moment <= now + MAX_CLOCK_AHEAD


def clock_suspect(at: str, now: datetime) -> bool:
    """Whether a rating's ``at`` (already valid RFC 3339) lies outside the window at *now*.

    Such a rating is counted by the server's receipt time, not on the day it claims.
    """
    try:
        return not in_time_window(parse_timestamp("at", at), now)
    except ProtocolError:
        return True


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 with milliseconds and the moment's own offset."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("format_timestamp needs an aware datetime")
    return moment.isoformat(timespec="milliseconds")


def _optional_timestamp(name: str, value: object) -> str | None:
    if value is None:
        return None
    parse_timestamp(name, value)
    return value  # type: ignore[return-value]


# -- ratings ----------------------------------------------------------------

_RATING_KEYS = frozenset(
    ("id", "seq", "score", "at", "clock_synced", "reason", "age_group", "lang", "input", "chain")
)


@dataclass(frozen=True)
class Rating:
    """One citizen's tap, as it travels and as it is stored."""

    id: str
    seq: int
    score: int
    at: str
    clock_synced: bool
    reason: str | None = None
    age_group: str | None = None
    lang: str = "ko"
    input: str = "touch"
    #: The terminal's hash chain up to this rating (see "audit chain" below);
    #: None from kiosks that do not chain, and while the rating is held.
    chain: str | None = None

    def __post_init__(self) -> None:
        validate_rating(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        out = {
            "id": self.id,
            "seq": self.seq,
            "score": self.score,
            "at": self.at,
            "clock_synced": self.clock_synced,
            "reason": self.reason,
            "age_group": self.age_group,
            "lang": self.lang,
            "input": self.input,
        }
        # Left out when absent, so an unchained rating is byte for byte what it always was.
        if self.chain is not None:
            out["chain"] = self.chain
        return out

    def encode(self) -> str:
        """The rating as compact JSON text, ready to be joined into a batch."""
        return _COMPACT_ENCODER.encode(self.to_dict())

    @classmethod
    def from_dict(
        cls, obj: object, reasons: Iterable[str] | None = None, where: str = ""
    ) -> "Rating":
        validate_rating(obj, reasons, where)
        assert isinstance(obj, dict)
        return cls(**{key: obj.get(key) for key in _RATING_KEYS if key in obj})

    @property
    def moment(self) -> datetime:
        return parse_timestamp("at", self.at)


def validate_rating(
    obj: object, reasons: Iterable[str] | None = None, where: str = ""
) -> None:
    """Raise ProtocolError unless *obj* is a valid rating dict.

    *reasons* restricts ``reason`` to a site's configured codes; by default
    any well-formed code is allowed.
    """
    if not isinstance(obj, dict):
        raise ProtocolError(where.rstrip(".") or "rating", "must be an object")
    _check_keys(obj, _RATING_KEYS, where)
    rating_id = _require(obj, "id", where)
    if not isinstance(rating_id, str) or not _UUID_RE.match(rating_id):
        raise ProtocolError(f"{where}id", f"{rating_id!r} is not a lower-case UUID")
    seq = _require(obj, "seq", where)
    if type(seq) is not int or not 1 <= seq <= _MAX_SEQ:
        raise ProtocolError(f"{where}seq", f"{seq!r} is not an integer >= 1")
    score = _require(obj, "score", where)
    if type(score) is not int or score not in SCORES:
        raise ProtocolError(f"{where}score", f"{score!r} is not an integer 1..5")
    parse_timestamp(f"{where}at", _require(obj, "at", where))
    synced = _require(obj, "clock_synced", where)
    if type(synced) is not bool:
        raise ProtocolError(f"{where}clock_synced", f"{synced!r} is not true or false")
    reason = obj.get("reason")
    if reason is not None:
        if not isinstance(reason, str) or not _REASON_RE.match(reason):
            raise ProtocolError(f"{where}reason", f"{reason!r} is not a reason code")
        if reasons is not None and reason not in reasons:
            raise ProtocolError(f"{where}reason", f"{reason!r} is not configured for this site")
    age_group = obj.get("age_group")
    if age_group is not None and age_group not in AGE_GROUPS:
        raise ProtocolError(f"{where}age_group", f"{age_group!r} is not one of {', '.join(AGE_GROUPS)}")
    lang = _require(obj, "lang", where)
    if not isinstance(lang, str) or not _LANG_RE.match(lang):
        raise ProtocolError(f"{where}lang", f"{lang!r} is not a language tag")
    input_kind = _require(obj, "input", where)
    if input_kind not in INPUTS:
        raise ProtocolError(f"{where}input", f"{input_kind!r} is not touch or button")
    chain = obj.get("chain")
    if chain is not None and not is_chain(chain):
        raise ProtocolError(f"{where}chain", f"{printable(chain, 80)} is not 64 lower-case hex digits")


# -- batches ----------------------------------------------------------------

_BATCH_KEYS = frozenset(("v", "site", "terminal", "ratings", "head_sig"))
#: A Rating's fields a valid rating dict may leave out, at their defaults.
_OPTIONAL_RATING_FIELDS = {"reason": None, "age_group": None, "chain": None}


@dataclass(frozen=True)
class RejectedRating:
    """A rating of a batch that failed validation: its id when readable, why, and its JSON."""

    id: str | None
    error: str
    raw: bytes


@dataclass(frozen=True)
class DecodedBatch:
    """A batch whose envelope is valid; each rating is valid or rejected on its own."""

    site: str
    terminal: str
    ratings: tuple[Rating, ...]
    rejected: tuple[RejectedRating, ...]
    #: Base64 Ed25519 signature over the chain of the batch's highest-seq rating.
    head_sig: str | None = None


def encode_batch(site: str, terminal: str, rating_jsons: Sequence[str],
                 head_sig: str | None = None) -> bytes:
    """A RatingBatch from ratings already encoded by :meth:`Rating.encode`.

    The outbox stores each rating's JSON, so making a batch is a join.
    """
    check_identifier("site", site)
    check_identifier("terminal", terminal)
    if len(rating_jsons) > MAX_BATCH_RATINGS:
        raise ProtocolError("ratings", f"at most {MAX_BATCH_RATINGS} per batch")
    signature = ""
    if head_sig is not None:
        check_head_sig("head_sig", head_sig)
        signature = f',"head_sig":"{head_sig}"'
    payload = (
        f'{{"v":{VERSION},"site":"{site}","terminal":"{terminal}"{signature},"ratings":['
        + ",".join(rating_jsons)
        + "]}"
    ).encode("utf-8")
    if len(payload) > MAX_BATCH_BYTES:
        raise ProtocolError("batch", f"{len(payload)} bytes exceeds {MAX_BATCH_BYTES}")
    return payload


def batch_overhead(site: str, terminal: str) -> int:
    """Bytes a batch adds around its ratings (plus one comma per extra rating), a head signature included."""
    return len(encode_batch(site, terminal, [], "A" * (HEAD_SIG_CHARS - 2) + "=="))


class OutOfRange:
    """A JSON number the protocol never uses (too many digits, NaN, infinite).

    Parsing puts this in its place, so that the value fails its field's type
    check with a clear error and only the rating holding it is rejected.
    """

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        if len(self.text) > 24:
            return f"<number of {len(self.text)} digits>"
        return f"<number {self.text}>"


def _bounded_int(text: str) -> int | OutOfRange:
    digits = len(text) - (text[0] == "-")
    return OutOfRange(text) if digits > _MAX_INT_DIGITS else int(text)


def _bounded_float(text: str) -> float | OutOfRange:
    if len(text) > 64:
        return OutOfRange(text)
    value = float(text)
    return value if math.isfinite(value) else OutOfRange(text)


def _json_default(value: object) -> str:
    # Only OutOfRange can be in a decoded message and not be JSON itself.
    return repr(value)


#: One decoder: json.loads with options builds a new one on every call (as json.loads
#: shares its own default decoder between threads, this one is shared too).
_BOUNDED_DECODER = json.JSONDecoder(parse_int=_bounded_int, parse_float=_bounded_float,
                                    parse_constant=OutOfRange)


def loads_bounded(text: str | bytes) -> Any:
    """json.loads whose numbers are bounded (see OutOfRange); raises ValueError or RecursionError."""
    if type(text) is not str or text.startswith("\ufeff"):
        # json.loads' own checks and messages (bytes' encodings, a BOM, not text at all).
        return json.loads(text, cls=json.JSONDecoder, parse_int=_bounded_int,
                          parse_float=_bounded_float, parse_constant=OutOfRange)
    return _BOUNDED_DECODER.decode(text)


def dumps_raw(obj: object) -> bytes:
    """A decoded value back to JSON bytes for quarantine, whatever strings it holds."""
    try:
        text = json.dumps(obj, ensure_ascii=False, default=_json_default)
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates: keep them as the JSON escapes they arrived as.
        return json.dumps(obj, default=_json_default).encode("ascii")
    except (RecursionError, ValueError, TypeError) as exc:
        return f"<unrepresentable: {printable(str(exc))}>".encode("utf-8")


def _load_json(payload: bytes, what: str) -> Any:
    if not isinstance(payload, (bytes, bytearray)):
        raise ProtocolError(what, "payload must be bytes")
    try:
        text = bytes(payload).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(what, f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        return loads_bounded(text)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(what, f"not JSON ({exc})") from None



def _load_message(payload: bytes, what: str, keys: frozenset[str]) -> dict[str, Any]:
    """A message's JSON object, of protocol version 1 and with no key outside *keys*."""
    obj = _load_json(payload, what)
    if not isinstance(obj, dict):
        raise ProtocolError(what, "must be a JSON object")
    _check_version(obj)
    _check_keys(obj, keys, "")
    return obj

def decode_batch(payload: bytes, reasons: Iterable[str] | None = None) -> DecodedBatch:
    """Decode a RatingBatch.

    Raises ProtocolError when the batch as a whole is unusable (not JSON, wrong
    version, bad envelope, too large); otherwise returns every rating either
    valid or rejected with its reason, so one bad rating cannot sink the rest.
    """
    if len(payload) > MAX_BATCH_BYTES:
        raise ProtocolError("batch", f"{len(payload)} bytes exceeds {MAX_BATCH_BYTES}")
    obj = _load_json(payload, "batch")
    if not isinstance(obj, dict):
        raise ProtocolError("batch", "must be a JSON object")
    _check_version(obj)
    _check_keys(obj, _BATCH_KEYS, "")
    site = check_identifier("site", _require(obj, "site", ""))
    terminal = check_identifier("terminal", _require(obj, "terminal", ""))
    items = _require(obj, "ratings", "")
    if not isinstance(items, list):
        raise ProtocolError("ratings", "must be an array")
    if len(items) > MAX_BATCH_RATINGS:
        raise ProtocolError("ratings", f"{len(items)} ratings exceeds {MAX_BATCH_RATINGS}")
    head_sig = obj.get("head_sig")
    if head_sig is not None:
        check_head_sig("head_sig", head_sig)
    if reasons is not None:
        reasons = frozenset(reasons)
    good: list[Rating] = []
    bad: list[RejectedRating] = []
    for index, item in enumerate(items):
        try:
            validate_rating(item, reasons, "")
        except ProtocolError as unnamed:
            exc = unnamed
            try:
                # Again for the message, which names where (not made for every valid rating).
                validate_rating(item, reasons, f"ratings[{index}].")
            except ProtocolError as named:
                exc = named
            rating_id = item.get("id") if isinstance(item, dict) else None
            if not isinstance(rating_id, str) or not _UUID_RE.match(rating_id):
                rating_id = None
            raw = dumps_raw(item)
            bad.append(RejectedRating(rating_id, str(exc), raw))
            continue
        # Already validated (every key a field, every required one there): skip
        # __post_init__'s second check on the hot path.
        rating = object.__new__(Rating)
        object.__setattr__(rating, "__dict__", {**_OPTIONAL_RATING_FIELDS, **item})
        good.append(rating)
    # Frozen dataclasses set each field through object.__setattr__: built as the Ratings are.
    batch = object.__new__(DecodedBatch)
    object.__setattr__(batch, "__dict__", {"site": site, "terminal": terminal, "ratings": tuple(good),
                                           "rejected": tuple(bad), "head_sig": head_sig})
    return batch


# -- audit chain ----------------------------------------------------------------
#
# Each rating may carry ``chain``: SHA-256 over the previous rating's chain (32
# bytes) followed by this rating's canonical bytes, as 64 lower-case hex
# digits. A terminal's first rating chains from its seed (fixed at
# provisioning). A batch may carry ``head_sig``: the terminal's Ed25519
# signature over the 32 bytes of the chain of its highest-seq rating. The
# signing itself lives with the key holders (kiosk/uplink.py, server/audit.py):
# this module stays standard library only. See docs/protocol.md, "Audit chain".

CHAIN_HEX_CHARS = 64
#: An Ed25519 signature is 64 bytes: 88 base64 characters with padding.
HEAD_SIG_BYTES = 64
HEAD_SIG_CHARS = 88
_CHAIN_RE = re.compile(r"\A[0-9a-f]{64}\Z")
CHAIN_PATTERN = _CHAIN_RE.pattern
#: The fields of a rating's canonical form, in this order (``chain`` is not one).
CANONICAL_FIELDS = ("id", "seq", "score", "at", "clock_synced", "reason", "age_group", "lang", "input")
_SEED_CONTEXT = b"onetap/v1 chain seed\x00"
# One encoder: json.dumps with options builds a new encoder on every call.
_CANONICAL_ENCODER = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"))


def is_chain(value: object) -> bool:
    """Whether *value* is a chain value: 64 lower-case hex digits."""
    return isinstance(value, str) and _CHAIN_RE.match(value) is not None


def check_head_sig(name: str, value: object) -> bytes:
    """The 64 signature bytes of a ``head_sig``, or ProtocolError naming *name*."""
    if not isinstance(value, str) or len(value) != HEAD_SIG_CHARS:
        raise ProtocolError(name, f"must be base64 of {HEAD_SIG_BYTES} bytes ({HEAD_SIG_CHARS} characters)")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(name, "is not base64") from None
    if len(raw) != HEAD_SIG_BYTES:
        raise ProtocolError(name, f"must be base64 of {HEAD_SIG_BYTES} bytes")
    return raw


def canonical_rating(rating: Rating | Mapping[str, Any]) -> bytes:
    """The bytes a rating's chain covers: a compact JSON array of CANONICAL_FIELDS' values.

    Pure ASCII (``\\uXXXX`` escapes), no spaces, integers in decimal, booleans
    ``true``/``false``, absent answers ``null``, ``at`` exactly as the kiosk
    wrote it (never re-formatted: the same instant in another offset is
    another text, and the kiosk's own text is what was signed).
    """
    if isinstance(rating, Rating):
        # A Rating is validated: every text is ASCII without quotes or backslashes
        # (UUID, RFC 3339, codes, language tags), so JSON needs no escaping and the
        # text is written directly, four times faster (the same bytes: tested).
        reason = "null" if rating.reason is None else f'"{rating.reason}"'
        age = "null" if rating.age_group is None else f'"{rating.age_group}"'
        return (f'["{rating.id}",{rating.seq},{rating.score},"{rating.at}",'
                f'{"true" if rating.clock_synced else "false"},{reason},{age},'
                f'"{rating.lang}","{rating.input}"]').encode("ascii")
    values = [rating.get(name) for name in CANONICAL_FIELDS]
    return _CANONICAL_ENCODER.encode(values).encode("ascii")


def chain_next(previous: str, rating: Rating | Mapping[str, Any]) -> str:
    """The chain of *rating* after the chain value *previous* (both 64 hex digits)."""
    return hashlib.sha256(bytes.fromhex(previous) + canonical_rating(rating)).hexdigest()


def default_chain_seed(site: str, terminal: str, public_key: bytes | None = None) -> str:
    """The chain value a terminal's first rating chains from.

    SHA-256 of "onetap/v1 chain seed", NUL, site, NUL, terminal, and (when the
    terminal has a key) NUL and the 32 raw bytes of its Ed25519 public key:
    `onetap-server provision` writes exactly this to kiosk.toml as
    ``chain_seed``, and the server and the verifier compute it again from
    the registered key, so a re-provisioned terminal starts a new chain.
    """
    check_identifier("site", site)
    check_identifier("terminal", terminal)
    data = _SEED_CONTEXT + site.encode() + b"\x00" + terminal.encode()
    if public_key is not None:
        data += b"\x00" + bytes(public_key)
    return hashlib.sha256(data).hexdigest()


def head_message(chain: str) -> bytes:
    """The bytes a batch's ``head_sig`` signs: the head rating's chain, 32 raw bytes."""
    if not is_chain(chain):
        raise ProtocolError("chain", "is not 64 lower-case hex digits")
    return bytes.fromhex(chain)



def readable_rating_ids(payload: bytes) -> list[str]:
    """The distinct UUIDs under ``ratings[*].id`` of a batch, however broken the rest is.

    For answering a batch that cannot be accepted: the Ack names what it can
    read, so the kiosk stops resending ratings that will never be taken.
    """
    try:
        obj = loads_bounded(bytes(payload).decode("utf-8"))
    except (ValueError, RecursionError):
        return []
    items = obj.get("ratings") if isinstance(obj, dict) else None
    if not isinstance(items, list):
        return []
    ids = (item.get("id") for item in items if isinstance(item, dict))
    return list(dict.fromkeys(i for i in ids if isinstance(i, str) and _UUID_RE.match(i)))


# -- acks -------------------------------------------------------------------

_ACK_KEYS = frozenset(("v", "accepted", "duplicate", "rejected"))


@dataclass(frozen=True)
class Ack:
    """The server's answer to a batch, sent only after the batch is committed."""

    accepted: tuple[str, ...] = ()
    duplicate: tuple[str, ...] = ()
    rejected: tuple[tuple[str, str], ...] = ()  # (id, error)

    def encode(self) -> bytes:
        try:
            # The same text as the encoder below, several times faster: one Ack per message.
            quote = encode_basestring
            accepted = ",".join(map(quote, self.accepted))
            duplicate = ",".join(map(quote, self.duplicate))
            rejected = ",".join('{"id":%s,"error":%s}' % (quote(i), quote(e)) for i, e in self.rejected)
            return (f'{{"v":{VERSION},"accepted":[{accepted}],"duplicate":[{duplicate}],'
                    f'"rejected":[{rejected}]}}').encode("utf-8")
        except (TypeError, ValueError):
            pass  # not text: the encoder says what it makes of it
        return _COMPACT_ENCODER.encode(
            {
                "v": VERSION,
                "accepted": list(self.accepted),
                "duplicate": list(self.duplicate),
                "rejected": [{"id": i, "error": e} for i, e in self.rejected],
            }
        ).encode("utf-8")

    @property
    def ids(self) -> set[str]:
        """Every id the Ack names: the kiosk may forget all of them."""
        return {*self.accepted, *self.duplicate, *(i for i, _ in self.rejected)}

    @classmethod
    def decode(cls, payload: bytes) -> "Ack":
        obj = _load_message(payload, "ack", _ACK_KEYS)
        lists = {}
        for key in ("accepted", "duplicate"):
            ids = obj.get(key, [])
            if not isinstance(ids, list) or not all(
                isinstance(i, str) and _UUID_RE.match(i) for i in ids
            ):
                raise ProtocolError(key, "must be an array of UUIDs")
            lists[key] = tuple(ids)
        rejected = obj.get("rejected", [])
        if not isinstance(rejected, list):
            raise ProtocolError("rejected", "must be an array")
        pairs = []
        for index, item in enumerate(rejected):
            if (
                not isinstance(item, dict)
                or not isinstance(item.get("id"), str)
                or not _UUID_RE.match(item["id"])
                or not isinstance(item.get("error"), str)
            ):
                raise ProtocolError(f"rejected[{index}]", "must be {id: UUID, error: text}")
            pairs.append((item["id"], item["error"]))
        return cls(lists["accepted"], lists["duplicate"], tuple(pairs))


# -- status -----------------------------------------------------------------

_STATUS_FIELDS = {
    # name: (types allowed, required when online)
    "at": (str,),
    "version": (str,),
    "backlog": (int,),
    "oldest_pending_at": (str, type(None)),
    "last_tap_at": (str, type(None)),
    "last_ack_at": (str, type(None)),
    "seq": (int,),
    "clock_synced": (bool,),
    "uptime_s": (int, float),
    "disk_free_mb": (int, float, type(None)),
    "config_version": (int, str, type(None)),
    "ignored_taps": (int,),
    "error": (str, type(None)),
    # A citizen pressed the staff-call control (optional; absent means false).
    "help_requested": (bool,),
}
_TIMESTAMP_STATUS_FIELDS = ("at", "oldest_pending_at", "last_tap_at", "last_ack_at")
#: A kiosk's own error text may hold anything (an OS message with a newline):
#: it is escaped and shortened rather than losing the whole status.
_FREE_TEXT_STATUS_FIELDS = ("error",)
#: Largest number any status field may hold (an int64, as the store's integers).
_MAX_STATUS_NUMBER = 2**63 - 1
#: Set by the server (never sent by a kiosk) when it dropped a status time
#: outside the window: the names of the fields it dropped.
CLOCK_SUSPECT_FIELDS = "clock_suspect_fields"


def _check_status_field(key: str, value: object) -> None:
    """Raise ProtocolError unless *value* is a valid, bounded value of status field *key*."""
    if key not in _STATUS_FIELDS:
        raise ProtocolError(key, "is not a field of protocol v1 status")
    types = _STATUS_FIELDS[key]
    if type(value) is bool and bool not in types:
        raise ProtocolError(key, f"{value!r} has the wrong type")
    if not isinstance(value, types):
        raise ProtocolError(key, f"{value!r} has the wrong type")
    if isinstance(value, str):
        if key in _TIMESTAMP_STATUS_FIELDS:
            parse_timestamp(key, value)
        elif key in _FREE_TEXT_STATUS_FIELDS:
            pass  # escaped and shortened instead (see _bounded_text)
        elif len(value) > MAX_STATUS_TEXT:
            raise ProtocolError(key, f"longer than {MAX_STATUS_TEXT} characters")
        elif not is_clean_text(value):
            raise ProtocolError(key, f"{value!r} holds a control character or a lone surrogate")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < 0:
            raise ProtocolError(key, f"{value!r} is negative")
        if value > _MAX_STATUS_NUMBER:
            raise ProtocolError(key, f"{value!r} is out of range")


def bound_status_fields(fields: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """A status's fields as the server may compute with them at *now*.

    Fields that are not valid (say, stored before this check existed) are left
    out; a time outside the window (before 2020, or over a day after *now*) is
    set to None and its name listed under ``clock_suspect_fields``. Never raises.
    """
    out: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in fields.items():
        if key == CLOCK_SUSPECT_FIELDS:
            if isinstance(value, list):
                dropped.extend(v for v in value if v in _TIMESTAMP_STATUS_FIELDS)
            continue
        try:
            _check_status_field(key, value)
        except ProtocolError:
            continue
        if key in _TIMESTAMP_STATUS_FIELDS and value is not None:
            if not in_time_window(parse_timestamp(key, value), now):
                dropped.append(key)
                value = None
        elif key in _FREE_TEXT_STATUS_FIELDS and isinstance(value, str):
            value = printable(value, MAX_STATUS_TEXT)
        out[key] = value
    if dropped:
        out[CLOCK_SUSPECT_FIELDS] = sorted(set(dropped))
    return out


@dataclass(frozen=True)
class Status:
    """A terminal's retained status; ``state`` is "online" or "offline" (Last Will).

    An offline status carries no other field. Fields beyond the contract
    (``ignored_taps``, ``error``) are optional extensions.
    """

    state: str
    fields: Mapping[str, Any] = field(default_factory=dict)

    def encode(self) -> bytes:
        return json.dumps(
            {"v": VERSION, "state": self.state, **self.fields},
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode("utf-8")

    @classmethod
    def decode(cls, payload: bytes, now: datetime | None = None) -> "Status":
        """Validate a status; with *now* (the server's receipt time), also bound its
        times to the window (see :func:`bound_status_fields`)."""
        if isinstance(payload, (bytes, bytearray)) and len(payload) > MAX_STATUS_BYTES:
            raise ProtocolError("status", f"{len(payload)} bytes exceeds {MAX_STATUS_BYTES}")
        obj = _load_json(payload, "status")
        if not isinstance(obj, dict):
            raise ProtocolError("status", "must be a JSON object")
        _check_version(obj)
        state = _require(obj, "state", "")
        if state not in ("online", "offline"):
            raise ProtocolError("state", f"{state!r} is not online or offline")
        rest = {k: v for k, v in obj.items() if k not in ("v", "state")}
        for key, value in rest.items():
            _check_status_field(key, value)
        if state == "online":
            for key in ("at", "backlog", "seq"):
                _require(rest, key, "")
        for key in _FREE_TEXT_STATUS_FIELDS:
            if isinstance(rest.get(key), str):
                rest[key] = printable(rest[key], MAX_STATUS_TEXT)
        if now is not None:
            rest = bound_status_fields(rest, now)
        return cls(state, rest)


OFFLINE = Status("offline")


# -- alerts -----------------------------------------------------------------
#
# Retained on onetap/v1/{site}/alerts, server -> anyone allowed to read it (a
# display at the counter, a building's own system): the site's open alerts.

#: The fields of one alert, in this order; times are RFC 3339 or null.
ALERT_FIELDS = ("pk", "site", "terminal", "kind", "message", "raised_at", "cleared_at",
                "acked_at", "acked_by")
_SITE_ALERTS_KEYS = frozenset(("v", "site", "alerts"))


@dataclass(frozen=True)
class SiteAlerts:
    """A site's open alerts, each a mapping of :data:`ALERT_FIELDS`."""

    site: str
    alerts: tuple[Mapping[str, Any], ...] = ()

    def encode(self) -> bytes:
        check_identifier("site", self.site)
        body = {"v": VERSION, "site": self.site,
                "alerts": [{key: alert.get(key) for key in ALERT_FIELDS} for alert in self.alerts]}
        return _COMPACT_ENCODER.encode(body).encode("utf-8")

    @classmethod
    def decode(cls, payload: bytes) -> "SiteAlerts":
        obj = _load_message(payload, "alerts", _SITE_ALERTS_KEYS)
        site = check_identifier("site", _require(obj, "site", ""))
        alerts = _require(obj, "alerts", "")
        if not isinstance(alerts, list):
            raise ProtocolError("alerts", "must be an array")
        for index, alert in enumerate(alerts):
            if not isinstance(alert, dict):
                raise ProtocolError(f"alerts[{index}]", "must be an object")
            _check_keys(alert, frozenset(ALERT_FIELDS), f"alerts[{index}].")
            if alert.get("site") != site:
                raise ProtocolError(f"alerts[{index}].site", f"{alert.get('site')!r} is not {site!r}")
            if not isinstance(alert.get("kind"), str) or not isinstance(alert.get("message"), str):
                raise ProtocolError(f"alerts[{index}]", "needs a kind and a message")
        return cls(site, tuple(alerts))


# -- survey config ------------------------------------------------------------
#
# Retained on onetap/v1/{site}/{terminal}/config, server -> kiosk. Every field
# but ``v`` and ``version`` is optional; a timing left out (null) means "the
# kiosk's own setting". Opening hours are lines such as "mon-fri 09:00-18:00"
# or "sat 09:00-12:00 13:00-15:00"; an empty list means always open.

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_REASONS = 12
MAX_TEXT = 200
_HHMM_RE = re.compile(r"\A([01]\d|2[0-3]):([0-5]\d)\Z|\A24:00\Z")
_SURVEY_KEYS = frozenset((
    "v", "version", "question", "reasons", "reason_labels", "reason_threshold",
    "age_group", "cooldown_s", "followup_timeout_s", "thank_you_s", "hours",
    "count_when_closed",
))
#: name: (lowest, highest) for the optional timings, in seconds.
SURVEY_TIMINGS = {
    "cooldown_s": (0.0, 600.0),
    "followup_timeout_s": (1.0, 600.0),
    "thank_you_s": (0.5, 30.0),
}


def _minutes(name: str, text: str) -> int:
    if not _HHMM_RE.match(text):
        raise ProtocolError(name, f"{text!r} is not a time HH:MM")
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def _days(name: str, text: str) -> frozenset[int]:
    days: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        if first not in WEEKDAYS or (last and last not in WEEKDAYS):
            raise ProtocolError(name, f"{part!r} is not a day or day range ({'/'.join(WEEKDAYS)})")
        start = WEEKDAYS.index(first)
        end = WEEKDAYS.index(last) if last else start
        if end < start:
            raise ProtocolError(name, f"{part!r}: a range runs forwards (fri-mon is fri-sun,mon)")
        days.update(range(start, end + 1))
    return frozenset(days)


def parse_hours(name: str, entries: object) -> tuple[tuple[frozenset[int], int, int], ...]:
    """Opening-hours lines -> ((weekdays 0=Monday, start minute, end minute), ...).

    Raises ProtocolError naming ``name[i]`` for a bad line.
    """
    if not isinstance(entries, (list, tuple)):
        raise ProtocolError(name, "must be a list of lines such as 'mon-fri 09:00-18:00'")
    out = []
    for index, entry in enumerate(entries):
        where = f"{name}[{index}]"
        if not isinstance(entry, str):
            raise ProtocolError(where, "must be a string such as 'mon-fri 09:00-18:00'")
        words = entry.lower().split()
        if len(words) < 2:
            raise ProtocolError(where, f"{entry!r} needs days and at least one HH:MM-HH:MM")
        days = _days(where, words[0])
        for span in words[1:]:
            start_text, sep, end_text = span.partition("-")
            if not sep:
                raise ProtocolError(where, f"{span!r} is not HH:MM-HH:MM")
            start, end = _minutes(where, start_text), _minutes(where, end_text)
            if end <= start:
                raise ProtocolError(where, f"{span!r} ends before it starts")
            out.append((days, start, end))
    return tuple(out)



def is_open(local: datetime, hours: Sequence[tuple[frozenset[int], int, int]]) -> bool:
    """Whether *local* (a time in the counters' own zone) is within opening hours
    as :func:`parse_hours` returns them; no hours at all: always open."""
    if not hours:
        return True
    minute = local.hour * 60 + local.minute
    return any(local.weekday() in days and start <= minute < end for days, start, end in hours)


def _texts(name: str, value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ProtocolError(name, "must be an object of language -> text")
    for lang, text in value.items():
        if not _LANG_RE.match(lang):
            raise ProtocolError(f"{name}.{lang}", "is not a language tag")
        if not isinstance(text, str) or not text.strip():
            raise ProtocolError(f"{name}.{lang}", "must be a non-empty string")
        if len(text) > MAX_TEXT:
            raise ProtocolError(f"{name}.{lang}", f"longer than {MAX_TEXT} characters")
    return dict(value)


@dataclass(frozen=True)
class SurveyConfig:
    """A site's survey as the server publishes it to each terminal (retained)."""

    version: str
    question: Mapping[str, str] = field(default_factory=dict)
    reasons: tuple[str, ...] = DEFAULT_REASONS
    reason_labels: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    reason_threshold: int = 2
    age_group: bool = False
    cooldown_s: float | None = None
    followup_timeout_s: float | None = None
    thank_you_s: float | None = None
    hours: tuple[str, ...] | None = None
    count_when_closed: bool | None = None

    def __post_init__(self) -> None:
        SurveyConfig.from_dict(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": VERSION,
            "version": self.version,
            "question": dict(self.question),
            "reasons": list(self.reasons),
            "reason_labels": {k: dict(v) for k, v in self.reason_labels.items()},
            "reason_threshold": self.reason_threshold,
            "age_group": self.age_group,
            "cooldown_s": self.cooldown_s,
            "followup_timeout_s": self.followup_timeout_s,
            "thank_you_s": self.thank_you_s,
            "hours": None if self.hours is None else list(self.hours),
            "count_when_closed": self.count_when_closed,
        }

    def encode(self) -> bytes:
        return _COMPACT_ENCODER.encode(self.to_dict()).encode("utf-8")

    @classmethod
    def decode(cls, payload: bytes) -> "SurveyConfig":
        return cls.from_dict(_load_json(payload, "config"))

    @classmethod
    def from_dict(cls, obj: object) -> "SurveyConfig":
        """Validate *obj*; ProtocolError names the first wrong field."""
        if not isinstance(obj, dict):
            raise ProtocolError("config", "must be a JSON object")
        _check_version(obj)
        _check_keys(obj, _SURVEY_KEYS, "")
        version = _require(obj, "version", "")
        if type(version) is int and version >= 0:
            version = str(version)
        if not isinstance(version, str) or not 0 < len(version) <= 64 or not version.isprintable():
            raise ProtocolError("version", f"{version!r} is not a version (1..64 printable characters)")
        question = _texts("question", obj.get("question") or {})
        reasons = obj.get("reasons", list(DEFAULT_REASONS))
        if not isinstance(reasons, (list, tuple)):
            raise ProtocolError("reasons", "must be an array of reason codes")
        if len(reasons) > MAX_REASONS:
            raise ProtocolError("reasons", f"at most {MAX_REASONS}")
        for index, code in enumerate(reasons):
            if not isinstance(code, str) or not _REASON_RE.match(code):
                raise ProtocolError(f"reasons[{index}]", f"{code!r} is not a reason code")
        if len(set(reasons)) != len(reasons):
            raise ProtocolError("reasons", "has a code twice")
        labels_obj = obj.get("reason_labels") or {}
        if not isinstance(labels_obj, dict):
            raise ProtocolError("reason_labels", "must be an object of code -> {language: text}")
        labels = {}
        for code, texts in labels_obj.items():
            if code not in reasons:
                raise ProtocolError(f"reason_labels.{code}", "is not one of reasons")
            labels[code] = _texts(f"reason_labels.{code}", texts)
        threshold = obj.get("reason_threshold", 2)
        if type(threshold) is not int or not 0 <= threshold <= 5:
            raise ProtocolError("reason_threshold", f"{threshold!r} is not an integer 0..5")
        age_group = obj.get("age_group", False)
        if type(age_group) is not bool:
            raise ProtocolError("age_group", f"{age_group!r} is not true or false")
        timings: dict[str, float | None] = {}
        for key, (low, high) in SURVEY_TIMINGS.items():
            value = obj.get(key)
            if value is not None:
                if type(value) not in (int, float) or not low <= value <= high:
                    raise ProtocolError(key, f"{value!r} is not a number of seconds {low:g}..{high:g}")
                value = float(value)
            timings[key] = value
        hours = obj.get("hours")
        if hours is not None:
            parse_hours("hours", hours)
            hours = tuple(hours)
        closed = obj.get("count_when_closed")
        if closed is not None and type(closed) is not bool:
            raise ProtocolError("count_when_closed", f"{closed!r} is not true or false")
        config = object.__new__(cls)
        object.__setattr__(config, "__dict__", {
            "version": version, "question": question, "reasons": tuple(reasons),
            "reason_labels": labels, "reason_threshold": threshold, "age_group": age_group,
            **timings, "hours": hours, "count_when_closed": closed,
        })
        return config


# -- the maintenance PIN as kiosk.toml keeps it (written by provision) ----------

PIN_SCHEME = "pbkdf2_sha256"
#: About a tenth of a second on a Raspberry Pi 4: one check per PIN entry, and a
#: copied kiosk.toml does not give the PIN away at a glance.
PIN_ITERATIONS = 100_000
_PIN_HASH_RE = re.compile(rf"\A{PIN_SCHEME}\$(\d{{1,7}})\$([0-9a-f]{{32}})\$([0-9a-f]{{64}})\Z")
_PLAIN_PIN_RE = re.compile(r"\A\d{4,12}\Z")


def hash_pin(pin: str, *, salt: bytes | None = None, iterations: int = PIN_ITERATIONS) -> str:
    """``pbkdf2_sha256$ITERATIONS$SALT$KEY`` for *pin* (what provision writes)."""
    salt = secrets.token_bytes(16) if salt is None else salt
    key = hashlib.pbkdf2_hmac("sha256", pin.encode(), salt, iterations)
    return f"{PIN_SCHEME}${iterations}${salt.hex()}${key.hex()}"


def is_pin_setting(stored: str) -> bool:
    """Whether *stored* is a PIN hash or a plain PIN of 4 to 12 digits (older files)."""
    return bool(_PIN_HASH_RE.match(stored) or _PLAIN_PIN_RE.match(stored))


def is_hashed_pin(stored: str) -> bool:
    return bool(_PIN_HASH_RE.match(stored))


def pin_matches(entry: str, stored: str) -> bool:
    """Whether the digits typed on the staff screen are the PIN *stored* stands for."""
    found = _PIN_HASH_RE.match(stored)
    if found is None:
        return bool(stored) and hmac.compare_digest(entry.encode(), stored.encode())
    iterations, salt, key = int(found[1]), bytes.fromhex(found[2]), found[3]
    typed = hashlib.pbkdf2_hmac("sha256", entry.encode(), salt, iterations).hex()
    return hmac.compare_digest(typed.encode(), key.encode())
