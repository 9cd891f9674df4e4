"""A hostile terminal against a real mosquitto and the real server process: poison ratings (plain and
retained) and a poison Status between valid ratings of three other terminals stop nobody's counting."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import paho.mqtt.client as mqtt
import pytest
import requests

from kiosk import protocol
from server.auth import hash_password
from tests.backends import BACKENDS, make_backend, query
from tests.broker import Mosquitto
from tests.server_process import TOKEN, ServerProcess
from tests.waiting import wait_for

SITE = "e2e"
GOOD = ("counter-a", "counter-b", "counter-c")
HOSTILE = "counter-x"
PASSWORD = "hostile-test-password"
POISON_TIMES = ("9999-12-31T23:59:59Z", "0001-01-01T00:00:00+14:00")


def now_text() -> str:
    return protocol.format_timestamp(datetime.now(timezone(timedelta(hours=9))))


def rating(seq: int, at: str | None = None) -> protocol.Rating:
    return protocol.Rating(str(uuid.uuid4()), seq, 4, at or now_text(), True)


class Terminals:
    """One MQTT client speaking for several terminals: publishes batches, collects their Acks."""

    def __init__(self, port: int):
        self.acks: dict[str, list[protocol.Ack]] = {}
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="hostile-test",
                                  protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe(f"{protocol.TOPIC_ROOT}/{SITE}/+/ack", qos=1)
        assert subscribed.wait(10)

    def _on_message(self, client, userdata, message) -> None:
        terminal = message.topic.split("/")[3]
        with self.lock:
            self.acks.setdefault(terminal, []).append(protocol.Ack.decode(message.payload))

    def acked(self, terminal: str) -> set[str]:
        with self.lock:
            return {i for ack in self.acks.get(terminal, []) for i in ack.accepted + ack.duplicate}

    def send(self, terminal: str, ratings, *, retain: bool = False) -> None:
        payload = protocol.encode_batch(SITE, terminal, [r.encode() for r in ratings])
        self.publish(protocol.topic(SITE, terminal, "ratings"), payload, retain=retain)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Health:
    """Polls /healthz in the background; remembers every answer that was not 200 ok."""

    def __init__(self, base: str):
        self.base = base
        self.bad: list[str] = []
        self.checks = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.wait(0.2):
            try:
                response = requests.get(f"{self.base}/healthz", timeout=5)
                body = response.json()
                if response.status_code != 200 or body.get("status") != "ok":
                    self.bad.append(f"{response.status_code} {body}")
            except (requests.RequestException, ValueError) as exc:
                self.bad.append(repr(exc))
            self.checks += 1

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(10)


@pytest.fixture
def broker(tmp_path):
    with Mosquitto(tmp_path / "broker") as running:
        yield running


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path):
    postgres = request.getfixturevalue("postgres_database") if request.param == "postgres" else None
    made = make_backend(request.param, tmp_path, postgres, name="server.db")
    yield made
    made.close()


def stored(backend, sql, params=()):
    """Rows as tuples; *sql* with ? placeholders on either backend."""
    store = backend.open()
    try:
        if backend.kind == "postgres":
            sql = sql.replace("?", "%s")
        return [tuple(row.values()) for row in query(store, sql, params)]
    finally:
        store.close()


def dashboard_pages(base: str) -> dict[str, int]:
    session = requests.Session()
    page = session.get(f"{base}/login", timeout=10)
    token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    done = session.post(f"{base}/login", data={"csrf": token, "username": "admin", "password": PASSWORD},
                        timeout=30, allow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/", done.text
    return {path: session.get(f"{base}{path}", timeout=10).status_code for path in ("/", "/live")}


def test_poison_ratings_and_status_stop_nobodys_counting(broker, backend, tmp_path):
    config = tmp_path / "server.toml"
    config.write_text(f'[users.admin]\npassword_hash = "{hash_password(PASSWORD)}"\nsites = "*"\n'
                      '[alerts]\ninterval_s = 1\nopening_hours = ["mon-sun 00:00-24:00"]\n')
    server = ServerProcess(broker, tmp_path, args=("--config", str(config), "--db", str(backend.db))).start()
    base = f"http://127.0.0.1:{server.port}"
    wait_for(lambda: requests.get(f"{base}/healthz", timeout=5).json().get("broker") == "connected",
             "the server connected to the broker", timeout=30)
    terminals = Terminals(broker.port)
    health = Health(base)
    seqs = {t: 0 for t in GOOD}
    sent: dict[str, set[str]] = {t: set() for t in GOOD}

    def valid_round() -> None:
        for terminal in GOOD:
            seqs[terminal] += 1
            r = rating(seqs[terminal])
            terminals.send(terminal, [r])
            sent[terminal].add(r.id)

    def all_acked_within(seconds: float) -> None:
        wait_for(lambda: all(sent[t] <= terminals.acked(t) for t in GOOD),
                 "every valid rating Acked", timeout=seconds)

    try:
        valid_round()
        # The poison rating, plain: counted by receipt time and flagged, not crashed on.
        plain = [rating(1, POISON_TIMES[0]), rating(2, POISON_TIMES[1])]
        terminals.send(HOSTILE, plain)
        valid_round()
        # The poison rating, retained on the hostile terminal's own ratings topic: refused.
        retained = rating(3, POISON_TIMES[1])
        terminals.send(HOSTILE, [retained], retain=True)
        valid_round()
        # The poison Status: a time near year 1, and a lone surrogate in another.
        status_topic = protocol.topic(SITE, HOSTILE, "status")
        terminals.publish(status_topic, (
            '{"v":1,"state":"online","at":"%s","backlog":3,"seq":3,'
            '"oldest_pending_at":"0001-01-01T00:00:00+14:00"}' % now_text()).encode(), retain=True)
        terminals.publish(protocol.topic(SITE, "counter-y", "status"), (
            '{"v":1,"state":"online","at":"%s","backlog":0,"seq":1,"version":"\\ud800"}'
            % now_text()).encode(), retain=True)
        valid_round()
        all_acked_within(15)
        assert terminals.acked(HOSTILE) == {r.id for r in plain}  # never the retained one
        assert dashboard_pages(base) == {"/": 200, "/live": 200}
        api = requests.get(f"{base}/api/v1/terminals", headers={"Authorization": f"Bearer {TOKEN}"},
                           timeout=10)
        assert api.status_code == 200
        hostile = [t for t in api.json() if t["terminal"] == HOSTILE][0]
        assert hostile["oldest_pending_at"] is None

        # A restart gets the retained poison again from the broker: still refused, still counting.
        wait_for(lambda: health.checks >= 5, "five health checks", timeout=30)
        health.stop()
        checks = [health]
        server.stop()
        server.start()
        wait_for(lambda: requests.get(f"{base}/healthz", timeout=5).json().get("broker") == "connected",
                 "the server reconnected", timeout=30)
        health = Health(base)
        checks.append(health)
        valid_round()
        all_acked_within(15)
        time.sleep(2)  # an alerts pass or two over the poison status
        assert dashboard_pages(base) == {"/": 200, "/live": 200}
        wait_for(lambda: health.checks >= 5, "five health checks", timeout=30)
    finally:
        health.stop()
        terminals.close()
        server.stop()

    # /healthz answered 200 ok throughout (but for the restart itself).
    assert [check.bad for check in checks] == [[], []]
    assert all(check.checks >= 5 for check in checks)
    db = backend
    for terminal in GOOD:
        ids = {row[0] for row in stored(db, "SELECT id FROM ratings WHERE terminal = ?", [terminal])}
        assert ids == sent[terminal]
    poison = stored(db, "SELECT id, clock_suspect, day FROM ratings WHERE terminal = ?", [HOSTILE])
    today = datetime.now(timezone(timedelta(hours=9))).date().isoformat()
    assert {(i, suspect) for i, suspect, _ in poison} == {(r.id, 1) for r in plain}
    assert all(day in (today, (datetime.now(timezone.utc)).date().isoformat()) for _, _, day in poison)
    reasons = [row[0] for row in stored(db, "SELECT reason FROM quarantine WHERE terminal = ?", [HOSTILE])]
    assert len([r for r in reasons if "retained" in r]) == 2  # once before the restart, once after
    assert any("version" in row[0] for row in stored(db, "SELECT reason FROM quarantine WHERE terminal = ?",
                                                     ["counter-y"]))
    assert json.loads(stored(db, "SELECT status FROM terminals WHERE terminal = ?", [HOSTILE])[0][0])[
        "oldest_pending_at"] is None
