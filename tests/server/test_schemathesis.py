"""Property-based API tests from /openapi.json (schemathesis): no 5xx, every response matches its schema."""

import uuid
from datetime import datetime, timezone

import pytest
import schemathesis
from schemathesis.checks import positive_data_acceptance
from hypothesis import HealthCheck, given, settings

from kiosk.protocol import Rating, Status
from server.api import create_app
from server.auth import token_hash
from server.config import ServerConfig, TokenConfig
from server.store import SQLiteStore

TOKEN = "schema-token-0123456789"
NOW = datetime(2026, 11, 27, 3, 0, tzinfo=timezone.utc)


def make_app(tmp_path_factory):
    path = tmp_path_factory.mktemp("schema") / "onetap.db"
    store = SQLiteStore.open(path)
    store.ingest_batch("s1", "t1", [Rating(id=str(uuid.uuid4()), seq=i, score=1 + i % 5,
                                           at="2026-11-27T10:00:00.000+09:00", clock_synced=True,
                                           reason="other" if i % 2 else None) for i in range(1, 20)], NOW)
    store.update_status("s1", "t1", Status("online", {"backlog": 1, "version": "0.1.0", "clock_synced": True}), NOW)
    store.close()
    config = ServerConfig(api_token=TOKEN, tokens={"s1": TokenConfig(token_hash("scoped-" + TOKEN), frozenset({"s1"}))})
    return create_app(lambda: SQLiteStore.open(path), config, now=lambda: NOW)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    return make_app(tmp_path_factory)


def run_every_operation(app, headers, max_examples):
    # Driven through hypothesis directly: schemathesis's pytest plugin does not
    # load under this pytest version.
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/api/v1/summary", "/api/v1/aggregates", "/api/v1/terminals",
                                              "/api/v1/ratings.csv", "/api/v1/ratings.xlsx", "/healthz"}
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=max_examples, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            # The schema's date pattern admits 2026-13-45, which is a 400 (documented):
            # positive_data_acceptance would call that a failure.
            case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance])

        check()


def test_api_conforms(app):
    run_every_operation(app, {"Authorization": f"Bearer {TOKEN}"}, 25)


def test_api_conforms_for_a_scoped_token(app):
    run_every_operation(app, {"Authorization": f"Bearer scoped-{TOKEN}"}, 8)
