"""Private brokers: mosquitto runs with the deploy settings, and says why when it cannot start."""

import socket

import pytest

from server.broker import DEPLOY_CONF, BrokerError, Mosquitto, deploy_settings, private_broker


def test_the_private_mosquitto_runs_with_the_deploy_queue_limits(tmp_path):
    assert "max_queued_messages 100000" in deploy_settings()
    with Mosquitto(tmp_path / "broker") as broker:
        conf = broker.conf_path.read_text()
        assert DEPLOY_CONF.read_text() in conf
        assert f"listener {broker.port} 127.0.0.1" in conf
        with socket.create_connection(("127.0.0.1", broker.port), timeout=5):
            pass
        process = broker.process
    assert process.returncode is not None  # stopped and reaped
    assert isinstance(private_broker(tmp_path / "demo"), Mosquitto)


def test_a_mosquitto_that_cannot_start_says_why(tmp_path):
    broker = Mosquitto(tmp_path / "broker", extra="no_such_option true")
    with pytest.raises(BrokerError, match="no_such_option"):
        broker.start()
    assert broker.process is None
