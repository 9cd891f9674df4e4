"""The audit chain on both backends: ingest verifies, export and the offline verifier catch tampering."""

from __future__ import annotations

import base64
import io
import json
import uuid
from argparse import Namespace
from datetime import date, datetime, timedelta, timezone

import pytest
import sqlite_utils
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kiosk import protocol
from kiosk.outbox import Outbox
from kiosk.protocol import Ack, Rating, encode_batch, topic
from kiosk.uplink import payload_chain
from server import audit
from server.ingest import Ingest
from tests.backends import execute, query

KST = timezone(timedelta(hours=9))
SITE = "gangnam-office"
NOW = datetime(2026, 11, 3, 12, 0, tzinfo=timezone.utc)
DAY1 = datetime(2026, 11, 1, 10, 0, tzinfo=KST)
DAY2 = datetime(2026, 11, 2, 10, 0, tzinfo=KST)


class Kiosk:
    """A real kiosk outbox (chained at release) whose batches are signed as the uplink signs them."""

    def __init__(self, terminal: str, *, key: bool = True, chained: bool = True):
        self.terminal = terminal
        self.key = Ed25519PrivateKey.generate() if key else None
        self.public = (self.key.public_key().public_bytes(serialization.Encoding.Raw,
                                                          serialization.PublicFormat.Raw)
                       if self.key else None)
        seed = protocol.default_chain_seed(SITE, terminal, self.public) if chained else None
        self.outbox = Outbox(sqlite_utils.Database(memory=True), chain_seed=seed)

    def tap(self, n: int, when: datetime = DAY1) -> None:
        for i in range(n):
            self.outbox.record(1 + i % 5, now=when + timedelta(minutes=i), clock_synced=True)

    def batches(self, size: int, *, sign: bool = True) -> list[bytes]:
        rows = self.outbox.pending(limit=100_000)
        out = []
        for start in range(0, len(rows), size):
            chunk = [r[2] for r in rows[start:start + size]]
            sig = None
            if sign and self.key is not None and payload_chain(chunk[-1]):
                sig = base64.b64encode(self.key.sign(protocol.head_message(payload_chain(chunk[-1])))).decode()
            out.append(encode_batch(SITE, self.terminal, chunk, sig))
        return out


def make_ingest(store, kiosks, now=NOW):
    keys = {k.terminal: k.public for k in kiosks}
    return Ingest(store, now=lambda: now, public_key=lambda site, terminal: keys.get(terminal))


def deliver(ingest, kiosk, payloads):
    acks = []
    for payload in payloads:
        acks += ingest.handle([(topic(SITE, kiosk.terminal, "ratings"), payload)])
    return acks


def verify_export(store, kiosks, tmp_path, day_from=date(2026, 11, 1), day_to=date(2026, 11, 2)):
    keys = {k.terminal: k.public for k in kiosks}
    document = audit.export(store, SITE, day_from, day_to, public_key=lambda s, t: keys.get(t), now=NOW)
    path = tmp_path / "audit.json"
    path.write_text(json.dumps(document))
    out = io.StringIO()
    code = audit.run(Namespace(audit_command="verify", file=str(path)), stdout=out)
    return code, out.getvalue()


@pytest.fixture
def kiosk_t1(store):
    kiosk = Kiosk("t-1")
    kiosk.tap(10, DAY1)
    kiosk.tap(10, DAY2)
    ingest = make_ingest(store, [kiosk])
    deliver(ingest, kiosk, kiosk.batches(7))
    return kiosk


def test_a_terminals_ratings_verify_and_ingest_keeps_the_state(store, kiosk_t1, tmp_path):
    code, out = verify_export(store, [kiosk_t1], tmp_path)
    assert code == 0, out
    assert "intact: 20 ratings" in out
    [state] = store.chain_states()
    assert state["status"] == audit.OK and state["contiguous_seq"] == 20
    assert audit.missing_ranges(state) == []
    assert state["head_seq"] == 20 and state["head_chain"] == kiosk_t1.outbox.chain_head()[1]
    rows = query(store, "SELECT chain, head_sig FROM ratings ORDER BY seq")
    assert all(protocol.is_chain(r["chain"]) for r in rows)
    # One signature per batch of 7: seqs 7, 14 and 20.
    assert [i + 1 for i, r in enumerate(rows) if r["head_sig"]] == [7, 14, 20]


def test_chain_and_head_signature_go_in_with_the_insert_never_an_update(store):
    # Any UPDATE of ratings during ingest fails the commit: the chain and the
    # head signature must be written by the INSERT itself.
    if store.dialect.name == "sqlite":
        execute(store, "CREATE TRIGGER ratings_frozen BEFORE UPDATE ON ratings"
                       " BEGIN SELECT RAISE(ABORT, 'ratings updated'); END")
    else:
        execute(store, "CREATE FUNCTION ratings_frozen() RETURNS trigger LANGUAGE plpgsql AS"
                       " $$ BEGIN RAISE EXCEPTION 'ratings updated'; END $$")
        execute(store, "CREATE TRIGGER ratings_frozen BEFORE UPDATE ON ratings"
                       " FOR EACH ROW EXECUTE FUNCTION ratings_frozen()")
    kiosk = Kiosk("t-1")
    kiosk.tap(10, DAY1)
    ingest = make_ingest(store, [kiosk])
    # Two batches in one commit, and a resend of the first (its duplicates keep their first chain).
    first, second = kiosk.batches(6)
    acks = ingest.handle([(topic(SITE, "t-1", "ratings"), first), (topic(SITE, "t-1", "ratings"), second)])
    assert sum(len(ack.accepted) for _, ack in acks) == 10
    [(_, again)] = ingest.handle([(topic(SITE, "t-1", "ratings"), first)])
    assert len(again.duplicate) == 6 and not again.accepted
    rows = query(store, "SELECT seq, chain, head_sig FROM ratings ORDER BY seq")
    expected = {json.loads(r[2])["seq"]: payload_chain(r[2]) for r in kiosk.outbox.pending(limit=100)}
    assert [(r["seq"], r["chain"]) for r in rows] == sorted(expected.items())
    assert [r["seq"] for r in rows if r["head_sig"]] == [6, 10]
    [state] = store.chain_states()
    assert state["status"] == audit.OK and state["contiguous_seq"] == 10 and state["head_seq"] == 10


def test_deleting_one_row_is_named_missing(store, kiosk_t1, tmp_path):
    execute(store, "DELETE FROM ratings WHERE terminal = 't-1' AND seq = 9")
    code, out = verify_export(store, [kiosk_t1], tmp_path)
    assert code == 1
    assert f"{SITE}/t-1 seq 9: missing" in out


def test_deleting_the_last_row_is_named_missing(store, kiosk_t1, tmp_path):
    execute(store, "DELETE FROM ratings WHERE terminal = 't-1' AND seq = 20")
    code, out = verify_export(store, [kiosk_t1], tmp_path)
    assert code == 1 and f"{SITE}/t-1 seq 20: missing" in out


def test_changing_one_score_is_named_altered(store, kiosk_t1, tmp_path):
    execute(store, "UPDATE ratings SET score = CASE WHEN score = 5 THEN 4 ELSE 5 END WHERE terminal = 't-1' AND seq = 12")
    code, out = verify_export(store, [kiosk_t1], tmp_path)
    assert code == 1
    assert f"{SITE}/t-1 seq 12: altered" in out
    assert out.count("altered") == 1, out


def test_changing_a_signed_head_is_named_altered(store, kiosk_t1, tmp_path):
    execute(store, "UPDATE ratings SET score = CASE WHEN score = 5 THEN 4 ELSE 5 END WHERE terminal = 't-1' AND seq = 14")
    code, out = verify_export(store, [kiosk_t1], tmp_path)
    assert code == 1 and f"{SITE}/t-1 seq 14: altered" in out


@pytest.mark.parametrize("forged_seq", [21, 5])
def test_inserting_one_forged_row_is_named_inserted(store, kiosk_t1, tmp_path, forged_seq):
    # Whoever writes SQL knows the algorithm: the forged row even carries the right link.
    [before] = query(store, f"SELECT * FROM ratings WHERE terminal = 't-1' AND seq = {forged_seq - 1}")
    forged = Rating(str(uuid.uuid4()), forged_seq, 5, before["at"], True)
    chain = protocol.chain_next(before["chain"], forged)
    execute(store, "INSERT INTO ratings (id, site, terminal, seq, score, at, clock_synced, reason, age_group,"
                   " lang, input, received_at, day, hour, weekday, chain)"
                   f" SELECT '{forged.id}', site, terminal, {forged_seq}, 5, at, clock_synced, NULL, NULL,"
                   f" lang, input, received_at, day, hour, weekday, '{chain}'"
                   f" FROM ratings WHERE terminal = 't-1' AND seq = {forged_seq - 1}")
    code, out = verify_export(store, [kiosk_t1], tmp_path)
    assert code == 1
    assert f"{SITE}/t-1 seq {forged_seq}: inserted" in out


def test_forged_signature_in_the_export_is_named(store, kiosk_t1, tmp_path):
    other = Ed25519PrivateKey.generate()
    [row] = query(store, "SELECT chain FROM ratings WHERE terminal = 't-1' AND seq = 7")
    sig = base64.b64encode(other.sign(bytes.fromhex(row["chain"]))).decode()
    execute(store, f"UPDATE ratings SET head_sig = '{sig}' WHERE terminal = 't-1' AND seq = 7")
    code, out = verify_export(store, [kiosk_t1], tmp_path)
    assert code == 1 and f"{SITE}/t-1 seq 7: bad signature" in out


def test_batch_with_a_bad_signature_is_quarantined_alerted_and_not_counted(store):
    kiosk = Kiosk("t-2")
    kiosk.tap(5)
    impostor = Ed25519PrivateKey.generate()
    rows = kiosk.outbox.pending()
    head = payload_chain(rows[-1][2])
    sig = base64.b64encode(impostor.sign(protocol.head_message(head))).decode()
    payload = encode_batch(SITE, "t-2", [r[2] for r in rows], sig)
    [(_, ack)] = deliver(make_ingest(store, [kiosk]), kiosk, [payload])
    assert ack.accepted == () and len(ack.rejected) == 5
    assert all("bad head signature" in error for _, error in ack.rejected)
    assert query(store, "SELECT count(*) AS n FROM ratings")[0]["n"] == 0
    [quarantined] = query(store, "SELECT reason, payload FROM quarantine")
    assert "bad head signature" in quarantined["reason"] and bytes(quarantined["payload"]) == payload
    [alert] = store.open_alerts()
    assert (alert["terminal"], alert["kind"]) == ("t-2", audit.SIGNATURE_ALERT)
    # The genuine batch is then accepted.
    [(_, ack)] = deliver(make_ingest(store, [kiosk]), kiosk, kiosk.batches(5))
    assert len(ack.accepted) == 5


def test_kiosk_without_keys_still_delivers_and_shows_unchained(store, tmp_path):
    old = Kiosk("t-old", key=False, chained=False)
    old.tap(4)
    [(_, ack)] = deliver(make_ingest(store, [old]), old, old.batches(10))
    assert len(ack.accepted) == 4
    [state] = store.chain_states()
    assert state["status"] == audit.UNCHAINED and state["contiguous_seq"] == 4
    code, out = verify_export(store, [old], tmp_path)
    assert code == 0 and "unchained" in out


def test_chain_break_at_ingest_raises_an_alert_at_once(store):
    kiosk = Kiosk("t-3")
    kiosk.tap(6)
    rows = kiosk.outbox.pending()
    # A kiosk whose rating 4 was changed after release (its chain no longer fits).
    obj = json.loads(rows[3][2])
    obj["score"] = 6 - obj["score"]
    jsons = [r[2] for r in rows]
    jsons[3] = json.dumps(obj, separators=(",", ":"))
    deliver(make_ingest(store, [kiosk]), kiosk, [encode_batch(SITE, "t-3", jsons)])
    [state] = store.chain_states()
    assert (state["status"], state["broken_seq"]) == (audit.BROKEN, 4)
    [alert] = store.open_alerts()
    assert alert["kind"] == audit.CHAIN_ALERT and "seq 4" in alert["message"]


def test_missing_ranges_are_kept_and_alerted_when_they_persist(store):
    kiosk = Kiosk("t-4")
    kiosk.tap(12)
    rows = kiosk.outbox.pending()
    ingest = make_ingest(store, [kiosk])
    keep = [r for r in rows if r[1] not in {rows[4][1], rows[5][1], rows[6][1], rows[9][1]}]
    sig = base64.b64encode(kiosk.key.sign(protocol.head_message(payload_chain(keep[-1][2])))).decode()
    deliver(ingest, kiosk, [encode_batch(SITE, "t-4", [r[2] for r in keep], sig)])
    [state] = store.chain_states()
    assert audit.missing_ranges(state) == [(5, 7), (10, 10)]
    assert state["contiguous_seq"] == 4 and state["status"] == audit.OK
    assert audit.missing_conditions(NOW + timedelta(minutes=10), [state], 30) == []
    [(site, terminal, message)] = audit.missing_conditions(NOW + timedelta(minutes=31), [state], 30)
    assert (site, terminal) == (SITE, "t-4") and "seq 5-7, 10 missing" in message
    # A late delivery fills a range.
    deliver(ingest, kiosk, [encode_batch(SITE, "t-4", [rows[9][2]])])
    [state] = store.chain_states()
    assert audit.missing_ranges(state) == [(5, 7)]


def test_pruning_keeps_a_checkpoint_and_a_later_range_verifies(store, kiosk_t1, tmp_path):
    assert audit.checkpoint_before_prune(store, "2026-11-02") == 1
    assert store.prune_ratings("2026-11-02") == 10
    [state] = store.chain_states()
    assert state["checkpoint_seq"] == 10
    code, out = verify_export(store, [kiosk_t1], tmp_path, date(2026, 11, 2), date(2026, 11, 2))
    assert code == 0, out
    # ...and tampering after the cut is still caught.
    execute(store, "UPDATE ratings SET score = CASE WHEN score = 5 THEN 4 ELSE 5 END WHERE terminal = 't-1' AND seq = 11")
    code, out = verify_export(store, [kiosk_t1], tmp_path, date(2026, 11, 2), date(2026, 11, 2))
    assert code == 1 and "seq 11: altered" in out


@pytest.mark.parametrize("window", [10_000, 4, 7])
def test_self_check_names_what_changed_in_the_database(store, kiosk_t1, monkeypatch, window):
    # Read in windows (as for a terminal with millions of ratings): the same findings.
    monkeypatch.setattr(audit, "_CHUNK", window)
    keys = {"t-1": kiosk_t1.public}
    assert audit.self_check(store, lambda s, t: keys.get(t)) == []
    execute(store, "UPDATE ratings SET score = CASE WHEN score = 5 THEN 4 ELSE 5 END WHERE terminal = 't-1' AND seq = 3")
    execute(store, "DELETE FROM ratings WHERE terminal = 't-1' AND seq = 16")
    found = {(f.seq, f.kind) for f in audit.self_check(store, lambda s, t: keys.get(t))}
    assert found == {(3, "altered"), (16, "missing")}


def test_self_check_alert_through_the_engine(store, kiosk_t1, tmp_path):
    from server.alerts import AlertEngine
    from server.config import load_config

    keys = tmp_path / "keys" / SITE
    keys.mkdir(parents=True)
    (keys / "t-1.pub").write_text(base64.b64encode(kiosk_t1.public).decode())
    acl = tmp_path / "acl"
    acl.write_text("")
    config = load_config(None, env={}, overrides={"registry": str(acl)})
    engine = AlertEngine(store, config)
    engine.run_once(NOW)
    assert not [a for a in store.open_alerts() if a["kind"] == audit.TAMPER_ALERT]
    execute(store, "UPDATE ratings SET score = CASE WHEN score = 5 THEN 4 ELSE 5 END WHERE terminal = 't-1' AND seq = 3")
    engine.run_once(NOW + timedelta(minutes=5))  # not due yet
    assert not [a for a in store.open_alerts() if a["kind"] == audit.TAMPER_ALERT]
    changes = engine.run_once(NOW + timedelta(minutes=61))
    [alert] = [a for a in store.open_alerts() if a["kind"] == audit.TAMPER_ALERT]
    assert "seq 3: altered" in alert["message"]
    assert any(a["kind"] == audit.TAMPER_ALERT for a in changes["raised"])


def test_export_and_verify_commands(backend, tmp_path):
    from server.__main__ import main

    store = backend.open()
    try:
        kiosk = Kiosk("t-9", key=False)
        kiosk.tap(5)
        deliver(make_ingest(store, [kiosk]), kiosk, kiosk.batches(3))
    finally:
        store.close()
    out = tmp_path / "export.json"
    assert main(["audit", "export", "--db", str(backend.db), "--site", SITE, "--from", "2026-11-01",
                 "--to", "2026-11-30", "--out", str(out)]) == 0
    document = json.loads(out.read_text())
    assert [r["seq"] for r in document["terminals"][0]["ratings"]] == [1, 2, 3, 4, 5]
    assert main(["audit", "verify", str(out)]) == 0
    document["terminals"][0]["ratings"][2]["score"] = 5 if document["terminals"][0]["ratings"][2]["score"] != 5 else 4
    out.write_text(json.dumps(document))
    assert main(["audit", "verify", str(out)]) == 1


def test_verify_refuses_what_is_not_an_export(tmp_path, capsys):
    from server.__main__ import main

    path = tmp_path / "x.json"
    path.write_text('{"format": "something else"}')
    assert main(["audit", "verify", str(path)]) == 1
    assert "not an onetap audit export" in capsys.readouterr().err


@pytest.mark.parametrize("document", [
    {"format": "onetap-audit/1", "site": "s", "terminals": [{"terminal": "t", "ratings": [{"seq": 1}]}]},
    {"format": "onetap-audit/1", "site": "s", "terminals": [{"terminal": "t", "ratings": [7]}]},
    {"format": "onetap-audit/1", "site": "s", "terminals": [{"terminal": "t", "public_key": "x",
                                                           "ratings": []}]},
    {"format": "onetap-audit/1", "site": "S!", "terminals": []},
    {"format": "onetap-audit/1", "site": "s", "terminals": [{"terminal": 5}]},
])
def test_a_malformed_export_is_a_clear_error(document):
    with pytest.raises(audit.AuditError):
        audit.verify(document)


@pytest.mark.parametrize("seed", range(20))
def test_missing_ranges_are_the_seqs_not_delivered(seed):
    import random

    rng = random.Random(seed)
    top = rng.randint(1, 60)
    delivered = rng.sample(range(1, top + 1), rng.randint(1, top))  # any order, in batches
    expected_missing = set(range(1, max(delivered) + 1)) - set(delivered)
    state = None
    while delivered:
        batch, delivered = delivered[:rng.randint(1, 8)], delivered
        delivered = delivered[len(batch):]
        ratings = [Rating(str(uuid.uuid4()), seq, 3, "2026-11-01T10:00:00.000+09:00", True) for seq in batch]
        state, breaks = audit.track(state, SITE, "t", ratings, seed=protocol.default_chain_seed(SITE, "t"),
                                    previous_chain=lambda seq: None, now=NOW)
        assert breaks == []
    got = set()
    for low, high in audit.missing_ranges(state):
        got.update(range(low, high + 1))
    assert got == expected_missing
    assert state["contiguous_seq"] == (min(got) - 1 if got else state["max_seq"])
    assert state["status"] == audit.UNCHAINED


def test_terminals_api_and_board_show_the_chain(backend):
    import re

    from fastapi.testclient import TestClient

    from server.api import create_app
    from server.auth import hash_password
    from server.config import ServerConfig, UserConfig

    store = backend.open()
    try:
        kiosk = Kiosk("t-5")
        kiosk.tap(9)
        rows = kiosk.outbox.pending()
        keep = [r for i, r in enumerate(rows) if i not in (4, 5, 6)]
        sig = base64.b64encode(kiosk.key.sign(protocol.head_message(payload_chain(keep[-1][2])))).decode()
        deliver(make_ingest(store, [kiosk]), kiosk, [encode_batch(SITE, "t-5", [r[2] for r in keep], sig)])
    finally:
        store.close()
    token = "an-api-token-long-enough-0123"
    config = ServerConfig(api_token=token, users={"admin": UserConfig(hash_password("admin-password"), None)})
    client = TestClient(create_app(backend.open, config, now=lambda: NOW))
    [terminal] = client.get("/api/v1/terminals", headers={"Authorization": f"Bearer {token}"}).json()
    assert terminal["chain_status"] == "ok" and terminal["missing_ranges"] == [[5, 7]]
    assert terminal["contiguous_seq"] == 4 and terminal["verified_head_seq"] == 9
    page = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]
    client.post("/login", data={"csrf": csrf, "username": "admin", "password": "admin-password"})
    board = client.get("/live").text
    assert "기록 무결성" in board and "정상 · 누락: 5–7번" in board


def test_signed_batch_from_a_terminal_without_a_registered_key_is_accepted_unsigned(store):
    kiosk = Kiosk("t-6")
    kiosk.tap(3)
    ingest = Ingest(store, now=lambda: NOW, public_key=lambda site, terminal: None)
    [(_, ack)] = deliver(ingest, kiosk, kiosk.batches(3))
    assert len(ack.accepted) == 3
    [state] = store.chain_states()
    assert state["head_seq"] is None  # nothing verified: the server has no key to verify with


def test_ingest_alerts_are_delivered_by_the_engine(store):
    from server.alerts import AlertEngine
    from server.config import ServerConfig

    kiosk = Kiosk("t-7")
    kiosk.tap(3)
    impostor = Ed25519PrivateKey.generate()
    rows = kiosk.outbox.pending()
    sig = base64.b64encode(impostor.sign(protocol.head_message(payload_chain(rows[-1][2])))).decode()
    deliver(make_ingest(store, [kiosk]), kiosk, [encode_batch(SITE, "t-7", [r[2] for r in rows], sig)])
    changes = AlertEngine(store, ServerConfig()).run_once(NOW)
    assert [a["kind"] for a in changes["raised"]] == [audit.SIGNATURE_ALERT]
    assert AlertEngine(store, ServerConfig()).run_once(NOW)["raised"] == []  # once
