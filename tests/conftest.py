"""Shared fixtures: a private mosquitto per test, never the machine's shared one."""

import pytest

from tests.broker import Mosquitto


@pytest.fixture
def mosquitto(tmp_path):
    broker = Mosquitto(tmp_path / "broker").start()
    yield broker
    broker.stop()
