"""The alerts page (TestClient): kinds and messages in the reader's language, scoped, acknowledged."""

import re

from tests.server.dashboard_site import admin, csrf_of, gangnam, site_db  # noqa: F401 - fixtures


def open_table(html):
    return html[html.index('id="open-alerts"'):html.index('id="past-alerts"')]


def test_kinds_and_messages_read_in_korean_and_english(admin):
    table = open_table(admin.get("/alerts?lang=ko").text)
    assert "시계 미동기화" in table and "단말기 시계가 동기화되지 않았습니다(NTP)." in table
    assert "운영 시간 중 40분째 연결이 끊겨 있습니다." in table
    assert "최근 30분 동안 2점 이하 평가가 6건 있었습니다." in table
    assert not re.search(r">(clock|offline|low_scores)<", table) and "not synchronised" not in table
    english = open_table(admin.get("/alerts?lang=en").text)
    assert "Clock not synchronised" in english and "6 ratings of 2 or less in the last 30 min." in english


def test_alerts_follow_the_scope_and_the_filter(admin, gangnam):
    assert "seocho-office" not in open_table(gangnam.get("/alerts").text)
    assert "1번 창구" not in open_table(admin.get("/alerts?site=seocho-office").text)
    assert "seocho-office" in open_table(admin.get("/alerts?group=south").text)


def test_an_alert_is_acknowledged_with_the_form(gangnam):
    html = gangnam.get("/alerts").text
    pk = re.search(r'/alerts/(\d+)/ack', html)[1]
    answer = gangnam.post(f"/alerts/{pk}/ack", data={"csrf": csrf_of(gangnam)}, follow_redirects=False)
    assert answer.status_code == 303
    assert "확인함: gangnam" in gangnam.get("/alerts").text
