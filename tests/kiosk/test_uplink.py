"""The uplink against a real mosquitto and a test-side MQTT peer that plays the server."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from kiosk import protocol
from kiosk.errors import OutboxError
from kiosk.outbox import Outbox
from kiosk.uplink import Uplink
from tests.waiting import wait_for

SITE = "test-site"


class Peer:
    """Plays the server: receives batches, Acks them (unless told to stay silent), sees status.

    A persistent MQTT 5 session, so batches published while it is away are
    queued by the broker as they would be for the real server.
    """

    def __init__(self, broker, client_id="test-server", ack=True):
        self.ack = ack
        self.batches: list[protocol.DecodedBatch] = []
        self.seqs: dict[str, list[int]] = defaultdict(list)
        self.status: dict[str, list[bytes]] = defaultdict(list)
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv5)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", broker.port, clean_start=False, properties=props)
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.loop_start()
        assert self.subscribed.wait(10), "peer could not subscribe"

    def _on_connect(self, client, userdata, flags, rc, props):
        client.subscribe([(f"{protocol.TOPIC_ROOT}/+/+/ratings", 1),
                          (f"{protocol.TOPIC_ROOT}/+/+/status", 1)])

    def _on_message(self, client, userdata, msg):
        site, terminal, kind = protocol.parse_topic(msg.topic)
        if kind == "status":
            with self.lock:
                self.status[terminal].append(msg.payload)
            return
        batch = protocol.decode_batch(msg.payload)
        with self.lock:
            self.batches.append(batch)
            self.seqs[terminal].extend(r.seq for r in batch.ratings)
        if self.ack:
            self.send_ack(terminal, protocol.Ack(accepted=tuple(r.id for r in batch.ratings)), site)

    def send_ack(self, terminal, ack, site=SITE):
        self.send_raw(terminal, ack.encode() if isinstance(ack, protocol.Ack) else ack, site)

    def send_raw(self, terminal, payload, site=SITE, kind="ack", retain=False):
        self.client.publish(protocol.topic(site, terminal, kind), payload, qos=1, retain=retain)

    def received(self, terminal) -> list[int]:
        with self.lock:
            return list(self.seqs[terminal])

    def statuses(self, terminal) -> list[bytes]:
        with self.lock:
            return list(self.status[terminal])

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def outbox_path(tmp_path) -> Path:
    return tmp_path / "outbox.db"


def make_uplink(path, broker, terminal="t-01", **kw) -> Uplink:
    kw.setdefault("reconnect_delay", (0.2, 1.0))
    return Uplink(lambda: Outbox.open(path), site=SITE, terminal=terminal,
                  broker_url=broker.url, **kw)


def tap(outbox: Outbox, n: int):
    return [outbox.record(4, clock_synced=True) for _ in range(n)]


def test_drains_the_outbox_and_marks_acked(mosquitto, outbox_path):
    peer = Peer(mosquitto)
    outbox = Outbox.open(outbox_path)
    tap(outbox, 1200)
    uplink = make_uplink(outbox_path, mosquitto).start()
    try:
        assert uplink.wait_idle(30)
        assert outbox.stats().backlog == 0
        assert sorted(peer.received("t-01")) == list(range(1, 1201))
        assert all(len(b.ratings) <= protocol.MAX_BATCH_RATINGS for b in peer.batches)
        # New taps after the drain go out on notify.
        tap(outbox, 3)
        assert uplink.wait_idle(30)
        assert sorted(set(peer.received("t-01"))) == list(range(1, 1204))
    finally:
        uplink.stop()
        peer.close()


def test_status_is_retained_and_valid_and_will_is_offline_on_kill(mosquitto, outbox_path, tmp_path):
    outbox = Outbox.open(outbox_path)
    tap(outbox, 2)
    uplink = make_uplink(outbox_path, mosquitto, keepalive=2,
                         status_extra=lambda: {"ignored_taps": 7}).start()
    try:
        wait_for(lambda: uplink.connected, what="connect")
        # A late subscriber still gets the retained status.
        peer = Peer(mosquitto, client_id="late-watcher", ack=False)
        wait_for(lambda: peer.statuses("t-01"), what="retained status")
        status = protocol.Status.decode(peer.statuses("t-01")[-1])
        assert status.state == "online"
        assert status.fields["backlog"] == 2 and status.fields["seq"] == 2
        assert status.fields["ignored_taps"] == 7
        for key in ("at", "version", "oldest_pending_at", "last_tap_at", "last_ack_at",
                    "clock_synced", "uptime_s", "disk_free_mb", "config_version"):
            assert key in status.fields
    finally:
        # Cut the uplink's socket without a DISCONNECT: the broker must send
        # the Last Will. (The uplink's own thread is then stopped quietly.)
        uplink._client._sock.shutdown(socket.SHUT_RDWR)
    try:
        # (`in`, not the last one: the uplink soon reconnects and is online again.)
        wait_for(lambda: protocol.OFFLINE_STATUS in peer.statuses("t-01"), what="last will")
    finally:
        uplink.stop()
        peer.close()


def test_a_status_change_is_published_at_once_not_at_the_next_period(mosquitto, outbox_path):
    """A staff call must reach the board now: status_changed() publishes a Status, the hour's period aside."""
    calling = {"help_requested": False}
    peer = Peer(mosquitto, ack=False)
    uplink = make_uplink(outbox_path, mosquitto, status_interval=3600,
                         status_extra=lambda: dict(calling)).start()
    try:
        wait_for(lambda: peer.statuses("t-01"), what="the status on connecting")
        assert protocol.Status.decode(peer.statuses("t-01")[-1]).fields["help_requested"] is False
        for requested in (True, False):
            seen = len(peer.statuses("t-01"))
            calling["help_requested"] = requested
            uplink.status_changed()
            wait_for(lambda: len(peer.statuses("t-01")) > seen, what="a status after the change")
            assert protocol.Status.decode(peer.statuses("t-01")[-1]).fields["help_requested"] is requested
    finally:
        uplink.stop()
        peer.close()


def test_a_ui_problem_joins_the_outboxs_in_the_status_error(mosquitto, outbox_path):
    outbox_error = {"text": None}

    class FailingOutbox(Outbox):
        def stats(self):
            return dataclasses.replace(super().stats(), error=outbox_error["text"])

    peer = Peer(mosquitto, ack=False)
    uplink = Uplink(lambda: FailingOutbox.open(outbox_path), site=SITE, terminal="t-01",
                    broker_url=mosquitto.url, status_interval=3600,
                    status_extra=lambda: {"error": "the site's texts are not voiced"}).start()
    try:
        wait_for(lambda: peer.statuses("t-01"), what="the status on connecting")
        assert protocol.Status.decode(peer.statuses("t-01")[-1]).fields["error"] == "the site's texts are not voiced"
        seen = len(peer.statuses("t-01"))
        outbox_error["text"] = "disk full: recording a tap failed"
        uplink.status_changed()
        wait_for(lambda: len(peer.statuses("t-01")) > seen, what="a status after the change")
        assert (protocol.Status.decode(peer.statuses("t-01")[-1]).fields["error"]
                == "disk full: recording a tap failed; the site's texts are not voiced")
    finally:
        uplink.stop()
        peer.close()


def test_graceful_stop_publishes_offline(mosquitto, outbox_path):
    peer = Peer(mosquitto, ack=False)
    uplink = make_uplink(outbox_path, mosquitto).start()
    wait_for(lambda: peer.statuses("t-01"), what="online status")
    uplink.stop()
    wait_for(lambda: peer.statuses("t-01")[-1] == protocol.OFFLINE_STATUS, what="offline status")
    peer.close()


def test_resends_after_ack_timeout(mosquitto, outbox_path):
    peer = Peer(mosquitto, ack=False)
    outbox = Outbox.open(outbox_path)
    tap(outbox, 5)
    uplink = make_uplink(outbox_path, mosquitto, ack_timeout=0.5).start()
    try:
        wait_for(lambda: len(peer.received("t-01")) >= 10, what="a resend")
        assert uplink.counters["ack_timeouts"] >= 1
        assert outbox.stats().backlog == 5  # a PUBACK is not an Ack
        peer.ack = True
        assert uplink.wait_idle(30)
        assert outbox.stats().backlog == 0
    finally:
        uplink.stop()
        peer.close()


def test_replays_after_broker_restart_and_publishes_nothing_while_down(mosquitto, outbox_path):
    peer = Peer(mosquitto)
    outbox = Outbox.open(outbox_path)
    tap(outbox, 3)
    # The broker loses what the uplink replays before the new peer subscribes;
    # the Ack timeout then sends it again.
    uplink = make_uplink(outbox_path, mosquitto, ack_timeout=1.0).start()
    try:
        assert uplink.wait_idle(30)
        sent_before = uplink.counters["batches_sent"]
        mosquitto.kill9()
        wait_for(lambda: not uplink.connected, what="disconnect")
        tap(outbox, 40)  # an offline terminal keeps tapping
        uplink.notify()
        time.sleep(0.5)  # give a wrong implementation the chance to publish
        assert uplink.counters["batches_sent"] == sent_before
        # Nothing new parked in paho's RAM queue (a status sent just before
        # the kill may still wait for its PUBACK there; that is not a tap).
        parked = [protocol.decode_batch(m.payload) for m in uplink._client._out_messages.values()
                  if m.topic.endswith("/ratings")]
        assert not [r for b in parked for r in b.ratings if r.seq > 3]
        # The broker comes back having lost everything (kill -9, fresh data).
        mosquitto.restart(empty=True)
        peer.close()
        peer = Peer(mosquitto)
        assert uplink.wait_idle(30)
        assert set(peer.received("t-01")) >= set(range(4, 44))
        assert outbox.stats().backlog == 0
    finally:
        uplink.stop()
        peer.close()


def test_replays_unacked_batches_on_reconnect(mosquitto, outbox_path):
    """Sent but never Acked before the connection dropped: sent again after reconnecting."""
    peer = Peer(mosquitto, ack=False)
    outbox = Outbox.open(outbox_path)
    tap(outbox, 7)
    uplink = make_uplink(outbox_path, mosquitto, ack_timeout=300).start()
    try:
        wait_for(lambda: len(peer.received("t-01")) == 7, what="first send")
        # Every publish acknowledged by the broker first: one still waiting for
        # its PUBACK when the socket drops is sent again by paho itself on
        # reconnect, a third copy (harmless to the server, but not what this counts).
        wait_for(lambda: not uplink._client._out_messages, what="the broker's PUBACKs")
        # Drop the connection under the uplink (the broker and the peer stay
        # up). The Ack timeout is long: only the reconnect can cause a resend.
        peer.ack = True
        uplink._client._sock.shutdown(socket.SHUT_RDWR)
        assert uplink.wait_idle(30)
        assert sorted(peer.received("t-01")) == sorted(list(range(1, 8)) * 2)
        assert uplink.counters["connects"] >= 2
        assert sorted(set(peer.received("t-01"))) == list(range(1, 8))
        assert outbox.stats().backlog == 0
    finally:
        uplink.stop()
        peer.close()


def test_malformed_acks_are_ignored(mosquitto, outbox_path):
    peer = Peer(mosquitto, ack=False)
    outbox = Outbox.open(outbox_path)
    ratings = tap(outbox, 2)
    uplink = make_uplink(outbox_path, mosquitto, ack_timeout=300).start()
    try:
        wait_for(lambda: len(peer.received("t-01")) == 2, what="send")
        for junk in (b"", b"\xff\xfe", b"[]", b'{"v":2,"accepted":[]}', b'{"v":1,"accepted":["x"]}',
                     b'{"v":1,"rejected":[{"id":1}]}', b"{" * 5000):
            peer.send_raw("t-01", junk)
        wait_for(lambda: uplink.counters["malformed_acks"] == 7, what="malformed acks seen")
        peer.send_ack("t-01", protocol.Ack(accepted=(ratings[0].id,),
                                           rejected=((ratings[1].id, "score: bad"),)))
        assert uplink.wait_idle(30)
        row = outbox.conn.execute(
            "SELECT ack_outcome, ack_error FROM ratings WHERE id = ?", (ratings[1].id,)
        ).fetchone()
        assert row == ("rejected", "score: bad")
    finally:
        uplink.stop()
        peer.close()


def test_acks_that_arrive_together_are_marked_in_one_commit(mosquitto, outbox_path):
    marked: list[int] = []
    first_taken = threading.Event()

    class SlowOutbox(Outbox):
        def mark_acked(self, ack, rowids_by_id=None):
            marked.append(len(ack.ids))
            if len(marked) == 1:
                first_taken.set()
                time.sleep(1.0)  # the other two Acks arrive meanwhile
            return super().mark_acked(ack, rowids_by_id)

    peer = Peer(mosquitto, ack=False)
    outbox = Outbox.open(outbox_path)
    ratings = tap(outbox, 1500)
    uplink = Uplink(lambda: SlowOutbox.open(outbox_path), site=SITE, terminal="t-01",
                    broker_url=mosquitto.url, ack_timeout=300).start()
    try:
        wait_for(lambda: len(peer.batches) == 3, what="three batches sent")
        peer.send_ack("t-01", protocol.Ack(accepted=tuple(r.id for r in peer.batches[0].ratings)))
        assert first_taken.wait(10)
        peer.send_ack("t-01", protocol.Ack(accepted=tuple(r.id for r in peer.batches[1].ratings)))
        peer.send_ack("t-01", protocol.Ack(duplicate=tuple(r.id for r in peer.batches[2].ratings)))
        assert uplink.wait_idle(30)
        assert marked == [500, 1000]
        assert uplink.counters["acked"] == 1500 and outbox.stats().backlog == 0
        outcomes = dict(outbox.conn.execute("SELECT ack_outcome, count(*) FROM ratings GROUP BY ack_outcome"))
        assert outcomes == {"accepted": 1000, "duplicate": 500}
        assert len(peer.batches) == 3  # nothing resent
        assert {r.id for r in ratings} == {r.id for b in peer.batches for r in b.ratings}
    finally:
        uplink.stop()
        peer.close()


def test_the_next_batch_goes_out_before_the_acks_are_marked(mosquitto, outbox_path):
    # In a drain the server would otherwise wait while the kiosk writes the marks.
    marking = threading.Event()
    go_on = threading.Event()

    class SlowOutbox(Outbox):
        def mark_acked(self, ack, rowids_by_id=None):
            marking.set()
            assert go_on.wait(10)
            return super().mark_acked(ack, rowids_by_id)

    peer = Peer(mosquitto, ack=False)
    outbox = Outbox.open(outbox_path)
    tap(outbox, 1000)
    uplink = Uplink(lambda: SlowOutbox.open(outbox_path), site=SITE, terminal="t-01",
                    broker_url=mosquitto.url, ack_timeout=300, window=1).start()
    try:
        wait_for(lambda: len(peer.batches) == 1, what="the first batch")
        peer.send_ack("t-01", protocol.Ack(accepted=tuple(r.id for r in peer.batches[0].ratings)))
        assert marking.wait(10)
        wait_for(lambda: len(peer.batches) == 2, what="the second batch while the first is being marked")
        assert not uplink.wait_idle(0.2)  # idle only once the marks are written
        go_on.set()
        peer.send_ack("t-01", protocol.Ack(accepted=tuple(r.id for r in peer.batches[1].ratings)))
        assert uplink.wait_idle(30)
        assert outbox.stats().backlog == 0 and uplink.counters["acked"] == 1000
        assert sorted(peer.received("t-01")) == list(range(1, 1001))  # nothing sent twice
    finally:
        go_on.set()
        uplink.stop()
        peer.close()


def test_acks_that_cannot_be_marked_are_earned_again_by_a_resend(mosquitto, outbox_path):
    # Not by the Ack timeout (300 s here): the batch goes again at once, the
    # server answers "duplicate", and that Ack is marked.
    failures = []

    class FailingOnceOutbox(Outbox):
        def mark_acked(self, ack, rowids_by_id=None):
            if not failures:
                failures.append(len(ack.ids))
                raise OutboxError("disk full (test)")
            return super().mark_acked(ack, rowids_by_id)

    peer = Peer(mosquitto)
    outbox = Outbox.open(outbox_path)
    tap(outbox, 600)
    uplink = Uplink(lambda: FailingOnceOutbox.open(outbox_path), site=SITE, terminal="t-01",
                    broker_url=mosquitto.url, ack_timeout=300).start()
    try:
        assert uplink.wait_idle(30)
        assert failures and outbox.stats().backlog == 0
        assert uplink.counters["acked"] == 600 and uplink.counters["ack_timeouts"] == 0
        assert sorted(set(peer.received("t-01"))) == list(range(1, 601))
        # What was in flight then (the unmarked 500 and maybe the other 100) went once more.
        sent = Counter(peer.received("t-01"))
        assert max(sent.values()) == 2 and sum(n == 2 for n in sent.values()) >= failures[0]
    finally:
        uplink.stop()
        peer.close()


def test_held_tap_is_sent_once_released(mosquitto, outbox_path):
    peer = Peer(mosquitto)
    outbox = Outbox.open(outbox_path)
    held = outbox.record(1, hold=True, clock_synced=True)
    tap(outbox, 2)
    uplink = make_uplink(outbox_path, mosquitto).start()
    try:
        assert uplink.wait_idle(30)
        assert sorted(peer.received("t-01")) == [2, 3]
        outbox.annotate(held.id, reason="wait_time")
        outbox.release(held.id)
        assert uplink.wait_idle(30)
        assert 1 in peer.received("t-01")
        sent = [r for b in peer.batches for r in b.ratings if r.seq == 1]
        assert sent[0].reason == "wait_time"
        assert outbox.stats().backlog == 0
    finally:
        uplink.stop()
        peer.close()


def test_config_payload_reaches_handler(mosquitto, outbox_path):
    got = []
    peer = Peer(mosquitto, ack=False)
    peer.send_raw("t-01", b'{"v":1,"config_version":3}', kind="config", retain=True)

    def handler(payload):
        got.append(payload)
        raise RuntimeError("a bad handler must not stop the uplink")

    uplink = make_uplink(outbox_path, mosquitto, on_config=handler).start()
    try:
        wait_for(lambda: got, what="config")
        assert got[0] == b'{"v":1,"config_version":3}'
        outbox = Outbox.open(outbox_path)
        tap(outbox, 1)
        peer.ack = True
        assert uplink.wait_idle(30)
    finally:
        uplink.stop()
        peer.close()


def test_from_config_and_prune_at_start(mosquitto, tmp_path):
    from kiosk.config import load_config
    cfg = load_config(env={}, overrides={
        "site": SITE, "terminal": "t-02", "broker": mosquitto.url, "data_dir": tmp_path})
    cfg = type(cfg)(**{**cfg.__dict__, "outbox": type(cfg.outbox)(retention_days=0)})
    outbox = Outbox.open(cfg.outbox_path)
    old = tap(outbox, 3)
    outbox.mark_acked(protocol.Ack(accepted=tuple(r.id for r in old)))
    tap(outbox, 2)
    peer = Peer(mosquitto)
    uplink = Uplink.from_config(cfg, reconnect_delay=(0.2, 1.0)).start()
    try:
        assert (uplink.site, uplink.terminal, uplink.port) == (SITE, "t-02", mosquitto.port)
        assert uplink.wait_idle(30)
        assert sorted(peer.received("t-02")) == [4, 5]
        # Retention 0: every confirmed rating is pruned (at start, then periodically).
        wait_for(lambda: outbox.conn.execute("SELECT count(*) FROM ratings").fetchone()[0] <= 2,
                 what="prune")
        assert outbox.record(3, clock_synced=True).seq == 6
    finally:
        uplink.stop()
        peer.close()


def test_same_terminal_name_at_two_sites_both_stay_connected(mosquitto, tmp_path):
    """Every facility has a counter-01: their client ids differ, so neither kicks the other off."""
    peer = Peer(mosquitto)
    uplinks = [Uplink(lambda site=site: Outbox.open(tmp_path / f"{site}.db"), site=site,
                      terminal="counter-01", broker_url=mosquitto.url, reconnect_delay=(0.2, 1.0))
               for site in ("site-a", "site-b")]
    try:
        for uplink in uplinks:
            outbox = Outbox.open(tmp_path / f"{uplink.site}.db")
            tap(outbox, 3)
            outbox.close()
            uplink.start()
        for uplink in uplinks:
            assert uplink.wait_idle(20), uplink.site
        time.sleep(2.0)  # a kicked-off client reconnects within a second: give it the chance
        assert [u.counters["connects"] for u in uplinks] == [1, 1]
        assert all(u.connected for u in uplinks)
        assert [u.client_id for u in uplinks] == ["onetap-site-a-counter-01", "onetap-site-b-counter-01"]
        log = (mosquitto.directory / "mosquitto.log").read_text()
        assert "as onetap-site-a-counter-01" in log and "as onetap-site-b-counter-01" in log
        assert len(peer.received("counter-01")) == 6
    finally:
        for uplink in uplinks:
            uplink.stop()
        peer.close()


def test_signs_each_batch_head_with_the_terminal_key(mosquitto, outbox_path):
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    seed = protocol.default_chain_seed(SITE, "t-sig")
    peer = Peer(mosquitto)
    outbox = Outbox.open(outbox_path, chain_seed=seed)
    tap(outbox, 700)
    uplink = make_uplink(outbox_path, mosquitto, terminal="t-sig", signing_key=key).start()
    try:
        assert uplink.wait_idle(30)
        assert len(peer.batches) >= 2
        head = seed
        by_seq = sorted((r for b in peer.batches for r in b.ratings), key=lambda r: r.seq)
        for rating in by_seq:
            head = protocol.chain_next(head, rating)
            assert rating.chain == head
        for batch in peer.batches:
            top = max(batch.ratings, key=lambda r: r.seq)
            key.public_key().verify(base64.b64decode(batch.head_sig), protocol.head_message(top.chain))
    finally:
        uplink.stop()
        peer.close()


def test_without_a_key_batches_go_unsigned(mosquitto, outbox_path):
    peer = Peer(mosquitto)
    outbox = Outbox.open(outbox_path, chain_seed=protocol.default_chain_seed(SITE, "t-nokey"))
    tap(outbox, 3)
    uplink = make_uplink(outbox_path, mosquitto, terminal="t-nokey").start()
    try:
        assert uplink.wait_idle(30)
        assert peer.batches and all(b.head_sig is None for b in peer.batches)
        assert all(r.chain is not None for b in peer.batches for r in b.ratings)
    finally:
        uplink.stop()
        peer.close()


def test_load_signing_key_names_a_bad_file(tmp_path):
    from kiosk.errors import ConfigError
    from kiosk.uplink import load_signing_key

    bad = tmp_path / "k.pem"
    bad.write_text("not a key")
    with pytest.raises(ConfigError, match="not a PEM private key"):
        load_signing_key(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_signing_key(tmp_path / "missing.pem")
