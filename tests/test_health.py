"""The real server process under injected faults: /healthz tells the truth, systemd's watchdog
stops being petted when ingest is stuck, and SIGTERM always ends the process within 10 s."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import requests
from paho.mqtt.enums import CallbackAPIVersion

from kiosk.protocol import Ack, Rating, encode_batch, topic
from tests.server_process import BIN, ServerProcess
from tests.waiting import wait_for

DEADLINE = 30.0
SIGTERM_LIMIT_S = 10.0


class NotifySocket:
    """A stand-in for systemd's notification socket: records every datagram the server sends."""

    def __init__(self):
        # sun_path holds 108 bytes: pytest's tmp_path can be longer.
        self.directory = Path(tempfile.mkdtemp(prefix="notify-", dir="/tmp"))
        self.path = self.directory / "sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.2)

    def env(self, watchdog_s: float) -> dict:
        return {"NOTIFY_SOCKET": str(self.path), "WATCHDOG_USEC": str(int(watchdog_s * 1e6))}

    def read(self, seconds: float) -> list[str]:
        """Every notification (one per line) that arrives within *seconds*."""
        out = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                out.extend(self.sock.recv(4096).decode().splitlines())
            except socket.timeout:
                continue
        return out

    def wait_for(self, line: str, timeout: float = DEADLINE) -> list[str]:
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen += self.read(0.2)
            if line in seen:
                return seen
        raise AssertionError(f"no {line} within {timeout} s (got {seen[-10:]})")

    def close(self):
        self.sock.close()
        shutil.rmtree(self.directory, ignore_errors=True)


class Kiosk:
    """Publishes rating batches for a few terminals of site s1 and collects their Acks."""

    def __init__(self, broker):
        self.acks: queue.Queue = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5)
        self.client.on_message = lambda c, u, m: self.acks.put((m.topic.split("/")[3], Ack.decode(m.payload)))
        subscribed = queue.Queue()
        self.client.on_subscribe = lambda *a: subscribed.put(True)
        self.client.connect("127.0.0.1", broker.port)
        self.client.subscribe("onetap/v1/s1/+/ack", qos=1)
        self.client.loop_start()
        subscribed.get(timeout=DEADLINE)

    def send(self, terminal: str, seq: int) -> Rating:
        rating = Rating(id=str(uuid.uuid4()), seq=seq, score=1 + seq % 5,
                        at="2026-11-27T10:15:02.417+09:00", clock_synced=True)
        self.client.publish(topic("s1", terminal, "ratings"),
                            encode_batch("s1", terminal, [rating.encode()]), qos=1).wait_for_publish(DEADLINE)
        return rating

    def ack(self, timeout: float = DEADLINE) -> tuple[str, Ack]:
        return self.acks.get(timeout=timeout)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def notify_socket():
    made = NotifySocket()
    yield made
    made.close()


@pytest.fixture
def kiosk(mosquitto):
    made = Kiosk(mosquitto)
    yield made
    made.close()


def health(server: ServerProcess) -> requests.Response:
    return requests.get(f"http://127.0.0.1:{server.port}/healthz", timeout=5)


def unhealthy(server: ServerProcess) -> dict | None:
    """/healthz's body when it answers 503, else None."""
    response = health(server)
    return response.json() if response.status_code == 503 else None


def sigterm_within_limit(process: subprocess.Popen) -> float:
    """SIGTERM *process*; how long it took to end (fails past SIGTERM_LIMIT_S)."""
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(SIGTERM_LIMIT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError(f"the server was still running {SIGTERM_LIMIT_S} s after SIGTERM")
    return time.monotonic() - started


def test_a_stuck_ingest_turns_healthz_503_within_30_s_and_the_watchdog_goes_quiet(
        mosquitto, kiosk, notify_socket, tmp_path):
    """With the shipped defaults (ingest_stall_s 20)."""
    server = ServerProcess(mosquitto, tmp_path, env={"ONETAP_FAULT": "stall-ingest:2",
                                                     **notify_socket.env(watchdog_s=1.5)}).start()
    try:
        notify_socket.wait_for("READY=1")
        notify_socket.wait_for("WATCHDOG=1", timeout=5)
        wait_for(lambda: health(server).json()["broker"] == "connected", "the server to subscribe",
                 timeout=DEADLINE)
        kiosk.send("t1", 1)
        assert kiosk.ack()[1].accepted
        body = health(server).json()
        assert body["status"] == "ok" and body["ingest"]["pending"] == 0
        assert body["threads"] == {"onetap-alerts": "running", "onetap-ingest": "running",
                                   "onetap-retention": "running", "onetap-roll-up": "running",
                                   "onetap-survey": "running",
                                   "onetap-watchdog": "running"}
        kiosk.send("t2", 1)  # the second commit: wedged for good
        stuck_at = time.monotonic()
        body = wait_for(lambda: unhealthy(server), "/healthz to answer 503", timeout=DEADLINE, interval=0.5)
        assert time.monotonic() - stuck_at < 30
        assert body["status"] == "error" and body["db"] == "ok"
        assert "ingest is stuck: 1 messages waiting, none processed for" in body["reason"]
        assert body["ingest"]["pending"] == 1 and body["ingest"]["waiting_s"] >= 20
        # No more petting (systemd would restart the process), and systemctl status says why.
        since_the_stall = notify_socket.read(1.0)
        assert any(line.startswith("STATUS=unhealthy: ingest is stuck") for line in since_the_stall)
        quiet = notify_socket.read(3.0)
        assert "WATCHDOG=1" not in quiet, quiet
        assert sigterm_within_limit(server.process) < SIGTERM_LIMIT_S
        assert "STOPPING=1" in notify_socket.read(0.5)
    finally:
        server.kill9()


def test_an_exception_inside_ingest_costs_one_message_and_health_stays_true(mosquitto, kiosk, tmp_path):
    server = ServerProcess(mosquitto, tmp_path, env={"ONETAP_FAULT": "raise-in-ingest:2"}).start()
    try:
        wait_for(lambda: health(server).json()["broker"] == "connected", "the server to subscribe",
                 timeout=DEADLINE)
        first = kiosk.send("t1", 1)
        assert kiosk.ack() == ("t1", Ack(accepted=(first.id,)))
        doomed = kiosk.send("t2", 1)  # the second message received: ingest raises on it
        after = [kiosk.send(f"t{i}", 1) for i in (3, 4)]
        acks = dict(kiosk.ack() for _ in after)
        assert acks == {"t3": Ack(accepted=(after[0].id,)), "t4": Ack(accepted=(after[1].id,))}
        with pytest.raises(queue.Empty):
            kiosk.ack(timeout=1)  # the doomed batch gets no Ack: its kiosk would send it again
        with sqlite3.connect(server.db) as conn:
            stored = {row[0] for row in conn.execute("SELECT id FROM ratings")}
            quarantined = conn.execute("SELECT topic, reason, payload FROM quarantine").fetchall()
        assert stored == {first.id, after[0].id, after[1].id}
        assert [(q[0], q[1]) for q in quarantined] == [
            ("onetap/v1/s1/t2/ratings", "internal error: RuntimeError('fault injection raise-in-ingest:2')")]
        assert doomed.id.encode() in quarantined[0][2]
        response = health(server)
        body = response.json()
        assert response.status_code == 200 and body["status"] == "ok", body
        assert body["threads"]["onetap-ingest"] == "running"
        assert body["ingest"]["pending"] == 0 and body["ingest"]["last_processed_s"] is not None
        assert "Traceback" in (tmp_path / "server.log").read_text()
        assert sigterm_within_limit(server.process) < SIGTERM_LIMIT_S
    finally:
        server.kill9()


def test_sigterm_ends_the_process_with_a_wedged_alerts_thread(mosquitto, tmp_path):
    server = ServerProcess(mosquitto, tmp_path, env={"ONETAP_FAULT": "stall-alerts:1",
                                                     "ONETAP_THREAD_STALL_S": "2"}).start()
    try:
        body = wait_for(lambda: unhealthy(server), "/healthz to report the wedged alerts thread",
                        timeout=DEADLINE, interval=0.5)
        assert body["reason"].startswith("thread onetap-alerts is stuck: busy for ")
        assert body["threads"]["onetap-alerts"] == "stuck" and body["threads"]["onetap-ingest"] == "running"
        assert sigterm_within_limit(server.process) < SIGTERM_LIMIT_S
    finally:
        server.kill9()


def test_an_ingest_worker_pets_the_watchdog_until_stuck_and_stops_on_sigterm(
        mosquitto, kiosk, notify_socket, tmp_path):
    log = tmp_path / "ingest.log"
    process = subprocess.Popen(
        [str(BIN / "onetap-server"), "run", "--role", "ingest", "--broker", mosquitto.url,
         "--db", str(tmp_path / "server.db")],
        stdout=subprocess.DEVNULL, stderr=open(log, "ab"),
        env={**os.environ, "ONETAP_FAULT": "stall-ingest:2", "ONETAP_INGEST_STALL_S": "2",
             **notify_socket.env(watchdog_s=1.5)})
    try:
        notify_socket.wait_for("READY=1")
        notify_socket.wait_for("WATCHDOG=1", timeout=5)
        first = kiosk.send("t1", 1)
        assert kiosk.ack() == ("t1", Ack(accepted=(first.id,)))
        assert "WATCHDOG=1" in notify_socket.read(1.5)
        kiosk.send("t2", 1)  # the second commit: wedged for good
        seen = []
        deadline = time.monotonic() + DEADLINE
        while not any(line.startswith("STATUS=unhealthy: ingest is stuck") for line in seen):
            assert time.monotonic() < deadline, f"never unhealthy: {seen[-10:]}"
            seen += notify_socket.read(0.2)
        quiet = notify_socket.read(3.0)
        assert "WATCHDOG=1" not in quiet, quiet
        assert sigterm_within_limit(process) < SIGTERM_LIMIT_S
        assert "STOPPING=1" in notify_socket.read(0.5)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def test_the_exit_deadline_ends_a_process_whose_orderly_stop_hangs():
    """The last resort behind the 10 s promise, when even the orderly stop is wedged."""
    import sys

    code = ("import threading\n"
            "from server.service import exit_deadline\n"
            "exit_deadline(1.0)\n"
            "threading.Event().wait(30)\n")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    assert done.returncode == 1 and time.monotonic() - started < 10
    assert "stopping took over 1 s (a thread is wedged); exiting now" in done.stderr
    cancelled = ("import threading, time\n"
                 "from server.service import exit_deadline\n"
                 "exit_deadline(0.3).cancel()\n"
                 "time.sleep(1)\n")
    assert subprocess.run([sys.executable, "-c", cancelled], timeout=20).returncode == 0


def poison_batch(terminal: str, at: str) -> tuple[Rating, bytes]:
    rating = Rating(id=str(uuid.uuid4()), seq=1, score=5, at=at, clock_synced=True)
    return rating, encode_batch("s1", terminal, [rating.encode()])


def test_issue_9_poison_plain_and_retained_and_a_poison_status_stop_no_one_across_a_restart(
        mosquitto, kiosk, tmp_path):
    """The poison ratings (one of them retained, so the broker hands it over again at
    every restart) and a poison Status, between three other terminals' ratings: every
    valid rating is stored and Acked before and after a restart, and /healthz says
    ok exactly when every supervised thread runs."""
    env = {"ONETAP_ALERTS_INTERVAL_S": "1"}
    server = ServerProcess(mosquitto, tmp_path, env=env).start()
    try:
        wait_for(lambda: health(server).json()["broker"] == "connected", "the server to subscribe",
                 timeout=DEADLINE)
        far_future, plain = poison_batch("p1", "9999-12-31T23:59:59Z")
        _, retained = poison_batch("p2", "0001-01-01T00:00:00+14:00")
        kiosk.client.publish(topic("s1", "p1", "ratings"), plain, qos=1).wait_for_publish(DEADLINE)
        kiosk.client.publish(topic("s1", "p2", "ratings"), retained, qos=1, retain=True).wait_for_publish(DEADLINE)
        kiosk.client.publish(topic("s1", "p3", "status"), b'{"v":1,"state":"online","at":"2026-11-27T10:00:00+09:00",'
                             b'"oldest_pending_at":"0001-01-01T00:00:00+14:00","backlog":1}', qos=1,
                             retain=True).wait_for_publish(DEADLINE)
        sent = {f"t{i}": kiosk.send(f"t{i}", 1) for i in (1, 2, 3)}
        # The far-future rating is counted by receipt time (and flagged); the
        # retained batch is refused without an Ack.
        assert dict(kiosk.ack() for _ in range(4)) == {
            "p1": Ack(accepted=(far_future.id,)), **{t: Ack(accepted=(r.id,)) for t, r in sent.items()}}

        def truthful():
            body = health(server).json()
            all_running = all(state == "running" for state in body["threads"].values())
            assert (body["status"] == "ok") == all_running, body
            assert body["threads"]["onetap-ingest"] == "running", body
            return body

        time.sleep(3)  # a few alert passes over the poison status
        truthful()
        assert sigterm_within_limit(server.process) < SIGTERM_LIMIT_S
        server.start()  # the retained poison comes again
        wait_for(lambda: health(server).json()["broker"] == "connected", "the server to subscribe again",
                 timeout=DEADLINE)
        again = {f"t{i}": kiosk.send(f"t{i}", 2) for i in (1, 2, 3)}
        assert dict(kiosk.ack() for _ in again) == {t: Ack(accepted=(r.id,)) for t, r in again.items()}
        assert truthful()["ingest"]["pending"] == 0
        with sqlite3.connect(server.db) as conn:
            stored = {row[0] for row in conn.execute("SELECT id FROM ratings")}
        assert {r.id for r in (*sent.values(), *again.values())} <= stored
    finally:
        kiosk.client.publish(topic("s1", "p2", "ratings"), b"", qos=1, retain=True)
        kiosk.client.publish(topic("s1", "p3", "status"), b"", qos=1, retain=True)
        server.kill9()
