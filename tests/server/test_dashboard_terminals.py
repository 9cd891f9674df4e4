"""Retiring a terminal from the board (TestClient): administrators only, confirmed, CSRF-checked; ratings stay."""

import re

import pytest

from kiosk.protocol import Status
from server.store import SQLiteStore
from tests.server.dashboard_site import NOW, TOKEN, client_for, csrf_of, seed

RETIRE = "/terminals/gangnam-office/counter-02/retire"


@pytest.fixture
def site(tmp_path):
    path = tmp_path / "onetap.db"
    seed(path)
    return path


def board(client):
    html = client.get("/").text
    return html[html.index('id="terminals"'):html.index("</table>", html.index('id="terminals"'))]


def figures(client):
    answer = client.get("/api/v1/aggregates?by=site,terminal&from=2026-11-02&to=2026-11-26",
                        headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200
    return answer.json()


def test_an_administrator_retires_a_terminal_after_confirming(site):
    admin = client_for(site)
    assert f'href="{RETIRE}"' in board(admin) and "counter-02" in board(admin)
    before = figures(admin)
    assert {"site": "gangnam-office", "terminal": "counter-02", "count": 95}.items() <= next(
        row for row in before["rows"] if row["terminal"] == "counter-02" and row["site"] == "gangnam-office").items()
    page = admin.get(RETIRE)
    assert page.status_code == 200
    assert "퇴역 처리: 평가 기록은 남고 현황판과 알림에서 빠집니다." in page.text
    assert "onetap-server terminal retire --site gangnam-office --terminal counter-02" in page.text
    # Without the form's CSRF token nothing happens.
    assert admin.post(RETIRE, data={"csrf": "forged"}, follow_redirects=False).status_code == 403
    assert "counter-02" in board(admin)
    done = admin.post(RETIRE, data={"csrf": csrf_of(admin)}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/"
    assert "counter-02" not in board(admin) and "counter-01" in board(admin)
    assert figures(admin) == before  # its ratings stay in every figure
    store = SQLiteStore.open(site)
    try:
        retired = [r for r in store.terminals(include_retired=True) if r["terminal"] == "counter-02"]
        assert retired and retired[0]["retired_at"] is not None
    finally:
        store.close()
    # Retired: no longer on the board, so no form to retire it again.
    assert admin.get(RETIRE).status_code == 404


def test_a_site_scoped_user_sees_no_button_and_is_refused(site):
    gangnam = client_for(site, "gangnam")
    assert "counter-02" in board(gangnam) and "/retire" not in board(gangnam) and "퇴역" not in board(gangnam)
    refused = gangnam.get(RETIRE)
    assert refused.status_code == 403 and "관리자만" in refused.text
    answer = gangnam.post(RETIRE, data={"csrf": csrf_of(gangnam)}, follow_redirects=False)
    assert answer.status_code == 403 and "관리자만" in answer.text
    assert "counter-02" in board(gangnam)


def test_a_terminal_with_unsent_ratings_is_not_retired(site):
    store = SQLiteStore.open(site)
    store.update_status("gangnam-office", "counter-02", Status("online", {"backlog": 7}), NOW)
    store.close()
    admin = client_for(site)
    assert "미전송 평가 7건" in admin.get(RETIRE).text
    answer = admin.post(RETIRE, data={"csrf": csrf_of(admin)}, follow_redirects=False)
    assert answer.status_code == 409 and "미전송 평가 7건" in answer.text and "--force" in answer.text
    assert "counter-02" in board(admin)


def test_unknown_or_malformed_terminals_are_refused(site):
    admin = client_for(site)
    assert admin.get("/terminals/gangnam-office/counter-99/retire").status_code == 404
    assert admin.post("/terminals/Bad..Site/counter-01/retire", data={"csrf": csrf_of(admin)},
                      follow_redirects=False).status_code == 400
    assert re.search(r"counter-01", board(admin))
