"""The exports page and files (TestClient): one suspect default, a terminal filter, names that say what they hold."""

import csv
import io

from openpyxl import load_workbook

from tests.server.dashboard_site import admin, gangnam, site_db  # noqa: F401 - fixtures

RANGE = "from=2026-11-02&to=2026-11-27"


def rows(answer):
    return list(csv.DictReader(io.StringIO(answer.content.decode("utf-8-sig"))))


def test_exports_default_to_excluding_suspect_ratings_like_every_page(admin):
    default = admin.get(f"/export/ratings.csv?{RANGE}")
    assert 'suspect-exclude.csv"' in default.headers["content-disposition"]
    included = admin.get(f"/export/ratings.csv?{RANGE}&suspect=include")
    assert len(rows(included)) - len(rows(default)) == 6
    page = admin.get("/exports").text
    form = page[page.index('id="export-form"'):page.index("</form>", page.index('id="export-form"'))]
    assert '<option value="exclude" selected>제외 (기본)</option>' in form


def test_csv_and_xlsx_honour_the_terminal_filter(admin):
    one = rows(admin.get(f"/export/ratings.csv?{RANGE}&terminal=gangnam-office/counter-02"))
    assert one and {(r["site"], r["terminal"]) for r in one} == {("gangnam-office", "counter-02")}
    answer = admin.get(f"/export/ratings.xlsx?{RANGE}&site=seocho-office&terminal=counter-01")
    assert "seocho-office-counter-01-suspect-exclude.xlsx" in answer.headers["content-disposition"]
    book = load_workbook(io.BytesIO(answer.content))
    raw = book["원자료"]
    assert {row[1] for row in raw.iter_rows(min_row=2, values_only=True) if row[1]} == {"seocho-office"}
    summary = [tuple(r) for r in book.worksheets[0].iter_rows(values_only=True)]
    assert any(r[:2] == ("단말기", "counter-01") for r in summary)
    assert any(r[:2] == ("의심 평가", "제외") for r in summary)


def test_exports_page_offers_terminals_by_site(admin, gangnam):
    page = admin.get("/exports").text
    assert 'value="gangnam-office/counter-01"' in page and 'value="seocho-office/counter-01"' in page
    assert "seocho-office" not in gangnam.get("/exports").text
    assert gangnam.get(f"/export/ratings.csv?{RANGE}&terminal=seocho-office/counter-01").status_code == 403
