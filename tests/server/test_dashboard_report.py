"""The report page (TestClient): per counter and per group, the grade by the printed rule, the suspect note."""

import re

from tests.server.dashboard_site import admin, gangnam, site_db  # noqa: F401 - fixtures


def figure(html, key):
    return re.search(rf'id="figure-{key}"><span class="label">[^<]*</span><b>([^<]*)</b>', html)[1]


def test_a_counters_report_holds_only_that_counter(admin):
    site = admin.get("/report?site=gangnam-office&month=2026-11&suspect=include").text
    one = admin.get("/report?site=gangnam-office&terminal=counter-02&month=2026-11").text
    assert figure(one, "count") == "95" and figure(site, "count") == "291"
    assert "강남구청 민원실 · counter-02" in one
    both = admin.get("/report?terminal=seocho-office/counter-01&month=2026-11").text
    assert figure(both, "count") == "76"


def test_a_groups_report_sums_its_sites_and_keeps_counters_apart(admin, gangnam):
    html = admin.get("/report?group=south&month=2026-11").text
    assert figure(html, "count") == str(285 + 76) and "남부 권역" in html
    table = html[html.index('id="terminals"'):]
    assert "강남구청 민원실 · 1번 창구" in table and "seocho-office · counter-01" in table
    # A scoped user's group report covers only their sites.
    assert figure(gangnam.get("/report?group=south&month=2026-11").text, "count") == "285"


def test_the_grade_and_its_rule_are_printed(admin):
    html = admin.get("/report?site=gangnam-office&month=2026-11").text
    # Index of gangnam is below its target 70 and there is no earlier data: no baseline verdict.
    assert figure(html, "grade") in ("보통", "판단 보류", "미흡", "우수")
    assert "PCSI" in html and "목표 지수는 70" in html
    assert "의심 평가 6건을 제외한 값입니다" in html


def test_a_report_needs_a_site_or_a_group(admin):
    answer = admin.get("/report?month=2026-11")
    assert answer.status_code == 400 and "기관이나 권역을 고르세요" in answer.text
    assert admin.get("/report?site=gangnam-office&suspect=only").status_code == 400


def test_the_pdf_of_a_group_and_of_a_counter(admin, tmp_path):
    from tests.server.test_document import pdf_text

    answer = admin.get("/report.pdf?group=south&month=2026-11&lang=ko")
    assert answer.status_code == 200 and answer.content.startswith(b"%PDF")
    text = pdf_text(answer.content, tmp_path)
    assert "남부 권역" in text and "361" in text
    counter = admin.get("/report.pdf?site=gangnam-office&terminal=counter-02&month=2026-11")
    assert "onetap-report-gangnam-office-2026-11" in counter.headers["content-disposition"]
