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


#: One message per kind as the server writes it (server/alerts.py, audit.py, ingest.py, certificates.py);
#: those the pure rules write are taken from the rules themselves (messages_from_the_rules).
MESSAGES = {
    "offline": "gangnam-office/counter-01 offline for 40 min during opening hours",
    "low_scores": "gangnam-office/counter-01: 6 scores <= 2 in the last 30 min",
    "backlog": "gangnam-office/counter-01 backlog 12 not draining (oldest pending 2026-11-27T11:00:00+09:00)",
    "clock": "gangnam-office/counter-01 clock not synchronised (NTP)",
    "certificate": "ca_file /etc/onetap/ca.pem: certificate CN=onetap-ca expires on 2026-12-20 (in 23 days): renew it",
    "help": "gangnam-office/counter-01: a citizen asks for staff help",
    "missing": "gangnam-office/counter-01: seq 7-9, 12 missing for over 60 min (ratings lost or removed at the kiosk)",
    "suspect": "gangnam-office/counter-01: 6 ratings at machine pace flagged suspect (kept, excludable)",
    "seq_restart": "gangnam-office/counter-01: numbering began again at 1 (2 times in all): a kiosk replaced without"
                   " its outbox? (ratings kept)",
    "quarantine": "gangnam-office/counter-01 reached its daily quarantine cap (1000 rows, 1048576 bytes): further bad"
                  " messages are counted and dropped",
    "chain": "gangnam-office/counter-01: chain broken at seq 41 (it does not follow seq 40: altered, inserted or a"
             " kiosk that lost its outbox)",
    "signature": "gangnam-office/counter-01: a batch of 3 ratings whose signature does not verify was quarantined,"
                 " not counted (forged, or the kiosk's key does not match the registry)",
    "tamper": "stored ratings no longer verify: gangnam-office/counter-01 seq 5: altered (its content does not match"
              " its chain)",
}
#: What each sentence must carry of its message's figures, in either language.
FIGURES = {"offline": "40", "low_scores": "6", "backlog": "12", "certificate": "2026-12-20", "missing": "7-9, 12",
           "suspect": "6", "seq_restart": "2", "quarantine": "1000", "chain": "41", "signature": "3", "tamper": "5"}


def messages_from_the_rules(now):
    """The messages the pure rules write (evaluate, missing_conditions), by kind: the page test reads
    these, so a rule whose wording changes and loses its figures on the page fails it."""
    import json
    from datetime import timedelta
    from zoneinfo import ZoneInfo

    from kiosk.protocol import format_timestamp
    from server import audit
    from server.alerts import evaluate
    from server.config import AlertsConfig

    def ago(minutes):
        return format_timestamp(now - timedelta(minutes=minutes))

    where = {"site": "gangnam-office", "terminal": "counter-01"}
    online = {**where, "state": "online", "updated_at": ago(0), "backlog": 12, "oldest_pending_at": ago(60),
              "clock_synced": False, "help_requested": True}
    offline = {**where, "state": "offline", "updated_at": ago(40)}
    lows = [{**where, "score": 1, "at": ago(i)} for i in range(6)]
    found = {c.kind: c.message for c in evaluate(now, [online, offline], lows, AlertsConfig(), ZoneInfo("Asia/Seoul"))}
    state = {**where, "missing": json.dumps([[7, 9, ago(90)], [12, 12, ago(90)]])}
    found.update((audit.MISSING_ALERT, message) for _, _, message in audit.missing_conditions(now, [state], 60))
    return found


def test_every_alert_kind_reads_in_korean_and_english(tmp_path):
    from server.alerts import ALERT_KINDS
    from tests.server.dashboard_site import NOW, client_for, seed
    from server.store import SQLiteStore

    messages = {**MESSAGES, **messages_from_the_rules(NOW)}
    assert {"offline", "backlog", "clock", "help", "low_scores", "missing"} <= set(messages_from_the_rules(NOW))

    path = tmp_path / "onetap.db"
    seed(path)
    store = SQLiteStore.open(path)
    for kind in ALERT_KINDS:
        # A kind added without a sample here still gets raised: its label and sentence must exist.
        store.raise_alert("gangnam-office", "counter-01", kind,
                          messages.get(kind, f"gangnam-office/counter-01: something about {kind}"), NOW)
    store.close()
    client = client_for(path)
    korean = client.get("/alerts?lang=ko").text
    kinds = re.findall(r'<td class="kind">([^<]*)</td>', korean)
    texts = re.findall(r'<td class="message">([^<]*)</td>', korean)
    assert len(kinds) == len(texts) >= len(ALERT_KINDS) + 3
    for label in kinds:
        assert label not in ALERT_KINDS and re.search("[가-힣]", label), label
    for text in texts:
        # Korean sentences with figures; only acronyms (NTP) in Latin letters.
        assert re.search("[가-힣]", text) and not re.search("[a-z]{3,}", text), text
    english = client.get("/alerts?lang=en").text
    english_kinds = re.findall(r'<td class="kind">([^<]*)</td>', english)
    english_texts = re.findall(r'<td class="message">([^<]*)</td>', english)
    for label in english_kinds:
        assert label not in ALERT_KINDS and not re.search("[가-힣]", label), label
    for text in english_texts:
        assert not re.search("[가-힣]", text) and re.search("[a-z]{3,}", text), text
    from server.dashboard.i18n import alert_kind
    for lang, page in (("ko", korean), ("en", english)):
        rows = re.findall(r'<td class="kind">([^<]*)</td><td class="message">([^<]*)</td>', page)
        for kind, figure in FIGURES.items():
            assert any(figure in text for label, text in rows if label == alert_kind(kind, lang)), (lang, kind)
