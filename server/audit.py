"""Audit: per-terminal chain tracking at ingest, the audit export, and the independent verifier."""

from __future__ import annotations

import argparse
import base64
import binascii
import functools
import json
import logging
import os
import sys
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence, TextIO

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from kiosk.protocol import (
    ProtocolError,
    Rating,
    chain_next,
    check_head_sig,
    check_identifier,
    default_chain_seed,
    format_timestamp,
    head_message,
    parse_timestamp,
)
from server.errors import ServerError

log = logging.getLogger(__name__)

FORMAT = "onetap-audit/1"
#: Alert kinds raised by ingest (at once) and by the self-check.
SIGNATURE_ALERT = "signature"
CHAIN_ALERT = "chain"
MISSING_ALERT = "missing"
TAMPER_ALERT = "tamper"
#: Chain status of a terminal.
OK, BROKEN, UNCHAINED = "ok", "broken", "unchained"
#: Missing seq ranges kept per terminal; beyond, the oldest two are merged (and the count said).
MAX_RANGES = 200
#: Ratings read per query when exporting or self-checking.
_CHUNK = 10_000


class AuditError(ServerError, ValueError):
    """An export cannot be written or read; the message says why."""


def verify_head(public_key: bytes, chain: str, head_sig: str) -> bool:
    """Whether *head_sig* is the terminal's Ed25519 signature over *chain*."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(
            check_head_sig("head_sig", head_sig), head_message(chain))
    except (InvalidSignature, ProtocolError, ValueError):
        return False
    return True


@functools.lru_cache(maxsize=4096)
def terminal_seed(site: str, terminal: str, public_key: bytes | None) -> str:
    """The chain value a terminal's first rating chains from (kiosk.protocol.default_chain_seed)."""
    return default_chain_seed(site, terminal, public_key)


# -- tracking at ingest (pure) ------------------------------------------------------


#: The last moment _stamp formatted, and its text: a commit's terminals share one (the same object).
_last_stamp: tuple[datetime, str] | None = None


def _stamp(now: datetime) -> str:
    global _last_stamp
    memo = _last_stamp
    if memo is None or memo[0] is not now:
        memo = _last_stamp = (now, format_timestamp(now))
    return memo[1]


def _seq_of(rating: Rating) -> int:
    return rating.seq


def new_state(site: str, terminal: str, now: datetime) -> dict[str, Any]:
    return {"site": site, "terminal": terminal, "contiguous_seq": 0, "max_seq": 0, "missing": "[]",
            "missing_since": None, "status": UNCHAINED, "broken_seq": None, "tip_seq": None,
            "tip_chain": None, "head_seq": None, "head_chain": None, "head_sig": None, "head_at": None,
            "checkpoint_seq": None, "checkpoint_chain": None, "checkpoint_sig": None,
            "updated_at": _stamp(now)}


def _remove_seq(ranges: list[list], seq: int) -> list[list]:
    out = []
    for low, high, since in ranges:
        if low <= seq <= high:
            if low < seq:
                out.append([low, seq - 1, since])
            if seq < high:
                out.append([seq + 1, high, since])
        else:
            out.append([low, high, since])
    return out


def track(state: Mapping[str, Any] | None, site: str, terminal: str, ratings: Sequence[Rating], *,
          seed: str, previous_chain: Callable[[int], str | None], now: datetime,
          head: tuple[int, str, str] | None = None) -> tuple[dict[str, Any], list[str]]:
    """A terminal's chain state after *ratings* (newly stored, any order) arrived at *now*.

    Returns the new state and the chain breaks found (one message each).
    *previous_chain(seq)* looks a stored rating's chain up when the rating
    before one is neither in this batch nor the state's tip. *head* is a
    verified (seq, chain, head_sig) of this batch.
    """
    st = dict(state) if state is not None else new_state(site, terminal, now)
    # Most terminals have no gap: no JSON to read or write for them.
    missing = st["missing"]
    ranges: list[list] = json.loads(missing) if missing and missing != "[]" else []
    stamp = _stamp(now)
    # A batch of one (nearly every message): nothing else in it to chain from, nothing to sort.
    in_batch = {r.seq: r.chain for r in ratings} if len(ratings) > 1 else {}
    breaks: list[str] = []
    for rating in sorted(ratings, key=_seq_of) if len(ratings) > 1 else ratings:
        seq = rating.seq
        if seq > st["max_seq"]:
            if seq > st["max_seq"] + 1:
                ranges.append([st["max_seq"] + 1, seq - 1, stamp])
            st["max_seq"] = seq
        else:
            ranges = _remove_seq(ranges, seq)
        if rating.chain is None:
            if st["status"] == OK:
                st["status"], st["broken_seq"] = BROKEN, seq
                breaks.append(f"{site}/{terminal}: seq {seq} arrived without a chain after chained ratings")
            continue
        if seq == 1:
            previous: str | None = seed
        elif seq - 1 in in_batch:
            previous = in_batch[seq - 1]
        elif st["tip_seq"] == seq - 1:
            previous = st["tip_chain"]
        else:
            previous = previous_chain(seq - 1)
        if previous is not None and chain_next(previous, rating) != rating.chain:
            if st["status"] != BROKEN:
                st["status"], st["broken_seq"] = BROKEN, seq
                breaks.append(f"{site}/{terminal}: chain broken at seq {seq} (it does not follow"
                              f" seq {seq - 1}: altered, inserted or a kiosk that lost its outbox)")
        elif st["status"] == UNCHAINED:
            # The first chained rating after unchained ones (or after a gap)
            # cannot be linked back: later ones are checked against it.
            st["status"] = OK
        if st["tip_seq"] is None or seq > st["tip_seq"]:
            st["tip_seq"], st["tip_chain"] = seq, rating.chain
    if ranges:
        while len(ranges) > MAX_RANGES:
            (low, _, since), (_, high, _) = ranges[0], ranges[1]
            ranges[:2] = [[low, high, since]]
        ranges.sort()
        st["missing"] = json.dumps(ranges, separators=(",", ":"))
        st["missing_since"] = min(r[2] for r in ranges)
        st["contiguous_seq"] = ranges[0][0] - 1
    else:
        st["missing"], st["missing_since"], st["contiguous_seq"] = "[]", None, st["max_seq"]
    if head is not None and (st["head_seq"] is None or head[0] >= st["head_seq"]):
        st["head_seq"], st["head_chain"], st["head_sig"] = head
        st["head_at"] = stamp
    st["updated_at"] = stamp
    return st, breaks


def missing_ranges(state: Mapping[str, Any]) -> list[tuple[int, int]]:
    return [(low, high) for low, high, _ in json.loads(state.get("missing") or "[]")]


def public_view(state: Mapping[str, Any] | None) -> dict[str, Any]:
    """What /api/v1/terminals and the board show of a terminal's chain."""
    if state is None:
        return {"chain_status": UNCHAINED, "chain_broken_seq": None, "contiguous_seq": None,
                "missing_ranges": [], "missing_since": None, "verified_head_seq": None,
                "verified_head_at": None}
    return {"chain_status": state["status"], "chain_broken_seq": state.get("broken_seq"),
            "contiguous_seq": state.get("contiguous_seq"),
            "missing_ranges": [list(r) for r in missing_ranges(state)],
            "missing_since": state.get("missing_since"),
            "verified_head_seq": state.get("head_seq"), "verified_head_at": state.get("head_at")}


def missing_conditions(now: datetime, states: Iterable[Mapping[str, Any]], after_minutes: int
                       ) -> list[tuple[str, str, str]]:
    """(site, terminal, message) of every terminal whose seqs are missing for over *after_minutes*."""
    out = []
    for state in states:
        ranges = json.loads(state.get("missing") or "[]")
        old = [(low, high) for low, high, since in ranges
               if (now - parse_timestamp("since", since)).total_seconds() >= after_minutes * 60]
        if old:
            text = ", ".join(str(low) if low == high else f"{low}-{high}" for low, high in old[:10])
            more = f" and {len(old) - 10} more ranges" if len(old) > 10 else ""
            out.append((state["site"], state["terminal"],
                        f"{state['site']}/{state['terminal']}: seq {text}{more} missing for over"
                        f" {after_minutes} min (ratings lost or removed at the kiosk)"))
    return out


# -- export ---------------------------------------------------------------------------


def _rating_json(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "seq": row["seq"], "score": row["score"], "at": row["at"],
            "clock_synced": bool(row["clock_synced"]), "reason": row["reason"],
            "age_group": row["age_group"], "lang": row["lang"], "input": row["input"],
            "chain": row["chain"], "head_sig": row["head_sig"]}


def export(store: Any, site: str, day_from: date, day_to: date, *,
           public_key: Callable[[str, str], bytes | None], now: datetime) -> dict[str, Any]:
    """The site's ratings of local days [day_from, day_to], per terminal in seq order, with what
    verifies them: the chain before the first (anchor), each batch head's signature, the
    terminal's public key; extended past the range to the next signed head."""
    check_identifier("site", site)
    terminals = []
    for terminal, low, high in store.audit_spans(site, day_from.isoformat(), day_to.isoformat()):
        state = store.chain_state(site, terminal)
        key = public_key(site, terminal)
        before, signed = store.audit_neighbours(site, terminal, low, high)
        last = high if signed is None else signed
        rows: list[dict[str, Any]] = []
        start = low
        while start <= last:
            chunk = store.audit_rows(site, terminal, start, min(last, start + _CHUNK - 1))
            rows.extend(_rating_json(r) for r in chunk)
            start += _CHUNK
        anchor = None
        if before is not None:
            prior = store.audit_rows(site, terminal, before, before)
            anchor = {"seq": before, "chain": prior[0]["chain"], "head_sig": prior[0]["head_sig"]}
        if state is not None and state.get("checkpoint_seq") is not None and (
                anchor is None or state["checkpoint_seq"] > anchor["seq"]) and state["checkpoint_seq"] < low:
            anchor = {"seq": state["checkpoint_seq"], "chain": state["checkpoint_chain"],
                      "head_sig": state["checkpoint_sig"]}
        head = None
        if state is not None and state.get("head_seq") is not None and state["head_seq"] >= high:
            head = {"seq": state["head_seq"], "chain": state["head_chain"], "head_sig": state["head_sig"]}
        terminals.append({
            "terminal": terminal,
            "public_key": base64.b64encode(key).decode("ascii") if key is not None else None,
            "range_seqs": [low, high], "anchor": anchor, "head": head, "ratings": rows,
        })
    return {"format": FORMAT, "site": site, "from": day_from.isoformat(), "to": day_to.isoformat(),
            "exported_at": format_timestamp(now), "terminals": terminals}


# -- verification (no database, no server) ------------------------------------------------


@dataclass(frozen=True)
class Finding:
    site: str
    terminal: str
    seq: int
    kind: str  # missing, altered, inserted, bad signature
    detail: str = ""
    seq_to: int | None = None

    def __str__(self) -> str:
        seqs = f"seq {self.seq}" if self.seq_to in (None, self.seq) else f"seq {self.seq}-{self.seq_to}"
        tail = f" ({self.detail})" if self.detail else ""
        return f"{self.site}/{self.terminal} {seqs}: {self.kind}{tail}"


def _canonical_ok(rating: Mapping[str, Any]) -> bool:
    try:
        Rating.from_dict({k: v for k, v in rating.items() if k != "head_sig"})
    except (ProtocolError, TypeError):
        return False
    return True


def verify_terminal(site: str, entry: Mapping[str, Any], *, final: bool = True) -> tuple[list[Finding], list[str]]:
    """Findings and notes for one terminal of an export.

    *final* False: a window of a longer history (the self-check reads it in
    windows): the head and what no signature covers yet are the last window's business.
    """
    terminal = entry["terminal"]
    findings: list[Finding] = []
    notes: list[str] = []

    def find(seq: int, kind: str, detail: str = "", seq_to: int | None = None) -> None:
        findings.append(Finding(site, terminal, seq, kind, detail, seq_to))

    key = None
    if entry.get("public_key") is not None:
        try:
            key = base64.b64decode(entry["public_key"], validate=True)
            Ed25519PublicKey.from_public_bytes(key)
        except (binascii.Error, ValueError):
            raise AuditError(f"{site}/{terminal}: public_key is not an Ed25519 public key") from None
    seed = terminal_seed(site, terminal, key)
    ratings = sorted(entry.get("ratings") or [], key=lambda r: r["seq"])
    if not ratings:
        return findings, notes
    for rating in ratings:
        if not _canonical_ok(rating):
            raise AuditError(f"{site}/{terminal} seq {rating.get('seq')!r}: not a rating of protocol v1")
    anchor = entry.get("anchor")
    if anchor is not None:
        prev_seq, prev_chain = anchor["seq"], anchor.get("chain")
        if anchor.get("head_sig") and prev_chain and key is not None and not verify_head(
                key, prev_chain, anchor["head_sig"]):
            find(prev_seq, "bad signature", "the checkpoint before the range")
    else:
        # Nothing stored before the first: the terminal's history starts here, at seq 1.
        prev_seq, prev_chain = 0, seed
    first_chained = next((r["seq"] for r in ratings if r.get("chain")), None)
    by_seq: dict[int, list[Mapping[str, Any]]] = {}
    for rating in ratings:
        by_seq.setdefault(rating["seq"], []).append(rating)
    seqs = sorted(by_seq)
    uncovered: list[int] = []
    unchained = 0

    def signed_ok(rating: Mapping[str, Any]) -> bool | None:
        if not rating.get("head_sig") or not rating.get("chain") or key is None:
            return None
        return verify_head(key, rating["chain"], rating["head_sig"])

    def attested(rating: Mapping[str, Any]) -> bool:
        # The stored chain is genuine when the next rating follows from it or a signature covers it.
        if signed_ok(rating):
            return True
        return any(n.get("chain") and chain_next(rating["chain"], n) == n["chain"]
                   for n in by_seq.get(rating["seq"] + 1, ()))

    for seq in seqs:
        if seq > prev_seq + 1:
            find(prev_seq + 1, "missing", "", seq - 1)
            prev_chain = None
        group = by_seq[seq]
        if first_chained is None or seq < first_chained:
            unchained += len(group)
            for extra in group[1:]:
                find(seq, "inserted", f"a second rating {extra['id']} with this seq")
            prev_seq, prev_chain = seq, None
            continue
        genuine = None
        for rating in group:
            if not rating.get("chain"):
                continue
            if prev_chain is not None and chain_next(prev_chain, rating) == rating["chain"]:
                genuine = rating
                break
        if genuine is None:
            # No link from the rating before (altered, or the one before is missing):
            # the one whose stored chain is vouched for by what follows.
            candidates = [r for r in group if r.get("chain") and (prev_chain is None or attested(r))]
            genuine = candidates[0] if candidates else None
            if genuine is not None and prev_chain is not None:
                find(seq, "altered", "its content does not match its chain")
        for rating in group:
            if rating is genuine:
                continue
            if not rating.get("chain"):
                find(seq, "inserted", f"rating {rating['id']} has no chain")
            elif genuine is None and attested(rating):
                genuine = rating
                find(seq, "altered", "its content does not match its chain")
            else:
                find(seq, "inserted", f"rating {rating['id']} is not part of the chain")
        if genuine is None:
            prev_seq, prev_chain = seq, None
            continue
        valid = signed_ok(genuine)
        if valid is False:
            find(seq, "bad signature", "the head signature does not verify")
        uncovered.append(seq)
        if valid:
            uncovered.clear()
        prev_seq, prev_chain = seq, genuine["chain"]
    head = entry.get("head") if final else None
    if head is not None and key is not None and head.get("seq") is not None:
        if not verify_head(key, head["chain"], head["head_sig"]):
            find(head["seq"], "bad signature", "the last verified head")
        elif head["seq"] > prev_seq:
            find(prev_seq + 1, "missing", "before the last verified head", head["seq"])
        elif head["seq"] in by_seq and not any(r.get("chain") == head["chain"] for r in by_seq[head["seq"]]):
            find(head["seq"], "altered", "it differs from the last verified head")
    if key is not None and final:
        for seq in uncovered:
            if not any(f.seq == seq and f.kind in ("altered", "inserted") for f in findings):
                find(seq, "inserted", "no signed head covers it")
    if unchained:
        notes.append(f"{site}/{terminal}: {unchained} ratings from before the chain (unchained, not verifiable)")
    if key is None and first_chained is not None:
        notes.append(f"{site}/{terminal}: no public key: the chain is checked, no signature")
    findings.sort(key=lambda f: (f.seq, f.kind))
    return findings, notes


def verify(document: Mapping[str, Any]) -> tuple[list[Finding], list[str]]:
    """Every finding of an export, and notes (unchained ratings, terminals without keys)."""
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise AuditError(f"not an onetap audit export (format {FORMAT})")
    site = document.get("site")
    try:
        check_identifier("site", site)
    except ProtocolError as exc:
        raise AuditError(str(exc)) from None
    findings: list[Finding] = []
    notes: list[str] = []
    for entry in document.get("terminals") or []:
        try:
            check_identifier("terminal", entry.get("terminal"))
        except (ProtocolError, AttributeError) as exc:
            raise AuditError(f"a terminal entry: {exc}") from None
        try:
            more, told = verify_terminal(site, entry)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, AuditError):
                raise
            raise AuditError(f"{site}/{entry.get('terminal')}: malformed export ({exc!r})") from None
        findings += more
        notes += told
    return findings, notes


# -- self-check and retention ---------------------------------------------------------------


def self_check(store: Any, public_key: Callable[[str, str], bytes | None]) -> list[Finding]:
    """Verify every terminal's stored chain as an evaluator would (the whole history)."""
    findings: list[Finding] = []
    for state in store.chain_states():
        site, terminal = state["site"], state["terminal"]
        if state.get("tip_seq") is None:
            continue
        key = public_key(site, terminal)
        encoded_key = base64.b64encode(key).decode("ascii") if key is not None else None
        start = 1 if state.get("checkpoint_seq") is None else state["checkpoint_seq"] + 1
        top = max(state.get("max_seq") or 0, state.get("head_seq") or 0)
        anchor = None
        if state.get("checkpoint_seq") is not None:
            anchor = {"seq": state["checkpoint_seq"], "chain": state["checkpoint_chain"],
                      "head_sig": state["checkpoint_sig"]}
        head = None
        if state.get("head_seq") is not None:
            head = {"seq": state["head_seq"], "chain": state["head_chain"], "head_sig": state["head_sig"]}
        more: list[Finding] = []
        # In windows (a terminal may hold millions of ratings), each read one seq
        # further so that its last rating's chain is vouched for by the next.
        while True:
            end = start + _CHUNK - 1
            final = end >= top
            rows = [_rating_json(r) for r in store.audit_rows(site, terminal, start, end + 1)]
            entry = {"terminal": terminal, "anchor": anchor, "head": head, "ratings": rows,
                     "public_key": encoded_key}
            found, _ = verify_terminal(site, entry, final=final)
            more += found if final else [f for f in found if f.seq <= end]
            if final:
                break
            inside = [r for r in rows if r["seq"] <= end]
            if inside:
                last = inside[-1]
                anchor = {"seq": last["seq"], "chain": last["chain"], "head_sig": None}
            start = end + 1
        more = list(dict.fromkeys(more))  # a range seen from two windows is one finding
        # Seqs the kiosk never delivered are the "missing" alert's business, not tampering.
        lost = missing_ranges(state)
        findings += [f for f in more if not (f.kind == "missing" and any(
            low <= f.seq and (f.seq_to or f.seq) <= high for low, high in lost))]
    return findings


class PublicKeysFor:
    """Terminals' public keys for a server whose registry (ACL file) is *registry*, or none."""

    def __init__(self, registry: Path | None):
        self._keys = None
        if registry is not None:
            from server.registry import keys_dir
            from server.registry import PublicKeys

            self._keys = PublicKeys(keys_dir(registry))

    def get(self, site: str, terminal: str) -> bytes | None:
        return self._keys.get(site, terminal) if self._keys is not None else None


def checkpoint_before_prune(store: Any, before_day: str) -> int:
    """Keep, per terminal, the chain of the last rating pruning will delete (the cut), so
    that a later range still verifies from it; returns how many checkpoints moved."""
    moved = 0
    for state in store.chain_states():
        cut = store.audit_cut(state["site"], state["terminal"], before_day)
        if cut is None or (state.get("checkpoint_seq") is not None and cut["seq"] <= state["checkpoint_seq"]):
            continue
        updated = dict(state, checkpoint_seq=cut["seq"], checkpoint_chain=cut["chain"],
                       checkpoint_sig=cut["head_sig"])
        store.save_chain_state(updated)
        moved += 1
    return moved


# -- command line -----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    out = commands.add_parser("export", help="write a site's ratings with their chains and signed heads",
                              description="Write a site's ratings of [--from, --to] in seq order per"
                              " terminal, with their chains, signed heads and public keys (docs/audit.md).")
    out.add_argument("--config", metavar="FILE", help="the server's TOML config (as for run)")
    out.add_argument("--db", metavar="PATH", help="SQLite file or postgresql:// URL (as for run)")
    out.add_argument("--site", required=True)
    out.add_argument("--from", dest="day_from", required=True, metavar="YYYY-MM-DD")
    out.add_argument("--to", dest="day_to", required=True, metavar="YYYY-MM-DD")
    out.add_argument("--out", required=True, metavar="FILE")
    check = commands.add_parser("verify", help="re-check an export, with no database and no server",
                                description="Re-check an audit export on its own: exit 0 when intact,"
                                " 1 with one line per finding (docs/audit.md).")
    check.add_argument("file", metavar="FILE")


def _day(option: str, text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise AuditError(f"{option} {text!r} is not a date YYYY-MM-DD") from None


def run(args: argparse.Namespace, *, stdout: TextIO | None = None, now: datetime | None = None) -> int:
    stdout = sys.stdout if stdout is None else stdout
    if args.audit_command == "verify":
        try:
            document = json.loads(Path(args.file).read_text(encoding="utf-8"))
        except OSError as exc:
            raise AuditError(f"{args.file}: cannot read it ({exc.strerror})") from None
        except ValueError as exc:
            raise AuditError(f"{args.file}: not JSON ({exc})") from None
        findings, notes = verify(document)
        for note in notes:
            print(f"note: {note}", file=stdout)
        for finding in findings:
            print(finding, file=stdout)
        count = sum(len(t.get("ratings") or []) for t in document.get("terminals") or [])
        if findings:
            print(f"{len(findings)} finding(s) in {count} ratings", file=stdout)
            return 1
        print(f"intact: {count} ratings of {document['site']} verified", file=stdout)
        return 0
    from server.backend import open_store
    from server.config import load_config

    config = load_config(args.config, env=os.environ, overrides={"db": args.db})
    try:
        check_identifier("site", args.site)
    except ProtocolError as exc:
        raise AuditError(f"--site: {exc.reason}") from None
    day_from, day_to = _day("--from", args.day_from), _day("--to", args.day_to)
    if day_to < day_from:
        raise AuditError("--to is before --from")
    keys = PublicKeysFor(config.registry)
    store = open_store(config.db, config.timezone)
    try:
        document = export(store, args.site, day_from, day_to, public_key=keys.get,
                          now=now or datetime.now(timezone.utc))
    finally:
        store.close()
    out = Path(args.out)
    try:
        out.write_text(json.dumps(document, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    except OSError as exc:
        raise AuditError(f"--out {out}: cannot write it ({exc.strerror})") from None
    count = sum(len(t["ratings"]) for t in document["terminals"])
    print(f"{out}: {count} ratings of {len(document['terminals'])} terminals", file=stdout)
    return 0
