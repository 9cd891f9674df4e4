"""The server's link over mqtts://: certificate and host name verified, client certificates, plain remote refused."""

from __future__ import annotations

import subprocess

import pytest

from server.config import load_config
from server.errors import ConfigError
from server.link import Link
from server.store import SQLiteStore
from tests.broker import Mosquitto, free_port
from tests.waiting import within


def _client_cert(pki, name: str) -> tuple:
    """A client certificate signed by the test CA (whose key lies beside it)."""
    directory = pki.ca.parent
    key, cert = directory / f"{name}.key", directory / f"{name}.crt"
    if not cert.exists():
        run = lambda *args: subprocess.run(["openssl", *args], cwd=directory, check=True,  # noqa: E731
                                           capture_output=True)
        run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", key.name, "-out", f"{name}.csr", "-subj", f"/CN={name}")
        (directory / f"{name}.cnf").write_text("basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", cert.name, "-days", "2", "-extfile", f"{name}.cnf")
    return cert, key


@pytest.fixture
def tls_broker(tmp_path, pki):
    port = free_port()
    # The second listener wants a client certificate from the same CA.
    client_port = free_port()
    broker = Mosquitto(tmp_path / "broker", extra=(
        f"listener {port} 127.0.0.1\nallow_anonymous true\n"
        f"certfile {pki.cert}\nkeyfile {pki.key}\n"
        f"listener {client_port} 127.0.0.1\n"
        f"certfile {pki.cert}\nkeyfile {pki.key}\n"
        f"cafile {pki.ca}\nrequire_certificate true\n")).start()
    broker.tls_port = port
    broker.client_cert_port = client_port
    yield broker
    broker.stop()


def link_for(tmp_path, text: str) -> Link:
    path = tmp_path / "server.toml"
    path.write_text(text + f'db = "{tmp_path / "server.db"}"\n')
    config = load_config(path, env={})
    return Link(config, lambda: SQLiteStore.open(config.db)).start()


def test_verified_tls_connection(tmp_path, tls_broker, pki):
    link = link_for(tmp_path, f'broker = "mqtts://localhost:{tls_broker.tls_port}"\n'
                              f'ca_file = "{pki.ca}"\n')
    try:
        assert within(lambda: link.connected, 30)
    finally:
        link.stop()


def test_client_certificate(tmp_path, tls_broker, pki):
    cert, key = _client_cert(pki, "server-client")
    link = link_for(tmp_path, f'broker = "mqtts://localhost:{tls_broker.client_cert_port}"\n'
                              f'ca_file = "{pki.ca}"\ncertfile = "{cert}"\nkeyfile = "{key}"\n')
    try:
        assert within(lambda: link.connected, 30)
    finally:
        link.stop()


@pytest.mark.parametrize("host, which_ca, port", [
    ("localhost", "wrong_ca", "tls_port"),
    ("127.0.0.1", "ca", "tls_port"),
    # Verified broker, but we bring no client certificate where one is required.
    ("localhost", "ca", "client_cert_port"),
], ids=["wrong-ca", "wrong-hostname", "no-client-certificate"])
def test_unverifiable_broker_is_refused(tmp_path, tls_broker, pki, host, which_ca, port):
    link = link_for(tmp_path, f'broker = "mqtts://{host}:{getattr(tls_broker, port)}"\n'
                              f'ca_file = "{getattr(pki, which_ca)}"\n')
    try:
        # The same broker accepts a verified client at once (tests above); here
        # every handshake fails, so in a few seconds it never connects.
        assert not within(lambda: link.connected, 4)
    finally:
        link.stop()


@pytest.mark.parametrize("text, message", [
    ('broker = "mqtt://broker.example.org:1883"\n', "server.toml: broker = 'mqtt://broker.example.org:1883' is plain MQTT"),
    ('broker = "mqtt://10.0.0.2"\n', "allow_plain_remote = true"),
    ('broker = "mqtt://127.0.0.1"\nca_file = "/etc/ca.crt"\n', "server.toml: ca_file = '/etc/ca.crt' is set but"),
    ('broker = "mqtts://b"\ncertfile = "/etc/c.crt"\n', "server.toml: keyfile is missing"),
    ('broker = "mqtts://b"\nkeyfile = "/etc/c.key"\n', "server.toml: certfile is missing"),
])
def test_insecure_or_incomplete_tls_settings_are_refused(tmp_path, text, message):
    path = tmp_path / "server.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as info:
        load_config(path, env={})
    assert str(path) in str(info.value)


def test_plain_remote_allowed_explicitly_and_loopback_always(tmp_path):
    path = tmp_path / "server.toml"
    path.write_text('broker = "mqtt://10.0.0.2"\nallow_plain_remote = true\n')
    assert load_config(path, env={}).allow_plain_remote
    for host in ("localhost", "127.0.0.1", "[::1]"):
        assert load_config(env={"ONETAP_BROKER": f"mqtt://{host}:1883"}).broker_address.port == 1883
    with pytest.raises(ConfigError, match="environment ONETAP_BROKER"):
        load_config(env={"ONETAP_BROKER": "mqtt://10.0.0.3"})
    with pytest.raises(ConfigError, match="--broker"):
        load_config(env={}, overrides={"broker": "mqtt://10.0.0.3"})
