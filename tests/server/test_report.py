"""The monthly report model: figures, order by meaning, labels, comparison, footnote, default month (pure),
and the page a logged-in user gets at /report."""

import re
import uuid
from datetime import date, datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient

from kiosk.protocol import Rating
from server.api import create_app
from server.auth import hash_password
from server.config import ServerConfig, SiteConfig, UserConfig
from server.report import ReportAnswers, build_report, fetch_answers, last_complete_month, shift_months
from server.store import SQLiteStore

KST = timezone(timedelta(hours=9))
NOW = datetime(2026, 12, 1, 1, 0, tzinfo=timezone.utc)  # 10:00 on 1 December in Seoul
PASSWORD = "비밀-번호-123"


def dist(*counts):
    return dict(zip(range(1, 6), counts))


def answers(**extra):
    base = dict(
        total=dist(10, 10, 20, 30, 30), suspect=7,
        days=[(("2026-11-02",), dist(5, 5, 10, 15, 15)), (("2026-11-03",), dist(5, 5, 10, 15, 15))],
        hour_weekday=[((9, 1), dist(5, 5, 10, 15, 15)), ((14, 2), dist(5, 5, 10, 15, 15))],
        reasons=[((None,), dist(0, 0, 20, 30, 30)), (("other",), dist(4, 0, 0, 0, 0)),
                 (("wait_time",), dist(6, 10, 0, 0, 0))],
        ages=[(("70plus",), dist(0, 0, 0, 0, 10)), (("under20",), dist(0, 0, 0, 10, 0)),
              ((None,), dist(10, 10, 20, 20, 20)), (("20s",), dist(0, 0, 1, 0, 0))],
        age_reasons=[(("70plus", "wait_time"), dist(3, 0, 0, 0, 0)), (("70plus", "other"), dist(1, 0, 0, 0, 0)),
                     (("20s", "wait_time"), dist(2, 0, 0, 0, 0)), (("20s", None), dist(0, 0, 0, 5, 5))],
        terminals=[(("counter-01",), dist(5, 5, 10, 15, 15)), (("counter-02",), dist(5, 5, 10, 15, 15))],
        previous=dist(30, 20, 20, 20, 10), last_year=dist(1, 1, 1, 1, 1), marks=[("2026-11-10", "번호표")])
    base.update(extra)
    return ReportAnswers(**base)


def test_the_default_month_is_the_last_complete_one():
    assert last_complete_month(date(2026, 12, 1)) == date(2026, 11, 1)
    assert last_complete_month(date(2026, 1, 31)) == date(2025, 12, 1)
    assert shift_months(date(2026, 1, 1), -1) == date(2025, 12, 1)
    assert shift_months(date(2026, 11, 1), -12) == date(2025, 11, 1)


def test_cover_figures_with_their_definitions():
    r = build_report(answers(), site="gangnam-office", first=date(2026, 11, 1), today=date(2026, 12, 1),
                     site_name="강남구청 민원실", institution="강남구청")
    figures = {f.key: f for f in r.figures}
    assert figures["count"].value == "100"
    assert figures["index"].value == "65.0"   # mean 3.6 -> (3.6 - 1) / 4 * 100
    assert figures["csat"].value == "60.0%"
    assert figures["mean"].value == "3.60"
    assert "÷ 4 × 100" in figures["index"].definition
    assert r.site_name == "강남구청 민원실" and r.institution == "강남구청" and r.month == "2026년 11월"
    assert len(r.days) == 30 and r.days[0] == ("2026-11-01", None) and r.days[1][1].count == 50


def test_labels_in_korean_sorted_by_meaning_with_no_answer_last():
    r = build_report(answers(), site="s", first=date(2026, 11, 1), today=date(2026, 12, 1))
    assert [row.label for row in r.reasons] == ["대기 시간", "기타", "응답 없음"]
    assert [row.label for row in r.ages] == ["20세 미만", "20대", "70세 이상", "응답 없음"]
    assert r.reasons[0].summary.count == 16 and r.reasons[0].share == 16.0
    assert r.age_reason_columns == ["대기 시간", "기타"]
    assert r.age_reasons == [("20대", [(2, 100.0), (0, 0.0)], 2), ("70세 이상", [(3, 75.0), (1, 25.0)], 4)]
    assert [row.label for row in r.terminals] == ["counter-01", "counter-02"]
    named = build_report(answers(), site="s", first=date(2026, 11, 1), today=date(2026, 12, 1),
                         terminal_names={"counter-02": "2번 창구"})
    assert [row.label for row in named.terminals] == ["counter-01", "2번 창구"]
    assert r.weekdays[:2] == ["월", "화"] and r.hours == list(range(9, 15)) and r.hour_labels[0] == "09시"


def test_english_labels():
    r = build_report(answers(), site="s", first=date(2026, 11, 1), today=date(2026, 12, 1), lang="en")
    assert [row.label for row in r.reasons] == ["Waiting time", "Other", "No answer"]
    assert r.month == "November 2026" and r.words["title"] == "Monthly satisfaction report"
    assert "exclude the 7 suspect ratings" in " ".join(r.notes)


def test_comparison_with_the_previous_month_and_last_year():
    r = build_report(answers(), site="s", first=date(2026, 11, 1), today=date(2026, 12, 1))
    previous, last_year = r.comparisons
    assert previous.label == "전월" and previous.period == "2026년 10월" and previous.summary.count == 100
    assert previous.index.diff == pytest.approx(65.0 - 40.0)
    assert previous.index.significant is True and previous.index_verdict == "유의함"
    assert last_year.period == "2025년 11월" and last_year.index_verdict == "판단 보류"  # 5 ratings only
    assert "40.0에서 65.0으로" in previous.sentence


def test_the_footnote_defines_and_states_the_suspect_rule():
    kept = build_report(answers(), site="s", first=date(2026, 11, 1), today=date(2026, 12, 1),
                        suspect_rules={"burst_count": 5, "burst_interval_s": 1.5, "run_length": 20,
                                       "run_interval_s": 3.0})
    notes = " ".join(kept.notes)
    assert "만족도 지수 = (평균 점수 − 1) ÷ 4 × 100" in notes and "CSAT =" in notes
    assert "5번 이상 연달아 1.5초" in notes
    assert "의심 평가 7건을 제외한 값" in notes
    included = build_report(answers(), site="s", first=date(2026, 11, 1), today=date(2026, 12, 1),
                            exclude_suspect=False)
    assert "의심 평가 7건을 포함한 값" in " ".join(included.notes)


def rating(seq, score, at, **extra):
    return Rating(id=str(uuid.uuid4()), seq=seq, score=score, at=at.isoformat(), clock_synced=True, **extra)


@pytest.fixture
def store(tmp_path):
    store = SQLiteStore.open(tmp_path / "onetap.db")
    batch = [rating(1, 5, datetime(2026, 11, 3, 9, 30, tzinfo=KST), age_group="70plus"),
             rating(2, 1, datetime(2026, 11, 3, 10, 5, tzinfo=KST), reason="resolution", age_group="70plus"),
             rating(3, 4, datetime(2026, 11, 30, 23, 50, tzinfo=KST)),
             rating(4, 2, datetime(2026, 10, 5, 11, 0, tzinfo=KST), reason="facilities"),
             rating(5, 5, datetime(2026, 12, 1, 9, 0, tzinfo=KST))]
    store.ingest_batch("gangnam-office", "counter-01", batch, NOW)
    store.ingest_batch("other-site", "counter-01", [rating(1, 1, datetime(2026, 11, 4, 9, 0, tzinfo=KST))], NOW)
    store.add_mark("gangnam-office", date(2026, 11, 10), "<b>번호표</b>", "admin", NOW)
    yield store
    store.close()


def test_fetch_answers_asks_for_one_site_and_its_months(store):
    got = fetch_answers(store, "gangnam-office", date(2026, 11, 1))
    assert sum(got.total.values()) == 3  # 23:50 on the 30th is still November in Seoul
    assert sum(got.previous.values()) == 1 and sum(got.last_year.values()) == 0
    assert dict(got.reasons)[("resolution",)][1] == 1
    assert got.marks == [("2026-11-10", "<b>번호표</b>")]


def login(client, user="admin"):
    page = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    done = client.post("/login", data={"username": user, "password": PASSWORD, "csrf": csrf},
                       follow_redirects=False)
    assert done.status_code == 303


@pytest.fixture
def client(store, tmp_path):
    config = ServerConfig(
        db=tmp_path / "onetap.db", api_token="t" * 16, institution="강남구청",
        sites={"gangnam-office": SiteConfig(name="강남구청 <민원실>", terminals={"counter-01": "1번 창구"})},
        users={"admin": UserConfig(hash_password(PASSWORD), None),
               "other": UserConfig(hash_password(PASSWORD), frozenset({"other-site"}))})
    app = create_app(lambda: SQLiteStore.open(tmp_path / "onetap.db"), config, now=lambda: NOW)
    with TestClient(app) as client:
        yield client


def test_the_report_page_defaults_to_last_month_in_korean_with_escaped_names(client):
    login(client)
    page = client.get("/report?site=gangnam-office")
    assert page.status_code == 200
    text = page.text
    assert "2026년 11월" in text and "월간 만족도 보고서" in text
    assert "강남구청 &lt;민원실&gt;" in text and "<민원실>" not in text  # autoescape
    assert "&lt;b&gt;번호표" in text and "<b>번호표" not in text
    assert "업무 처리 결과" in text and "70세 이상" in text and "응답 없음" in text
    assert "resolution" not in text and "70plus" not in text
    assert "1번 창구" in text and "counter-01" not in text
    assert 'href="/report.pdf?site=gangnam-office&amp;lang=ko"' in text
    english = client.get("/report?site=gangnam-office&month=2026-10&lang=en").text
    assert "October 2026" in english and "Facilities" in english


def test_the_report_is_scoped_and_checks_its_query(client):
    login(client, "other")
    assert client.get("/report?site=gangnam-office").status_code == 403
    assert client.get("/report?site=other-site&month=2026-13").status_code == 400
    assert client.get("/report?site=other-site&suspect=maybe").status_code == 400
    assert client.get("/report?site=other-site").status_code == 200


def test_the_exports_page_offers_last_month_and_labelled_suspect_choices(client):
    login(client)
    text = client.get("/exports").text
    assert 'name="month" value="2026-11"' in text
    export_form = text[text.index('id="export-form"'):text.index('id="report-form"')]
    assert re.findall(r'<option value="(\w+)"[^>]*>([^<]+)</option>', export_form)[-3:] == [
        ("exclude", "제외 (기본)"), ("include", "포함"), ("only", "의심만")]
    # One suspect rule everywhere: the exports default to exclude like every page.
    assert re.search(r'<option value="exclude" selected>', export_form)


def test_the_pdf_download(client):
    login(client)
    response = client.get("/report.pdf?site=gangnam-office&lang=en")
    assert response.status_code == 200 and response.headers["content-type"] == "application/pdf"
    assert response.content.startswith(b"%PDF")
    assert 'filename="onetap-report-gangnam-office-2026-11-en.pdf"' in response.headers["content-disposition"]
