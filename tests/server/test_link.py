"""The MQTT link against a real mosquitto: Acks only after commit, statuses, Last Will, sessions."""

import queue
import threading
import time
import sqlite3
import uuid
from datetime import date
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from kiosk.protocol import OFFLINE_STATUS, Ack, Rating, Status, encode_batch, topic
from server.config import ServerConfig
from server.errors import StoreError
from server.link import Link, _Inbox
from server.store import Filters, SQLiteStore
from tests.backends import tuples
from tests.waiting import wait_for

DEADLINE = 30.0


def rating(seq):
    return Rating(id=str(uuid.uuid4()), seq=seq, score=1 + seq % 5,
                  at="2026-11-27T10:15:02.417+09:00", clock_synced=True)


class Terminal:
    """A test-side kiosk stand-in: publishes with paho and records each Ack with the
    number of its ids already in the database at the moment the Ack arrived."""

    def __init__(self, broker, db_path, site="s1", terminal="t1", will=True):
        self.db_path = db_path
        self.acks: queue.Queue = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{terminal}-{uuid.uuid4().hex[:6]}",
                                  protocol=mqtt.MQTTv5)
        if will:
            self.client.will_set(topic(site, terminal, "status"), OFFLINE_STATUS, qos=1, retain=True)
        self.client.on_message = self._on_message
        self.subscribed = False
        self.client.on_subscribe = lambda *a: setattr(self, "subscribed", True)
        self.client.connect("127.0.0.1", broker.port)
        self.client.subscribe(topic(site, terminal, "ack"), qos=1)
        self.client.loop_start()
        wait_for(lambda: self.subscribed, "ack subscription", timeout=DEADLINE)

    def _on_message(self, client, userdata, message):
        ack = Ack.decode(message.payload)
        if self.db_path is None:  # a database the test checks itself
            self.acks.put((ack, None))
            return
        conn = sqlite3.connect(self.db_path)
        try:
            ids = list(ack.accepted + ack.duplicate)
            marks = ",".join("?" * len(ids))
            stored = conn.execute(f"SELECT count(*) FROM ratings WHERE id IN ({marks})", ids).fetchone()[0] \
                if ids else 0
        finally:
            conn.close()
        self.acks.put((ack, stored))

    def publish(self, topic_, payload, retain=False):
        self.client.publish(topic_, payload, qos=1, retain=retain).wait_for_publish(DEADLINE)

    def close(self, will=False):
        if will:
            self.client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message"))
        else:
            self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "onetap.db"


def start_link(mosquitto, db_path, client_id="onetap-server-test"):
    config = ServerConfig(broker=mosquitto.url, client_id=client_id, db=db_path, session_expiry_s=600)
    link = Link(config, lambda: SQLiteStore.open(db_path)).start()
    assert link.wait_connected(DEADLINE), "link did not connect"
    return link


def test_ack_only_after_rows_are_committed(mosquitto, db_path):
    link = start_link(mosquitto, db_path)
    terminal = Terminal(mosquitto, db_path)
    try:
        ratings = [rating(i) for i in range(1, 501)]
        terminal.publish(topic("s1", "t1", "ratings"), encode_batch("s1", "t1", [r.encode() for r in ratings]))
        ack, stored_when_acked = terminal.acks.get(timeout=DEADLINE)
        assert set(ack.accepted) == {r.id for r in ratings}
        assert stored_when_acked == 500
        # Sent again (a kiosk that missed the Ack): all duplicate, nothing counted twice.
        terminal.publish(topic("s1", "t1", "ratings"), encode_batch("s1", "t1", [r.encode() for r in ratings[:10]]))
        ack, _ = terminal.acks.get(timeout=DEADLINE)
        assert ack.accepted == () and set(ack.duplicate) == {r.id for r in ratings[:10]}
        # A mismatched batch is quarantined and its ids rejected.
        stray = rating(501)
        terminal.publish(topic("s1", "t1", "ratings"), encode_batch("s1", "other", [stray.encode()]))
        ack, _ = terminal.acks.get(timeout=DEADLINE)
        assert [i for i, _ in ack.rejected] == [stray.id]
        assert link.counters.ratings_accepted == 500 and link.counters.quarantined == 1
        # top -H tells the worker's threads apart: paho's, the ingest and the roll-up.
        names = {Path(f"/proc/self/task/{t.native_id}/comm").read_text().strip() for t in threading.enumerate()}
        assert {"onetap-mqtt", "onetap-ingest", "onetap-roll-up"} <= names
    finally:
        terminal.close()
        link.stop()
    store = SQLiteStore.open(db_path)
    assert store.counts()["ratings"] == 500 and store.quarantine_count() == 1


def test_status_and_last_will_mark_terminals(mosquitto, db_path):
    link = start_link(mosquitto, db_path)
    terminal = Terminal(mosquitto, db_path, terminal="t7")
    store = SQLiteStore.open(db_path)
    try:
        online = Status("online", {"at": "2026-11-27T10:00:00.000+09:00", "backlog": 4, "seq": 12,
                                   "version": "0.1.0", "clock_synced": False})
        terminal.publish(topic("s1", "t7", "status"), online.encode(), retain=True)
        wait_for(lambda: [t for t in store.terminals() if t["state"] == "online"], "online status",
                 timeout=DEADLINE)
        assert store.terminals()[0]["backlog"] == 4
        terminal.close(will=True)
        wait_for(lambda: [t for t in store.terminals() if t["state"] == "offline"], "Last Will",
                 timeout=DEADLINE)
        assert store.terminals()[0]["backlog"] == 4
    finally:
        link.stop()
        store.close()


def test_batches_sent_while_the_server_is_away_arrive_from_its_session(mosquitto, db_path):
    link = start_link(mosquitto, db_path, client_id="onetap-server-session")
    link.stop()  # the broker keeps the session and queues for it
    assert not link.connected
    terminal = Terminal(mosquitto, db_path)
    try:
        ratings = [rating(i) for i in range(1, 21)]
        terminal.publish(topic("s1", "t1", "ratings"), encode_batch("s1", "t1", [r.encode() for r in ratings]))
        again = start_link(mosquitto, db_path, client_id="onetap-server-session")
        try:
            ack, stored = terminal.acks.get(timeout=DEADLINE)
            assert set(ack.accepted) == {r.id for r in ratings} and stored == 20
        finally:
            again.stop()
    finally:
        terminal.close()


def test_garbage_on_a_ratings_topic_is_quarantined_and_link_keeps_going(mosquitto, db_path):
    link = start_link(mosquitto, db_path)
    terminal = Terminal(mosquitto, db_path)
    try:
        terminal.publish(topic("s1", "t1", "ratings"), b"\x00\xffnot json")
        terminal.publish(topic("s1", "t1", "ratings"), encode_batch("s1", "t1", [rating(1).encode()]))
        ack, stored = terminal.acks.get(timeout=DEADLINE)
        assert len(ack.accepted) == 1 and stored == 1
        assert link.counters.quarantined == 1
    finally:
        terminal.close()
        link.stop()


def test_fault_hook_brackets_each_commit(mosquitto, db_path):
    calls = []
    config = ServerConfig(broker=mosquitto.url, client_id="onetap-server-fault", db=db_path)
    link = Link(config, lambda: SQLiteStore.open(db_path),
                fault=lambda point, n: calls.append((point, n, SQLiteStore.open(db_path).counts()["ratings"])))
    link.start()
    assert link.wait_connected(DEADLINE)
    terminal = Terminal(mosquitto, db_path)
    try:
        terminal.publish(topic("s1", "t1", "ratings"), encode_batch("s1", "t1", [rating(1).encode()]))
        terminal.acks.get(timeout=DEADLINE)
        # Before the commit nothing is stored; after it the row is, and the Ack is not yet sent.
        # ("message", 1) is the first message's own hook, inside the commit's guard.
        assert calls[:3] == [("before-commit", 1, 0), ("message", 1, 0), ("after-commit", 1, 1)]
    finally:
        terminal.close()
        link.stop()


def test_a_full_server_disk_sends_no_ack_and_the_kiosks_resend_lands_later(mosquitto, tmp_path):
    """SQLITE_FULL on the server: nothing committed, no Ack, so the kiosk keeps the ratings
    and sends them again; once there is room they are stored, exactly once."""
    from kiosk.outbox import Outbox
    from kiosk.uplink import Uplink

    db_path = tmp_path / "server.db"
    stores = []

    def full_store():
        store = SQLiteStore.open(db_path)
        pages = store.db.conn.execute("PRAGMA page_count").fetchone()[0]
        store.db.conn.execute(f"PRAGMA max_page_count = {pages}")  # not one page more
        stores.append(store)
        return store

    config = ServerConfig(broker=mosquitto.url, client_id="onetap-server-full", db=db_path,
                          session_expiry_s=600)
    link = Link(config, full_store).start()
    assert link.wait_connected(DEADLINE)
    outbox_path = tmp_path / "kiosk.db"
    kiosk = Outbox.open(outbox_path)
    for score in (1, 2, 3, 4, 5) * 40:
        kiosk.record(score, clock_synced=True)
    uplink = Uplink(lambda: Outbox.open(outbox_path), site="s1", terminal="full-1",
                    broker_url=mosquitto.url, ack_timeout=1.0).start()
    try:
        wait_for(lambda: link.counters.store_errors >= 1, "the server to hit its full disk",
                 timeout=DEADLINE)
        assert kiosk.stats().backlog == 200, "a rating was acknowledged that was never stored"
        assert SQLiteStore.open(db_path).counts()["ratings"] == 0
        stores[0].db.conn.execute("PRAGMA max_page_count = 1073741823")  # room again
        assert uplink.wait_idle(60), "the kiosk's resends never landed"
        with sqlite3.connect(db_path) as conn:
            seqs = [row[0] for row in conn.execute("SELECT seq FROM ratings ORDER BY seq")]
        assert seqs == list(range(1, 201))
    finally:
        uplink.stop()
        link.stop()


class PoisonStore(SQLiteStore):
    """A real SQLite store that fails, as a value the store cannot convert would,
    on any commit holding a rating with seq 999 (the poison)."""

    def ingest_many(self, batches, received_at):
        if any(r.seq == 999 for _, _, ratings, *_ in batches for r in ratings):
            raise OverflowError("date value out of range")
        return super().ingest_many(batches, received_at)


class Gate:
    """A fault hook that holds the worker before the n-th commit until released."""

    def __init__(self, commit):
        self.commit = commit
        self.held = threading.Event()
        self.release = threading.Event()

    def __call__(self, point, n):
        if point == "before-commit" and n == self.commit:
            self.held.set()
            self.release.wait(60)


def test_an_exception_escaping_a_whole_commit_costs_only_the_message_that_causes_it(mosquitto, db_path):
    gate = Gate(commit=1)
    config = ServerConfig(broker=mosquitto.url, client_id="onetap-server-poison", db=db_path)
    link = Link(config, lambda: PoisonStore.open(db_path), fault=gate).start()
    assert link.wait_connected(DEADLINE)
    terminals = [Terminal(mosquitto, db_path, terminal=f"t{i}", will=False) for i in range(4)]
    try:
        terminals[0].publish(topic("s1", "t0", "ratings"), encode_batch("s1", "t0", [rating(1).encode()]))
        assert gate.held.wait(DEADLINE)
        # These wait in the queue, so that they share the second commit with the poison.
        good = {i: [rating(s) for s in (2, 3)] for i in (1, 2, 3)}
        for i in (1, 3):
            terminals[i].publish(topic("s1", f"t{i}", "ratings"),
                                 encode_batch("s1", f"t{i}", [r.encode() for r in good[i]]))
        poison = rating(999)
        terminals[2].publish(topic("s1", "t2", "ratings"), encode_batch("s1", "t2", [poison.encode()]))
        terminals[2].publish(topic("s1", "t2", "ratings"),
                             encode_batch("s1", "t2", [r.encode() for r in good[2]]))
        wait_for(lambda: link.queue_depth == 4, "the four batches to wait", timeout=DEADLINE)
        gate.release.set()
        for i in (1, 2, 3):
            ack, stored = terminals[i].acks.get(timeout=DEADLINE)
            assert set(ack.accepted) == {r.id for r in good[i]} and stored == 2
        assert terminals[2].acks.empty(), "the poison was Acked"
        store = SQLiteStore.open(db_path)
        assert store.counts()["ratings"] == 7
        [row] = store.db.conn.execute("SELECT reason, payload FROM quarantine").fetchall()
        assert row[0] == "internal error: OverflowError('date value out of range')"
        assert poison.id.encode() in row[1]
        # The worker goes on: the next batch is stored, and one failure is not unhealthy.
        later = rating(4)
        terminals[3].publish(topic("s1", "t3", "ratings"), encode_batch("s1", "t3", [later.encode()]))
        ack, stored = terminals[3].acks.get(timeout=DEADLINE)
        assert ack.accepted == (later.id,) and stored == 1
        assert link.supervisor.threads() == {"onetap-ingest": "running", "onetap-roll-up": "running"}
        assert link.supervisor.problems() == []
    finally:
        gate.release.set()
        for terminal in terminals:
            terminal.close()
        link.stop()


def test_a_stuck_worker_is_reported_and_the_keepalive_loss_is_told_truly(mosquitto, db_path):
    gate = Gate(commit=2)
    config = ServerConfig(broker=mosquitto.url, client_id="onetap-server-stuck", db=db_path,
                          ingest_stall_s=2, session_expiry_s=600)
    link = Link(config, lambda: SQLiteStore.open(db_path), fault=gate, queue_limit=3, keepalive_s=2).start()
    assert link.wait_connected(DEADLINE)
    terminal = Terminal(mosquitto, db_path, will=False)
    try:
        first = rating(1)
        terminal.publish(topic("s1", "t1", "ratings"), encode_batch("s1", "t1", [first.encode()]))
        terminal.acks.get(timeout=DEADLINE)
        assert link.supervisor.problems() == [] and link.connected
        state = link.ingest_state()
        assert state["pending"] == 0 and state["last_processed_s"] is not None
        # Held before the second commit; the inbox (3) fills, then paho's thread waits for room.
        stuck = [rating(i) for i in range(2, 10)]
        for r in stuck:
            terminal.client.publish(topic("s1", "t1", "ratings"), encode_batch("s1", "t1", [r.encode()]), qos=1)
        assert gate.held.wait(DEADLINE)
        problems = wait_for(lambda: [p for p in link.supervisor.problems() if p.reason.startswith("ingest is")],
                            "ingest to be reported stuck", timeout=DEADLINE)
        assert problems[0].restart and problems[0].reason.startswith("ingest is stuck: ")
        # The inbox's backlog began when the message came, the worker's busy pass
        # when it took it, a moment later: the thread follows within that moment.
        wait_for(lambda: link.supervisor.threads() == {"onetap-ingest": "stuck", "onetap-roll-up": "running"},
                 "the worker thread to be reported stuck", timeout=DEADLINE)
        state = link.ingest_state()
        assert state["pending"] >= 2 and state["queue"] == 3 and state["waiting_s"] >= 2
        # paho cannot answer the broker's pings: the broker drops us, and we say so.
        wait_for(lambda: not link.connected, "the link to admit the keepalive loss", timeout=DEADLINE)
        wait_for(lambda: "exceeded timeout" in (mosquitto.directory / "mosquitto.log").read_text(),
                 "mosquitto to drop the silent client", timeout=DEADLINE)
        gate.release.set()
        # Free again: it reconnects, everything is ingested once and Acked, healthy again.
        wait_for(lambda: SQLiteStore.open(db_path).counts()["ratings"] == 9, "every rating stored",
                 timeout=DEADLINE)
        wait_for(lambda: link.connected, "the link to reconnect", timeout=DEADLINE)
        wait_for(lambda: link.supervisor.problems() == [], "ingest to be healthy again", timeout=DEADLINE)
    finally:
        gate.release.set()
        terminal.close()
        link.stop()


def test_stop_returns_in_time_with_a_wedged_worker_and_a_full_inbox(mosquitto, db_path):
    gate = Gate(commit=1)
    config = ServerConfig(broker=mosquitto.url, client_id="onetap-server-wedged", db=db_path)
    link = Link(config, lambda: SQLiteStore.open(db_path), fault=gate, queue_limit=2).start()
    assert link.wait_connected(DEADLINE)
    terminal = Terminal(mosquitto, db_path, will=False)
    try:
        for seq in range(1, 7):
            terminal.client.publish(topic("s1", "t1", "ratings"),
                                    encode_batch("s1", "t1", [rating(seq).encode()]), qos=1)
        assert gate.held.wait(DEADLINE)
        wait_for(lambda: link._queue.put_blocked_since is not None, "paho's thread to wait for room",
                 timeout=DEADLINE)
        started = time.monotonic()
        link.stop(timeout=2)
        assert time.monotonic() - started < 5
        assert SQLiteStore.open(db_path).counts()["ratings"] == 0 and terminal.acks.empty()
    finally:
        gate.release.set()
        terminal.close()


@pytest.mark.parametrize("poison_at", ["9999-12-31T23:59:59Z", "0001-01-01T00:00:00+14:00"])
def test_the_poison_rating_of_issue_9_stops_no_one(mosquitto, backend, poison_at):
    """A date the server's time zone cannot hold, in the same commit as three other
    terminals' batches: theirs are stored and Acked, the worker goes on, and the
    poison is kept (quarantined, or counted by receipt time once the protocol's
    boundary bounds it), never lost silently. On SQLite and PostgreSQL."""
    gate = Gate(commit=1)
    config = ServerConfig(broker=mosquitto.url, client_id="onetap-server-issue9", db=backend.db)
    link = Link(config, backend.open, fault=gate).start()
    assert link.wait_connected(DEADLINE)
    terminals = {name: Terminal(mosquitto, None, terminal=name, will=False) for name in ("a", "b", "c", "p")}
    store = backend.open()
    try:
        terminals["a"].publish(topic("s1", "a", "ratings"), encode_batch("s1", "a", [rating(1).encode()]))
        assert gate.held.wait(DEADLINE)
        poison = Rating(id=str(uuid.uuid4()), seq=1, score=5, at=poison_at, clock_synced=True)
        good = {name: rating(2) for name in ("a", "b", "c")}
        terminals["p"].publish(topic("s1", "p", "ratings"), encode_batch("s1", "p", [poison.encode()]))
        for name, r in good.items():
            terminals[name].publish(topic("s1", name, "ratings"), encode_batch("s1", name, [r.encode()]))
        wait_for(lambda: link.queue_depth == 4, "the four batches to share a commit", timeout=DEADLINE)
        gate.release.set()
        terminals["a"].acks.get(timeout=DEADLINE)  # the first commit's
        for name, r in good.items():
            ack, _ = terminals[name].acks.get(timeout=DEADLINE)
            assert ack.accepted == (r.id,)
        stored = {row[0] for row in tuples(store, "SELECT id FROM ratings")}
        assert {r.id for r in good.values()} <= stored
        quarantined = [bytes(row[0]) for row in tuples(store, "SELECT payload FROM quarantine")]
        assert (poison.id in stored) + sum(poison.id.encode() in q for q in quarantined) == 1
        later = rating(3)
        terminals["b"].publish(topic("s1", "b", "ratings"), encode_batch("s1", "b", [later.encode()]))
        ack, _ = terminals["b"].acks.get(timeout=DEADLINE)
        assert ack.accepted == (later.id,)
        assert link.supervisor.problems() == []
    finally:
        gate.release.set()
        for terminal in terminals.values():
            terminal.close()
        link.stop()
        store.close()


def test_a_database_that_cannot_be_opened_stops_the_start(mosquitto, tmp_path):
    config = ServerConfig(broker=mosquitto.url, client_id="onetap-server-nodb", db=tmp_path / "x.db")

    def no_store():
        raise StoreError("unable to open database file")

    link = Link(config, no_store)
    with pytest.raises(StoreError, match="unable to open"):
        link.start()
    assert link.supervisor.threads() == {"onetap-ingest": "stopped"} and link.supervisor.problems() == []


def test_acks_go_at_qos0_and_a_lost_one_is_made_up_by_the_kiosks_resend_counted_once(mosquitto, db_path, tmp_path):
    from kiosk.outbox import Outbox
    from kiosk.uplink import Uplink

    gate = Gate(commit=1)
    config = ServerConfig(broker=mosquitto.url, client_id="onetap-server-lost-ack", db=db_path,
                          session_expiry_s=600)
    link = Link(config, lambda: SQLiteStore.open(db_path), fault=gate).start()
    assert link.wait_connected(DEADLINE)
    outbox_path = tmp_path / "kiosk.db"
    kiosk = Outbox.open(outbox_path)
    for score in (1, 2, 3):
        kiosk.record(score, clock_synced=True)
    uplink = Uplink(lambda: Outbox.open(outbox_path), site="s1", terminal="lost-1",
                    broker_url=mosquitto.url, ack_timeout=30).start()
    try:
        assert gate.held.wait(DEADLINE)
        # The kiosk goes away (its session kept) while the server holds its batch: the
        # Ack published after the commit is QoS 0, so the broker drops it, not queues it.
        uplink.stop()
        gate.release.set()
        wait_for(lambda: link.counters.acks >= 1, "the commit and its Ack", timeout=DEADLINE)
        assert link.counters.ratings_accepted == 3
        assert kiosk.stats().backlog == 3, "the Ack reached a kiosk that was away"
        uplink = Uplink(lambda: Outbox.open(outbox_path), site="s1", terminal="lost-1",
                        broker_url=mosquitto.url, ack_timeout=30).start()
        assert uplink.wait_idle(DEADLINE), "the resend was never Acked"
        assert kiosk.stats().backlog == 0
        assert link.counters.ratings_duplicate == 3 and link.counters.ratings_accepted == 3
        with sqlite3.connect(db_path) as conn:
            assert [row[0] for row in conn.execute("SELECT seq FROM ratings ORDER BY seq")] == [1, 2, 3]
        store = SQLiteStore.open(db_path)
        days = store.summary(Filters(date(2000, 1, 1), date(2100, 1, 1)))
        store.close()
        assert sum(days.values()) == 3
    finally:
        gate.release.set()
        uplink.stop()
        link.stop()


def _publish_packet(topic_: str, payload: bytes) -> bytes:
    body = len(topic_).to_bytes(2, "big") + topic_.encode() + payload
    return bytes([0x30, len(body)]) + body  # PUBLISH, QoS 0, a one-byte length


def socket_client(client_id):
    """The server's _Client on one end of a socket pair, and what it hands on; the other end plays the broker."""
    import socket

    from server.link import _Client

    client = _Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
    got = []
    client.on_message = lambda c, u, m: got.append((m.topic, m.payload))
    ours, broker = socket.socketpair()
    ours.setblocking(False)
    client._sock = ours
    return client, got, ours, broker


def test_the_client_reads_ahead_and_hands_out_every_whole_packet_it_read():
    # paho's select() cannot see bytes already read off the socket: each packet
    # read ahead must be handled in the same turn, and a partial one kept.
    client, got, ours, broker = socket_client("read-ahead")
    try:
        data = b"".join(_publish_packet(f"onetap/v1/s/t{i}/ratings", b"payload %d" % i) for i in range(4))
        broker.sendall(data[:-3])  # three whole packets and most of a fourth
        client.loop_read()
        assert [t for t, _ in got] == [f"onetap/v1/s/t{i}/ratings" for i in range(3)]
        broker.sendall(data[-3:])
        client.loop_read()
        assert got[3] == ("onetap/v1/s/t3/ratings", b"payload 3")
    finally:
        broker.close()


class RollUpFailsTwice(SQLiteStore):
    """A real SQLite store whose first two roll-ups fail as a full disk would."""

    failures_left = 2

    def roll_up(self, limit=10_000):
        if RollUpFailsTwice.failures_left > 0:
            RollUpFailsTwice.failures_left -= 1
            raise StoreError("database or disk is full")
        return super().roll_up(limit)


def test_the_worker_rolls_up_its_queued_counts_and_a_failed_roll_up_loses_nothing(mosquitto, db_path):
    config = ServerConfig(broker=mosquitto.url, client_id="onetap-server-roll", db=db_path)
    link = Link(config, lambda: RollUpFailsTwice.open(db_path)).start()
    assert link.wait_connected(DEADLINE)
    terminal = Terminal(mosquitto, db_path)
    november = Filters(date(2026, 11, 1), date(2026, 11, 30))
    try:
        ratings = [rating(i) for i in range(1, 101)]
        terminal.publish(topic("s1", "t1", "ratings"), encode_batch("s1", "t1", [r.encode() for r in ratings]))
        ack, _ = terminal.acks.get(timeout=DEADLINE)
        assert len(ack.accepted) == 100
        store = SQLiteStore.open(db_path)
        # Counted at once, whether the counts are queued or rolled up.
        assert sum(store.summary(november).values()) == 100
        wait_for(lambda: store.counts()["rollup_queue"] == 0, "the worker to roll up its counts",
                 timeout=DEADLINE)
        assert link.counters.roll_up_errors == 2
        assert link.supervisor.problems() == []  # failing no longer, and not for long
        assert tuples(store, "SELECT sum(n1 + n2 + n3 + n4 + n5) FROM roll_site_day") == [(100,)]
        assert sum(store.summary(november).values()) == 100
        store.close()
    finally:
        terminal.close()
        link.stop()


class RollUpFailsUntilFreed(SQLiteStore):
    """A real SQLite store whose roll-ups fail until the test frees them."""

    freed = threading.Event()

    def roll_up(self, limit=10_000):
        if not RollUpFailsUntilFreed.freed.is_set():
            raise StoreError("disk I/O error")
        return super().roll_up(limit)


def test_roll_ups_failing_for_long_are_told_by_health_and_nothing_is_miscounted(mosquitto, db_path):
    config = ServerConfig(broker=mosquitto.url, client_id="onetap-server-rollfail", db=db_path,
                          ingest_stall_s=2)
    link = Link(config, lambda: RollUpFailsUntilFreed.open(db_path)).start()
    assert link.wait_connected(DEADLINE)
    terminal = Terminal(mosquitto, db_path)
    november = Filters(date(2026, 11, 1), date(2026, 11, 30))
    try:
        terminal.publish(topic("s1", "t1", "ratings"), encode_batch("s1", "t1", [rating(i).encode() for i in (1, 2)]))
        ack, _ = terminal.acks.get(timeout=DEADLINE)
        assert len(ack.accepted) == 2
        wait_for(lambda: any("cannot be rolled up" in p.reason for p in link.supervisor.problems()),
                 "health to tell of the failing roll-ups", timeout=DEADLINE)
        problem, = link.supervisor.problems()
        assert not problem.restart  # a restart would not mend the disk
        store = SQLiteStore.open(db_path)
        assert sum(store.summary(november).values()) == 2 and store.counts()["rollup_queue"] > 0
        RollUpFailsUntilFreed.freed.set()
        wait_for(lambda: store.counts()["rollup_queue"] == 0, "the roll-up once freed", timeout=DEADLINE)
        wait_for(lambda: link.supervisor.problems() == [], "health to be clear again", timeout=DEADLINE)
        assert sum(store.summary(november).values()) == 2
        store.close()
    finally:
        terminal.close()
        link.stop()


def _v5_publish(topic_: str | bytes, payload: bytes, *, qos: int = 0, mid: int = 0, retain: bool = False,
                properties: bytes = b"\x00") -> bytes:
    name = topic_ if isinstance(topic_, bytes) else topic_.encode()
    body = len(name).to_bytes(2, "big") + name + (mid.to_bytes(2, "big") if qos else b"")
    body += properties + payload
    assert len(body) < 128
    return bytes([0x30 | qos << 1 | retain, len(body)]) + body


def _read_all(sock) -> bytes:
    sock.setblocking(False)
    out = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except BlockingIOError:
            return out
        if not chunk:
            return out
        out += chunk


def test_deliver_takes_what_paho_would_hand_on_message_and_pubacks_every_qos1_message():
    # The short path (no MQTTMessage, no Properties object) must hand on exactly what
    # paho's own path does, leave what it does not take (properties, QoS 2) to paho,
    # and PUBACK each QoS 1 message once, after it was handed on.
    import socket

    from server.link import _Client

    packets = [
        _v5_publish("onetap/v1/s/t1/ratings", b'{"a":1}', qos=1, mid=7),
        # A payload-format-indicator property: paho's path.
        _v5_publish("onetap/v1/s/t2/ratings", b'{"b":2}', qos=1, mid=8, properties=b"\x02\x01\x01"),
        _v5_publish("onetap/v1/s/t3/status", b'{"c":3}', retain=True),
        _v5_publish("onetap/v1/s/t4/ratings", b"", qos=1, mid=300),
        _v5_publish(b"onetap/v1/s/\xff/ratings", b"x" * 40, qos=1, mid=9, retain=True),  # not UTF-8
    ]

    def run(short: bool) -> tuple[list, bytes]:
        client = _Client(CallbackAPIVersion.VERSION2, client_id="short-path", protocol=mqtt.MQTTv5)
        got = []
        client.on_message = lambda c, u, m: got.append(("paho", m._topic, bytes(m.payload), bool(m.retain)))
        if short:
            client.deliver = lambda topic_, payload, retained: got.append(("short", topic_, payload, retained))
        ours, broker = socket.socketpair()
        ours.setblocking(False)
        client._sock = ours
        try:
            broker.sendall(b"".join(packets))
            client.loop_read()
            client.loop_write()
            return got, _read_all(broker)
        finally:
            broker.close()
            ours.close()

    short, short_wire = run(True)
    paho, paho_wire = run(False)
    assert [g[1:] for g in short] == [g[1:] for g in paho]  # the same messages, in order
    assert [g[0] for g in short] == ["short", "paho", "short", "short", "short"]
    puback = lambda mid: b"\x40\x02" + mid.to_bytes(2, "big")  # noqa: E731
    assert sorted(short_wire[i:i + 4] for i in range(0, len(short_wire), 4)) == sorted(
        puback(mid) for mid in (7, 8, 300, 9))
    assert sorted(paho_wire[i:i + 4] for i in range(0, len(paho_wire), 4)) == sorted(
        puback(mid) for mid in (7, 8, 300, 9))


def test_a_reads_pubacks_are_written_in_the_same_turn_as_the_read():
    # Not left for the loop's next turn (one more select() a read only to write them).
    import socket

    client, got, ours, broker = socket_client("puback-now")
    client.deliver = lambda topic_, payload, retained: got.append((topic_, payload))
    # As in paho's own thread (loop_start), where queuing does not write by itself.
    client._thread = threading.current_thread()
    client._sockpairR, client._sockpairW = socket.socketpair()
    try:
        body = lambda n: (len(b"onetap/v1/s/t/ratings").to_bytes(2, "big") + b"onetap/v1/s/t/ratings"  # noqa: E731
                          + n.to_bytes(2, "big") + b"{}")
        broker.sendall(b"".join(bytes([0x32, len(body(n))]) + body(n) for n in (5, 6)))
        client.loop_read()
        assert got == [(b"onetap/v1/s/t/ratings", b"{}")] * 2
        assert not client.want_write(), "PUBACKs still queued after the read"
        assert _read_all(broker) == b"\x40\x02\x00\x05\x40\x02\x00\x06"
    finally:
        for sock in (broker, ours, client._sockpairR, client._sockpairW):
            sock.close()


@pytest.mark.parametrize("protocol", [mqtt.MQTTv5, mqtt.MQTTv311])
@pytest.mark.parametrize("size", [0, 100, 127, 128, 20_000, 3_000_000])
def test_publish_unwatched_writes_what_paho_writes_at_qos0(protocol, size):
    import socket

    from server.link import _Client

    payload = bytes(range(256)) * (size // 256) + b"a" * (size % 256)
    wire = []
    for ours_path in (False, True):
        client = _Client(CallbackAPIVersion.VERSION2, client_id="unwatched", protocol=protocol)
        ours, broker = socket.socketpair()
        ours.setblocking(False)
        client._sock = ours
        received = b""
        try:
            messages = [("onetap/v1/s1/t1/ack", payload), ("onetap/v1/s1/터미널/ack", b"{}")]
            if ours_path:
                assert client.publish_unwatched(messages)
            else:
                for topic_, body in messages:
                    client.publish(topic_, body, qos=0)
            while True:
                client.loop_write()
                chunk = _read_all(broker)
                received += chunk
                if not chunk and not client._out_packet:
                    break
            wire.append(received)
        finally:
            broker.close()
            ours.close()
    assert wire[0] == wire[1] and len(wire[0]) > size


def test_packets_whole_in_the_bytes_read_ahead_of_any_length_are_handed_out_in_order():
    def packet(topic_: str, payload: bytes) -> bytes:
        body = len(topic_).to_bytes(2, "big") + topic_.encode() + payload
        length, size = b"", len(body)
        while True:  # MQTT's variable-length integer: 1, 2 and 3 bytes here
            byte, size = size & 0x7F, size >> 7
            length += bytes([byte | 0x80 if size else byte])
            if not size:
                break
        return bytes([0x30]) + length + body

    sizes = [0, 5, 121, 122, 300, 16_000, 20_000, 40_000, 7]
    sent = [(f"onetap/v1/s/t{i}/ratings", bytes([i]) * size) for i, size in enumerate(sizes)]
    client, got, ours, broker = socket_client("read-ahead-long")
    try:
        # 85 kB: read 64 KiB at a time, so one packet is split between two reads too.
        broker.sendall(b"".join(packet(t, p) for t, p in sent))
        for _ in range(10):
            assert client.loop_read() == mqtt.MQTT_ERR_SUCCESS
        assert got == sent
    finally:
        broker.close()
        ours.close()


def test_the_inbox_backlog_is_judged_unrounded_so_it_says_stuck_no_later_than_the_worker():
    clock = [100.0]
    inbox = _Inbox(limit=10, clock=lambda: clock[0])
    assert inbox.backlog() == (0, None)
    inbox.put(("onetap/v1/s1/t1/ratings", b"{}", False))
    clock[0] = 120.04  # the worker's busy clock (unrounded) already says "over 20 s"
    assert inbox.backlog() == (1, pytest.approx(20.04))
    assert inbox.state()["waiting_s"] == 20.0  # shown rounded, which alone would not be over 20
    inbox.take(1, timeout=0)
    inbox.done(1, progress=True)
    assert inbox.backlog() == (0, None)
