"""A real mosquitto with deploy/mosquitto/onetap-secure.conf and provisioned files: who may say what."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from server import provision
from tests.pki import Pki
from tests.broker import Mosquitto, free_port, wait_for_port

SECURE_CONF = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto" / "onetap-secure.conf"
SITE, OTHER = "gangnam-office", "seocho-office"
DEADLINE = 10.0

pytestmark = pytest.mark.skipif(shutil.which("mosquitto") is None,
                                reason="mosquitto not installed (apt-get install mosquitto)")


# -- the broker -----------------------------------------------------------------


def secure_settings(passwd: Path, acl: Path, pki: Pki, tls_port: int) -> str:
    """The deploy file's settings with this test's paths and ports, nothing added or lost."""
    swaps = {
        "password_file": str(passwd), "acl_file": str(acl),
        "certfile": str(pki.cert), "keyfile": str(pki.key),
    }
    out = []
    for line in SECURE_CONF.read_text().splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words == ["listener", "1883", "127.0.0.1"]:
            continue  # the harness's own loopback listener takes its place
        if words == ["listener", "8883"]:
            out.append(f"listener {tls_port} 127.0.0.1")
            continue
        if words[0] in swaps:
            out.append(f"{words[0]} {swaps[words[0]]}")
            continue
        out.append(line)
    # Tests run as root, and mosquitto would drop to its own user, which
    # cannot enter pytest's private temporary directories.
    if os.geteuid() == 0:
        out.append("user root")
    return "\n".join(out) + "\n"


@dataclass
class Secure:
    broker: Mosquitto
    tls_port: int
    passwd: Path
    acl: Path
    accounts: dict[str, provision.Account] = field(default_factory=dict)

    def provision(self, site: str, terminal: str) -> provision.Account:
        account = provision.provision_terminal(
            site, terminal, self.broker.url, self.passwd, self.acl,
            self.passwd.parent / f"{site}-{terminal}")
        self.accounts[f"{site}/{terminal}"] = account
        return account

    def reload(self) -> None:
        os.kill(self.broker.process.pid, signal.SIGHUP)


@pytest.fixture
def secure(tmp_path, pki):
    passwd, acl = tmp_path / "onetap.passwd", tmp_path / "onetap.acl"
    tls_port = free_port()
    broker = Mosquitto(tmp_path / "broker", anonymous=False,
                       extra=secure_settings(passwd, acl, pki, tls_port))
    state = Secure(broker, tls_port, passwd, acl)
    state.provision(SITE, "a")
    state.provision(SITE, "b")
    state.provision(OTHER, "a")
    state.accounts["service"] = provision.provision_service(
        "onetap-server", passwd, acl, tmp_path / "server", broker=broker.url)
    broker.start()
    wait_for_port(tls_port)
    yield state
    broker.stop()


# -- raw clients ----------------------------------------------------------------


class Client:
    """A raw paho client (MQTT 5) that records what happens to it."""

    def __init__(self, port: int, account: provision.Account | None = None, *,
                 client_id: str = "", host: str = "127.0.0.1", ca: Path | None = None,
                 password: str | None = None, will: str | None = None):
        self.connected: queue.Queue = queue.Queue()
        self.messages: queue.Queue = queue.Queue()
        self.subscribed: queue.Queue = queue.Queue()
        self.disconnected = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv5)
        if account is not None:
            self.client.username_pw_set(account.username,
                                        account.password if password is None else password)
        if ca is not None:
            self.client.tls_set(ca_certs=str(ca), cert_reqs=ssl.CERT_REQUIRED)
            self.client.tls_insecure_set(False)
        if will is not None:
            self.client.will_set(will, b'{"v":1,"state":"offline"}', qos=1, retain=True)
        self.client.on_connect = lambda c, u, f, rc, p: self.connected.put(rc)
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload))
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.put(rcs)
        self.client.on_disconnect = lambda c, u, f, rc, p: self.disconnected.set()
        self.client.connect(host, port)
        self.client.loop_start()
        self.reason = self.connected.get(timeout=DEADLINE)
        if self.reason.is_failure:
            self.client.loop_stop()

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(DEADLINE)

    def subscribe(self, *topics: str) -> list:
        self.client.subscribe([(t, 1) for t in topics])
        return self.subscribed.get(timeout=DEADLINE)

    def next_message(self) -> tuple[str, bytes]:
        return self.messages.get(timeout=DEADLINE)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def ratings(site: str, terminal: str) -> str:
    return f"onetap/v1/{site}/{terminal}/ratings"


def topic(site: str, terminal: str, kind: str) -> str:
    return f"onetap/v1/{site}/{terminal}/{kind}"


# -- tests ----------------------------------------------------------------------


def test_deploy_config_has_every_safety_setting():
    settings = [line.split() for line in SECURE_CONF.read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    assert ["allow_anonymous", "false"] in settings
    assert ["use_username_as_clientid", "true"] in settings
    assert ["per_listener_settings", "false"] in settings
    assert any(words[0] == "password_file" for words in settings)
    assert any(words[0] == "acl_file" for words in settings)
    listeners = [words for words in settings if words[0] == "listener"]
    # Plain MQTT only on loopback; every other listener has a certificate.
    plain = [w for w in listeners if len(w) == 3 and w[2] == "127.0.0.1"]
    assert plain and len(listeners) == len(plain) + 1
    assert any(words[0] == "certfile" for words in settings)


def test_anonymous_client_is_refused(secure):
    client = Client(secure.broker.port)
    assert client.reason.is_failure
    assert client.reason.getName() in ("Not authorized", "Bad user name or password")


def test_wrong_password_and_unknown_user_are_refused(secure):
    account = secure.accounts[f"{SITE}/a"]
    assert Client(secure.broker.port, account, password="wrong").reason.is_failure
    stranger = provision.Account("ghost@" + SITE, account.password, Path("/"))
    assert Client(secure.broker.port, stranger).reason.is_failure
    right = Client(secure.broker.port, account)
    assert not right.reason.is_failure
    right.close()


def test_terminal_cannot_publish_as_another_terminal(secure):
    service = Client(secure.broker.port, secure.accounts["service"])
    service.subscribe("onetap/v1/+/+/ratings", "onetap/v1/+/+/status")
    a = Client(secure.broker.port, secure.accounts[f"{SITE}/a"])
    # B's topics, the same terminal name at another site, and the service's.
    a.publish(ratings(SITE, "b"), b"spoofed")
    a.publish(topic(SITE, "b", "status"), b"spoofed", retain=True)
    a.publish(ratings(OTHER, "a"), b"spoofed")
    a.publish(topic(SITE, "b", "ack"), b"spoofed")
    a.publish(ratings(SITE, "a"), b"own")
    # QoS 1 from one publisher arrives in order: had any spoof passed, it
    # would be here before A's own message.
    assert service.next_message() == (ratings(SITE, "a"), b"own")
    assert service.messages.empty()
    a.close()
    service.close()


def test_terminal_cannot_read_another_terminals_ack_or_config(secure):
    service = Client(secure.broker.port, secure.accounts["service"])
    a = Client(secure.broker.port, secure.accounts[f"{SITE}/a"])
    b = Client(secure.broker.port, secure.accounts[f"{SITE}/b"])
    a.subscribe(topic(SITE, "b", "ack"), topic(SITE, "b", "config"), "onetap/v1/#",
                topic(SITE, "a", "ack"))
    b.subscribe(topic(SITE, "b", "ack"))
    service.publish(topic(SITE, "b", "config"), b'{"v":1}', retain=True)
    service.publish(topic(SITE, "b", "ack"), b"for b")
    service.publish(topic(SITE, "a", "ack"), b"for a")
    assert b.next_message() == (topic(SITE, "b", "ack"), b"for b")
    seen = []
    while True:
        message = a.next_message()
        seen.append(message)
        if message == (topic(SITE, "a", "ack"), b"for a"):
            break
    assert all("/b/" not in t for t, _ in seen), seen
    # A terminal that subscribes later still gets nothing of B's retained config.
    late = Client(secure.broker.port, secure.accounts[f"{OTHER}/a"])
    late.subscribe("onetap/v1/#")
    service.publish(topic(OTHER, "a", "ack"), b"marker")
    assert late.next_message() == (topic(OTHER, "a", "ack"), b"marker")
    for client in (late, a, b, service):
        client.close()


def test_service_reads_ratings_and_status_and_writes_acks_and_config(secure):
    service = Client(secure.broker.port, secure.accounts["service"])
    service.subscribe("onetap/v1/+/+/ratings", "onetap/v1/+/+/status")
    b = Client(secure.broker.port, secure.accounts[f"{SITE}/b"])
    b.subscribe(topic(SITE, "b", "ack"), topic(SITE, "b", "config"))
    b.publish(topic(SITE, "b", "status"), b'{"v":1,"state":"online"}', retain=True)
    b.publish(ratings(SITE, "b"), b"batch")
    assert service.next_message() == (topic(SITE, "b", "status"), b'{"v":1,"state":"online"}')
    assert service.next_message() == (ratings(SITE, "b"), b"batch")
    service.publish(topic(SITE, "b", "ack"), b"ack")
    service.publish(topic(SITE, "b", "config"), b"config", retain=True)
    assert b.next_message() == (topic(SITE, "b", "ack"), b"ack")
    assert b.next_message() == (topic(SITE, "b", "config"), b"config")
    # The service cannot speak as a terminal: its ratings never reach anyone.
    observer = Client(secure.broker.port, secure.accounts[f"{OTHER}/a"])
    observer.subscribe(topic(OTHER, "a", "ack"))
    service.publish(ratings(SITE, "b"), b"forged by service")
    service.publish(topic(OTHER, "a", "ack"), b"after")
    assert observer.next_message() == (topic(OTHER, "a", "ack"), b"after")
    assert service.messages.empty()
    for client in (observer, b, service):
        client.close()


def test_a_terminals_last_will_reaches_the_server(secure):
    service = Client(secure.broker.port, secure.accounts["service"])
    service.subscribe(topic(SITE, "a", "status"))
    a = Client(secure.broker.port, secure.accounts[f"{SITE}/a"],
               will=topic(SITE, "a", "status"))
    a.client.loop_stop()
    a.client.socket().close()  # gone without DISCONNECT: the broker sends the will
    assert service.next_message() == (topic(SITE, "a", "status"), b'{"v":1,"state":"offline"}')
    service.close()


def test_client_id_is_the_username(secure):
    account_b = secure.accounts[f"{SITE}/b"]
    b = Client(secure.broker.port, account_b, client_id="anything")
    # A claims B's username as its client id: B must stay connected.
    a = Client(secure.broker.port, secure.accounts[f"{SITE}/a"], client_id=account_b.username)
    assert not a.reason.is_failure
    service = Client(secure.broker.port, secure.accounts["service"])
    service.subscribe(ratings(SITE, "b"))
    b.publish(ratings(SITE, "b"), b"still here")
    assert service.next_message() == (ratings(SITE, "b"), b"still here")
    assert not b.disconnected.is_set()
    # A second connection of B's own account does take over (same id).
    b2 = Client(secure.broker.port, account_b, client_id="other")
    assert not b2.reason.is_failure
    assert b.disconnected.wait(DEADLINE)
    for client in (b2, a, service):
        client.close()
    b.client.loop_stop()


def test_reprovisioning_rotates_one_account_only(secure):
    old = secure.accounts[f"{SITE}/a"]
    other = secure.accounts[f"{SITE}/b"]
    new = secure.provision(SITE, "a")
    assert new.password != old.password
    secure.reload()
    deadline = time.monotonic() + DEADLINE
    while True:  # SIGHUP is handled asynchronously: poll for the old password's refusal
        attempt = Client(secure.broker.port, old)
        if attempt.reason.is_failure:
            break
        attempt.close()
        assert time.monotonic() < deadline, "old password still accepted after reload"
        time.sleep(0.05)
    for account in (new, other):
        client = Client(secure.broker.port, account)
        assert not client.reason.is_failure, account.username
        client.close()


# -- TLS ------------------------------------------------------------------------


def test_tls_with_the_right_ca_and_host_name_connects(secure, pki):
    service = Client(secure.tls_port, secure.accounts["service"], host="localhost", ca=pki.ca)
    assert not service.reason.is_failure
    service.subscribe(ratings(SITE, "a"))
    a = Client(secure.tls_port, secure.accounts[f"{SITE}/a"], host="localhost", ca=pki.ca)
    a.publish(ratings(SITE, "a"), b"over tls")
    assert service.next_message() == (ratings(SITE, "a"), b"over tls")
    a.close()
    service.close()


def test_tls_with_a_wrong_ca_is_refused(secure, pki):
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        Client(secure.tls_port, secure.accounts[f"{SITE}/a"], host="localhost",
               ca=pki.wrong_ca)


def test_tls_with_a_wrong_host_name_is_refused(secure, pki):
    # The certificate names localhost only; 127.0.0.1 is the same machine.
    with pytest.raises(ssl.SSLCertVerificationError, match="IP address mismatch|hostname"):
        Client(secure.tls_port, secure.accounts[f"{SITE}/a"], host="127.0.0.1", ca=pki.ca)


def test_tls_still_needs_the_password(secure, pki):
    client = Client(secure.tls_port, secure.accounts[f"{SITE}/a"], host="localhost",
                    ca=pki.ca, password="wrong")
    assert client.reason.is_failure


# -- the real server, with the account provision made for it -------------------------


def test_server_ingests_with_its_own_account_and_counts_no_spoofed_rating(secure, tmp_path):
    import sqlite3
    import uuid

    from kiosk.protocol import Ack, Rating, encode_batch
    from server.config import load_config
    from server.link import Link
    from server.store import SQLiteStore

    db = tmp_path / "onetap.db"
    config = load_config(secure.accounts["service"].config_path, env={},
                         overrides={"db": str(db)})
    assert config.username == "onetap-server" and config.password
    link = Link(config, lambda: SQLiteStore.open(db)).start()
    try:
        assert link.wait_connected(DEADLINE), "the server could not log in with server.toml"

        def batch(site, terminal):
            item = Rating(id=str(uuid.uuid4()), seq=1, score=5,
                          at="2026-11-27T10:15:02.417+09:00", clock_synced=True)
            return item.id, encode_batch(site, terminal, [item.encode()])

        a = Client(secure.broker.port, secure.accounts[f"{SITE}/a"])
        a.subscribe(topic(SITE, "a", "ack"))
        spoof_id, spoof = batch(SITE, "b")
        own_id, own = batch(SITE, "a")
        a.publish(ratings(SITE, "b"), spoof)  # as B: the broker drops it
        a.publish(ratings(SITE, "a"), own)
        ack_topic, payload = a.next_message()
        assert ack_topic == topic(SITE, "a", "ack")
        assert Ack.decode(payload).accepted == (own_id,)
        a.close()
    finally:
        link.stop()
    with sqlite3.connect(db) as conn:
        stored = {row[0] for row in conn.execute("SELECT id FROM ratings")}
    assert stored == {own_id}, "a terminal's rating under another's name was counted"
    assert spoof_id not in stored
