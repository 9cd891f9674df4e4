"""The dashboard's routes against out-of-range and hostile parameters: a clear 4xx, never a 500."""

import re
from datetime import date, datetime, timezone

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kiosk.protocol import Rating
from server.api import create_app
from server.auth import hash_password
from server.config import ServerConfig, UserConfig
from server.store import SQLiteStore

NOW = datetime(2026, 11, 27, 3, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    path = tmp_path_factory.mktemp("inputs") / "onetap.db"
    store = SQLiteStore.open(path)
    store.ingest_batch("s1", "t1", [Rating(id=f"00000000-0000-4000-8000-{i:012d}", seq=i + 1, score=1 + i % 5,
                                           at="2026-11-20T10:00:00.000+09:00", clock_synced=True)
                                    for i in range(40)], NOW)
    # Marks stored before marks were bounded, at the ends of the calendar.
    low = store.add_mark("s1", date(1, 1, 1), "year one", "admin", NOW)
    high = store.add_mark(None, date(9999, 12, 31), "year 9999", "admin", NOW)
    good = store.add_mark("s1", date(2026, 11, 10), "queue system", "admin", NOW)
    store.close()
    config = ServerConfig(api_token="an-api-token-long-enough-0123",
                          users={"admin": UserConfig(hash_password("admin-password"), None)})
    client = TestClient(create_app(lambda: SQLiteStore.open(path), config, now=lambda: NOW),
                        raise_server_exceptions=False)
    page = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]
    assert client.post("/login", data={"csrf": csrf, "username": "admin", "password": "admin-password"},
                       follow_redirects=False).headers["location"] == "/"
    session_csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/alerts").text)[1]
    return client, session_csrf, {"low": low, "high": high, "good": good}


def test_stored_marks_at_the_ends_of_the_calendar_do_not_break_compare(dashboard):
    client, _, marks = dashboard
    for name in ("low", "high"):
        answer = client.get(f"/compare?mark={marks[name]}")
        assert answer.status_code == 200, answer.text
        assert "비교할 수 있는 범위를 벗어납니다" in answer.text
    answer = client.get(f"/compare?mark={marks['good']}&days=14")
    assert answer.status_code == 200 and "n=40" in answer.text


@pytest.mark.parametrize("day", ["0001-01-01", "9999-12-31", "2019-12-31", "2099-01-01"])
def test_out_of_range_marks_are_refused_at_input(dashboard, day):
    client, csrf, _ = dashboard
    answer = client.post("/marks?lang=ko", data={"csrf": csrf, "day": day, "note": "x", "site": "s1"},
                         follow_redirects=False)
    assert answer.status_code == 400 and "기준일은 2020-01-01부터" in answer.text
    answer = client.post("/marks?lang=en", data={"csrf": csrf, "day": day, "note": "x", "site": "s1"},
                         follow_redirects=False)
    assert answer.status_code == 400 and "between 2020-01-01 and" in answer.text


@pytest.mark.parametrize("path", ["/alerts/99999999999999999999/ack", "/alerts/-1/ack", "/alerts/1e3/ack",
                                  "/marks/99999999999999999999/delete", "/marks/٣/delete",
                                  "/alerts/9223372036854775808/ack"])
def test_unbounded_ids_are_404(dashboard, path):
    client, csrf, _ = dashboard
    assert client.post(path, data={"csrf": csrf}, follow_redirects=False).status_code == 404


@pytest.mark.parametrize("query", ["/trends?from=0001-01-01&to=0001-01-05", "/trends?to=9999-12-31",
                                   "/exports?from=0001-01-01", "/export/ratings.csv?from=9999-12-30&to=9999-12-31",
                                   "/compare?days=-3", "/compare?days=99999999999999999999",
                                   "/compare?mark=99999999999999999999", "/report?site=s1&month=0001-01",
                                   "/report?site=s1&month=9999-12", "/api/v1/summary?from=0001-01-01"])
def test_out_of_range_parameters_are_400(dashboard, query):
    client, _, _ = dashboard
    headers = {"Authorization": "Bearer an-api-token-long-enough-0123"}
    answer = client.get(query, headers=headers)
    assert answer.status_code in (400, 404), (query, answer.status_code, answer.text[:200])


PARAMS = ["from", "to", "site", "suspect", "days", "mark", "month", "lang", "error", "group", "terminal", "cell"]
ROUTES = ["/", "/live", "/trends", "/compare", "/alerts", "/exports", "/export/ratings.csv",
          "/export/ratings.xlsx", "/report", "/login", "/help", "/no-such-page"]
hostile = st.one_of(st.text(st.characters(blacklist_categories=("Cs",)), max_size=30), st.integers().map(str),
                    st.sampled_from(["0001-01-01", "9999-12-31", "2026-02-30", "-1", "0", "99999999999999999999",
                                     "s1", "only", "2026-11", "t1", "s1/t1", "s1/", "/t1", "count"]),
    st.dates().map(str))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(ROUTES), params=st.dictionaries(st.sampled_from(PARAMS), hostile, max_size=4))
def test_fuzzed_query_parameters_never_answer_500(dashboard, route, params):
    client, _, _ = dashboard
    answer = client.get(route, params=params)
    assert answer.status_code < 500, (route, params, answer.text[:300])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(["/marks", "/alerts/{}/ack", "/marks/{}/delete"]), pk=hostile,
       form=st.dictionaries(st.sampled_from(["day", "note", "site"]), hostile, max_size=3))
def test_fuzzed_forms_never_answer_500(dashboard, path, pk, form):
    client, csrf, _ = dashboard
    from urllib.parse import quote

    url = path.format(quote(pk, safe="") or "1")
    answer = client.post(url, data={**form, "csrf": csrf}, follow_redirects=False)
    assert answer.status_code < 500, (url, form, answer.text[:300])
