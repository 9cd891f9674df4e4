"""Store fixtures over both backends: every store and API test runs on SQLite and on PostgreSQL."""

import pytest

from tests.backends import BACKENDS, make_backend


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path):
    """A fresh, empty database of each backend (a file, or a schema of the session's database)."""
    postgres = request.getfixturevalue("postgres_database") if request.param == "postgres" else None
    made = make_backend(request.param, tmp_path, postgres)
    yield made
    made.close()


@pytest.fixture
def store(backend):
    store = backend.open()
    yield store
    store.close()
