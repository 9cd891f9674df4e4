"""deploy/mosquitto/ installed beside Debian 12's stock mosquitto.conf, as docs/deploy.md says: what starts and listens."""

from __future__ import annotations

import hashlib
import re
import shutil
import socket
import ssl
import subprocess
import threading

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from server import provision
from tests.deploy.installed_broker import (
    DEBIAN_STOCK,
    DEPLOY_MOSQUITTO,
    InstalledMosquitto,
    listening_sockets,
)
from tests.pki import Pki

SITE = "gangnam-office"
DEADLINE = 10.0

pytestmark = pytest.mark.skipif(shutil.which("mosquitto") is None,
                                reason="mosquitto not installed (apt-get install mosquitto)")


@pytest.fixture
def installed(pki):
    broker = InstalledMosquitto(pki)
    account = provision.provision_terminal(SITE, "counter-03", f"mqtt://127.0.0.1:{broker.plain_port}",
                                           broker.passwd, broker.acl, broker.root / "kiosk")
    broker.start()
    broker.account = account
    yield broker
    broker.cleanup()


def connect(port: int, account=None, *, host: str = "127.0.0.1", ca=None,
            client_id: str = "") -> tuple[mqtt.Client, object, threading.Event]:
    """A connected (or refused) MQTT 5 client: (client, CONNACK reason, disconnected event)."""
    result = []
    done = threading.Event()
    gone = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    if account is not None:
        client.username_pw_set(account.username, account.password)
    if ca is not None:
        client.tls_set(ca_certs=str(ca), cert_reqs=ssl.CERT_REQUIRED)
    client.on_connect = lambda c, u, f, rc, p: (result.append(rc), done.set())
    client.on_disconnect = lambda c, u, f, rc, p: gone.set()
    client.connect(host, port)
    client.loop_start()
    assert done.wait(DEADLINE), "no CONNACK"
    return client, result[0], gone


def close(client: mqtt.Client) -> None:
    client.disconnect()
    client.loop_stop()


def test_the_stock_file_is_debians(tmp_path):
    """The copy the tests include from is byte for byte what Debian 12's package installs."""
    try:
        conffiles = subprocess.run(["dpkg-query", "-W", "-f=${Conffiles}\n", "mosquitto"],
                                   capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a Debian machine with mosquitto from its package")
    recorded = {line.split()[0]: line.split()[1] for line in conffiles.splitlines() if line.strip()}
    digest = hashlib.md5(DEBIAN_STOCK.read_bytes()).hexdigest()
    assert recorded["/etc/mosquitto/mosquitto.conf"] == digest
    assert "include_dir /etc/mosquitto/conf.d" in DEBIAN_STOCK.read_text()


def test_installed_broker_listens_only_where_the_docs_say(installed):
    sockets = listening_sockets(installed.process.pid)
    plain = {address for address, port in sockets if port == installed.plain_port}
    tls = {address for address, port in sockets if port == installed.tls_port}
    assert plain == {"127.0.0.1"}, "plain MQTT must listen on loopback only"
    assert tls and tls <= {"0.0.0.0", "::"}, "TLS listens on every address"
    others = {(a, p) for a, p in sockets if p not in (installed.plain_port, installed.tls_port)}
    assert not others, f"mosquitto also listens on {sorted(others)} (an implicit listener?)"


def test_plain_mqtt_takes_accounts_on_loopback_and_refuses_strangers(installed):
    client, reason, _ = connect(installed.plain_port, installed.account)
    assert not reason.is_failure, installed.read_log()
    close(client)
    anonymous, reason, _ = connect(installed.plain_port)
    assert reason.is_failure
    anonymous.loop_stop()


def test_plain_port_is_closed_on_the_network_address(installed):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET: no packet is sent for UDP connect
            address = probe.getsockname()[0]
        except OSError:
            address = None
    if address is None or address.startswith("127."):
        pytest.skip("this machine has no non-loopback IPv4 address")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((address, installed.plain_port), timeout=DEADLINE).close()
    # The TLS port is what the network sees.
    socket.create_connection((address, installed.tls_port), timeout=DEADLINE).close()


def test_tls_listener_takes_accounts_with_a_checked_certificate(installed, pki):
    client, reason, _ = connect(installed.tls_port, installed.account, host="localhost", ca=pki.ca)
    assert not reason.is_failure, installed.read_log()
    close(client)
    with pytest.raises(ssl.SSLCertVerificationError):
        connect(installed.tls_port, installed.account, host="localhost", ca=pki.wrong_ca)


@pytest.mark.parametrize("listener", ["plain", "tls"])
def test_every_listener_forces_the_client_id_to_the_username(installed, pki, listener):
    """use_username_as_clientid on both listeners: a second login with another
    client id still takes over the first (the same id), never a second session."""
    port, tls = ((installed.plain_port, {}) if listener == "plain"
                 else (installed.tls_port, {"host": "localhost", "ca": pki.ca}))
    first, reason, first_gone = connect(port, installed.account, client_id="first", **tls)
    assert not reason.is_failure
    second, reason, _ = connect(port, installed.account, client_id="second", **tls)
    assert not reason.is_failure
    assert first_gone.wait(DEADLINE), "two sessions for one account: the client id was not forced"
    first.loop_stop()
    close(second)


def test_the_bridge_example_installed_too_leaves_the_listeners_alone(pki):
    """onetap-bridge.conf sorts before the other two in conf.d; the broker still
    starts with exactly the same listeners (the central broker is away)."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed_port = unused.getsockname()[1]
    bridge = (DEPLOY_MOSQUITTO / "onetap-bridge.conf.example").read_text()
    bridge = bridge.replace("central.onetap.example.go.kr:8883", f"127.0.0.1:{closed_port}")
    broker = InstalledMosquitto(pki, extra_files={"onetap-bridge.conf": bridge})
    # The bridge's CA file must exist for mosquitto to accept the file.
    shutil.copy(pki.ca, broker.certs / "central-ca.crt")
    provision.provision_terminal(SITE, "counter-03", f"mqtt://127.0.0.1:{broker.plain_port}",
                                 broker.passwd, broker.acl, broker.root / "kiosk")
    try:
        broker.start()
        ports = {port for _, port in listening_sockets(broker.process.pid)}
        assert ports == {broker.plain_port, broker.tls_port}
    finally:
        broker.cleanup()


def test_the_docs_certificate_commands_make_a_certificate_kiosks_accept(tmp_path):
    """docs/deploy.md step 2, run as written: the broker serves the certificate and
    a client checking the CA accepts it by DNS name and by IP address, and
    refuses any other name. Nothing but the two keys and certificates is left."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    doc = (DEPLOY_MOSQUITTO.parents[1] / "docs" / "deploy.md").read_text()
    section = doc.split("### 2. The broker's TLS certificate", 1)[1]
    commands = next(block for block in re.findall(r"```sh\n(.*?)```", section, re.S)
                    if "openssl req" in block)
    work = tmp_path / "offline-machine"
    work.mkdir()
    subprocess.run(["bash", "-euo", "pipefail", "-c", commands], cwd=work, check=True,
                   capture_output=True)
    assert sorted(p.name for p in work.iterdir()) == ["broker.crt", "broker.key", "ca.crt", "ca.key"]
    pki = Pki(ca=work / "ca.crt", wrong_ca=work / "ca.crt", cert=work / "broker.crt",
              key=work / "broker.key")
    broker = InstalledMosquitto(pki)
    provision.provision_terminal(SITE, "counter-03", "mqtt://127.0.0.1:1", broker.passwd,
                                 broker.acl, broker.root / "kiosk")
    try:
        broker.start()
        context = ssl.create_default_context(cafile=str(pki.ca))
        for name in ("onetap.gangnam.example.go.kr", "10.1.2.3"):
            with socket.create_connection(("127.0.0.1", broker.tls_port), timeout=DEADLINE) as raw:
                with context.wrap_socket(raw, server_hostname=name) as tls:
                    assert tls.version() in ("TLSv1.2", "TLSv1.3")
        with pytest.raises(ssl.SSLCertVerificationError):
            with socket.create_connection(("127.0.0.1", broker.tls_port), timeout=DEADLINE) as raw:
                context.wrap_socket(raw, server_hostname="other.example.go.kr")
    finally:
        broker.cleanup()
