"""Shared fixtures: a private mosquitto per test, never the machine's shared one."""

import atexit
import os
import shutil
import tempfile

import pytest

from tests.broker import Mosquitto
from tests.pki import make_pki


@pytest.fixture
def mosquitto(tmp_path):
    broker = Mosquitto(tmp_path / "broker").start()
    yield broker
    broker.stop()


pki = pytest.fixture(scope="session")(make_pki)

# Kivy makes its home directory at import, checking first that it is not
# there: test workers importing it at once on a fresh machine raced for
# ~/.kivy (FileExistsError), and would race for its subdirectories in one
# shared home. Each test process (every worker, not inherited) gets its own,
# and none touches the user's.
os.environ["KIVY_HOME"] = tempfile.mkdtemp(prefix="onetap-test-kivy-home-")
atexit.register(shutil.rmtree, os.environ["KIVY_HOME"], ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_database():
    """This session's own PostgreSQL database (see tests/backends.py), dropped at the end."""
    from tests.backends import PostgresDatabase

    database = PostgresDatabase().create()
    yield database
    database.drop()
