"""Shared fixtures: a private mosquitto per test, never the machine's shared one."""

import pytest

from tests.broker import Mosquitto
from tests.pki import make_pki


@pytest.fixture
def mosquitto(tmp_path):
    broker = Mosquitto(tmp_path / "broker").start()
    yield broker
    broker.stop()


pki = pytest.fixture(scope="session")(make_pki)


@pytest.fixture(scope="session")
def postgres_database():
    """This session's own PostgreSQL database (see tests/backends.py), dropped at the end."""
    from tests.backends import PostgresDatabase

    database = PostgresDatabase().create()
    yield database
    database.drop()
