"""Several `onetap-server run --role ingest` processes on one real mosquitto: each rating counted once.

The workers share the ratings through $share/onetap-ingest/...; duplicates of
one batch land on different workers at the same moment, and a worker killed
-9 right after a commit (before its Acks) leaves its batches to be resent to
the survivor. The database's unique id settles every race: per terminal, the
seqs run 1..M with no gap and no repeat.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import uuid
from collections import defaultdict
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from kiosk import protocol
from server.process import stop_process
from tests.backends import make_backend, tuples
from tests.server_process import BIN
from tests.test_exactly_once import finished, simulate, summary_of
from tests.waiting import wait_for

pytestmark = pytest.mark.slow


class IngestWorker:
    """`onetap-server run --role ingest` as a real process, killable with -9."""

    def __init__(self, broker, db, directory: Path, name: str, env: dict | None = None):
        self.args = [str(BIN / "onetap-server"), "run", "--role", "ingest", "--broker", broker.url,
                     "--db", str(db)]
        self.log = directory / f"{name}.log"
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen | None = None

    def start(self) -> "IngestWorker":
        self.process = subprocess.Popen(self.args, stdout=subprocess.DEVNULL,
                                        stderr=open(self.log, "ab"), env=self.env)
        # Ready once subscribed: a shared subscription without members drops messages.
        wait_for(lambda: "subscribed to" in self.log.read_text() or self.process.poll() is not None,
                 f"{self.log.name} to subscribe", timeout=60)
        assert self.process.poll() is None, self.log.read_text()[-2000:]
        return self

    def stop(self) -> None:
        stop_process(self.process, timeout=15)


@pytest.fixture(params=["postgres", "sqlite"])
def database(request, tmp_path):
    postgres = request.getfixturevalue("postgres_database") if request.param == "postgres" else None
    backend = make_backend(request.param, tmp_path, postgres, name="server.db")
    backend.open().close()  # migrated before the workers race to it
    yield backend
    backend.close()


def stored(backend, site: str) -> list[tuple]:
    store = backend.open()
    try:
        placeholder = "%s" if backend.kind == "postgres" else "?"
        return tuples(store, f"SELECT id, terminal, seq FROM ratings WHERE site = {placeholder}", [site])
    finally:
        store.close()


def assert_exactly_once(backend, site: str, terminals: int, taps: int) -> None:
    rows = stored(backend, site)
    ids = [row[0] for row in rows]
    assert len(ids) == len(set(ids)), "a rating id was stored twice"
    seqs = defaultdict(list)
    for _, terminal, seq in rows:
        seqs[terminal].append(seq)
    assert len(seqs) == terminals, sorted(seqs)
    for terminal, found in seqs.items():
        assert sorted(found) == list(range(1, taps + 1)), (
            f"{terminal}: {len(found)} ratings, missing {sorted(set(range(1, taps + 1)) - set(found))[:10]}")


def test_duplicates_on_two_workers_are_stored_once(mosquitto, database, tmp_path):
    workers = [IngestWorker(mosquitto, database.db, tmp_path, f"w{i}").start() for i in (1, 2)]
    terminals = [f"dup-{i:02d}" for i in range(12)]
    batches = {t: [protocol.Rating(str(uuid.uuid4()), seq, 1 + seq % 5, "2026-11-27T10:00:00.000+09:00", True)
                   for seq in range(1, 21)] for t in terminals}
    acks: dict[str, list[protocol.Ack]] = defaultdict(list)
    lock = threading.Lock()

    def on_message(client, userdata, message):
        with lock:
            acks[message.topic.split("/")[3]].append(protocol.Ack.decode(message.payload))

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="dup-sender", protocol=mqtt.MQTTv5)
    client.on_message = on_message
    subscribed = threading.Event()
    client.on_subscribe = lambda *args: subscribed.set()
    client.connect("127.0.0.1", mosquitto.port)
    client.loop_start()
    try:
        client.subscribe("onetap/v1/pi/+/ack", qos=1)
        assert subscribed.wait(10)
        # Each batch three times in a row: round robin puts the copies on both workers.
        for _ in range(3):
            for t in terminals:
                payload = protocol.encode_batch("pi", t, [r.encode() for r in batches[t]])
                client.publish(protocol.topic("pi", t, "ratings"), payload, qos=1)
        wait_for(lambda: sum(len(a) for a in acks.values()) >= 3 * len(terminals), "every Ack", timeout=60)
    finally:
        client.loop_stop()
        client.disconnect()
        for w in workers:
            w.stop()
    for t in terminals:
        ids = {r.id for r in batches[t]}
        accepted = [i for a in acks[t] for i in a.accepted]
        duplicate = [i for a in acks[t] for i in a.duplicate]
        assert sorted(accepted) == sorted(ids), t  # each id accepted exactly once
        assert sorted(duplicate) == sorted(list(ids) * 2), t  # and twice a duplicate
    assert_exactly_once(database, "pi", len(terminals), 20)


def test_worker_killed_after_commit_mid_stream_loses_and_doubles_nothing(mosquitto, database, tmp_path):
    # w1 dies right after its 15th commit, before that commit's Acks go out:
    # its ratings are stored but unacknowledged, so the kiosks resend them
    # and the survivor must answer "duplicate", not store them again.
    doomed = IngestWorker(mosquitto, database.db, tmp_path, "w1",
                          env={"ONETAP_FAULT": "kill-after-commit:15"}).start()
    survivor = IngestWorker(mosquitto, database.db, tmp_path, "w2").start()
    try:
        process = simulate(mosquitto.url, tmp_path / "kiosks", terminals=4, taps=600, wait=False,
                           timeout=90, rate=60.0, site="par")
        doomed.process.wait(90)
        assert doomed.process.returncode == -signal.SIGKILL, doomed.log.read_text()[-2000:]
        at_kill = len(stored(database, "par"))
        assert at_kill < 4 * 600, "the kill came too late to test anything"
        out = finished(process)
        summary = summary_of(out)
        assert (summary["taps"], summary["confirmed"], summary["pending"]) == (2400, 2400, 0)
        assert_exactly_once(database, "par", 4, 600)
        assert survivor.process.poll() is None, survivor.log.read_text()[-2000:]
    finally:
        survivor.stop()
        doomed.stop()


def test_api_role_serves_what_the_workers_stored_and_ingests_nothing(mosquitto, postgres_database, tmp_path):
    import requests

    from tests.broker import free_port, wait_for_port
    from tests.server_process import TOKEN

    backend = make_backend("postgres", tmp_path, postgres_database)
    backend.open().close()
    worker = IngestWorker(mosquitto, backend.db, tmp_path, "w1").start()
    port = free_port()
    api = subprocess.Popen([str(BIN / "onetap-server"), "run", "--role", "api", "--broker", mosquitto.url,
                            "--db", str(backend.db), "--listen", f"127.0.0.1:{port}", "--api-token", TOKEN],
                           stdout=subprocess.DEVNULL, stderr=open(tmp_path / "api.log", "ab"))
    try:
        wait_for_port(port, timeout=30)
        code, out, err = simulate(mosquitto.url, tmp_path / "kiosks", terminals=2, taps=50, site="api")
        assert code == 0, err[-2000:]
        wait_for(lambda: requests.get(f"http://127.0.0.1:{port}/healthz").json()["broker"] == "connected",
                 "the api process to connect", timeout=30)
        health = requests.get(f"http://127.0.0.1:{port}/healthz").json()
        assert {k: health[k] for k in ("status", "broker", "db")} == {"status": "ok", "broker": "connected",
                                                                       "db": "ok"}
        assert "ingest" not in health  # the api process ingests nothing
        assert set(health["threads"]) == {"onetap-alerts", "onetap-retention", "onetap-survey"}
        summary = requests.get(f"http://127.0.0.1:{port}/api/v1/summary?site=api&from=2000-01-01&to=2100-01-01",
                               headers={"Authorization": f"Bearer {TOKEN}"}).json()
        assert summary["count"] == 100
        metrics = requests.get(f"http://127.0.0.1:{port}/metrics",
                               headers={"Authorization": f"Bearer {TOKEN}"}).text
        assert "onetap_ingest_messages_total 0" in metrics  # the api process ingested nothing
        assert_exactly_once(backend, "api", 2, 50)
    finally:
        stop_process(api, timeout=15)
        worker.stop()
        backend.close()
