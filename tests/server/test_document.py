"""The report as a document: autoescaped HTML, and an A4 PDF whose text holds the Korean labels and figures."""

import re
import subprocess
import uuid
from datetime import date, datetime, timedelta, timezone

import pytest

from kiosk.protocol import Rating
from server.config import ServerConfig, SiteConfig
from server.document import render_html, render_pdf
from server.report import report_for
from server.store import SQLiteStore

KST = timezone(timedelta(hours=9))
NOW = datetime(2026, 12, 1, 1, 0, tzinfo=timezone.utc)
CONFIG = ServerConfig(institution="강남구청", sites={"gangnam-office": SiteConfig(name="강남구청 민원실")})


def seed(store):
    """November: 40 ratings (scores 5,4,4,2 ten times), reasons on the 2s; October: 10 ratings of 3."""
    batch, seq = [], 0
    for day in range(1, 11):
        for score, reason, age in ((5, None, "70plus"), (4, None, "20s"), (4, None, None), (2, "resolution", "70plus")):
            seq += 1
            at = datetime(2026, 11, day, 9 + seq % 8, 15, tzinfo=KST)
            batch.append(Rating(id=str(uuid.uuid4()), seq=seq, score=score, at=at.isoformat(), clock_synced=True,
                                reason=reason, age_group=age))
    for day in range(1, 11):
        seq += 1
        batch.append(Rating(id=str(uuid.uuid4()), seq=seq, score=3, clock_synced=True,
                            at=datetime(2026, 10, day, 10, 0, tzinfo=KST).isoformat()))
    store.ingest_batch("gangnam-office", "counter-01", batch, NOW)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    store = SQLiteStore.open(tmp_path_factory.mktemp("doc") / "onetap.db")
    seed(store)
    yield report_for(CONFIG, store, "gangnam-office", date(2026, 11, 1), lang="ko", now=NOW)
    store.close()


def pdf_text(data: bytes, tmp_path) -> str:
    path = tmp_path / "report.pdf"
    path.write_bytes(data)
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True,
                          check=True).stdout


def test_the_pdf_holds_the_korean_labels_and_figures(report, tmp_path):
    data = render_pdf(report)
    assert data.startswith(b"%PDF")
    text = pdf_text(data, tmp_path)
    for expected in ("강남구청 민원실", "월간 만족도 보고서", "2026년 11월", "평가 건수", "만족도 지수",
                     "업무 처리 결과", "70세 이상", "20대", "응답 없음", "전월", "2026년 10월", "전년 동월",
                     "의심 평가 0건을 제외한 값", "counter-01", "09시", "16시"):
        assert expected in text, expected
    # 40 ratings, mean (50+40+40+20)/40 = 3.75 -> index 68.75, CSAT 75 %; October index 50.
    assert "40" in text and "68.8" in text and "75.0%" in text and "3.75" in text
    assert "50.0" in text and "+18.8" in text
    assert "resolution" not in text and "70plus" not in text
    # The page number in the footer of every page.
    pages = int(next(line.split()[-1] for line in subprocess.run(
        ["pdfinfo", str(tmp_path / "report.pdf")], capture_output=True, text=True).stdout.splitlines()
        if line.startswith("Pages:")))
    assert re.search(rf"\b1\s*/\s*{pages}\s*\f", text) and re.search(rf"\b{pages}\s*/\s*{pages}\s*\f", text)


def test_hangul_is_drawn_with_the_bundled_font(report, tmp_path):
    path = tmp_path / "report.pdf"
    path.write_bytes(render_pdf(report))
    fonts = subprocess.run(["pdffonts", str(path)], capture_output=True, text=True, check=True).stdout
    assert "NanumGothic" in fonts


def test_the_english_pdf(tmp_path):
    store = SQLiteStore.open(tmp_path / "onetap.db")
    seed(store)
    english = report_for(CONFIG, store, "gangnam-office", date(2026, 11, 1), lang="en", now=NOW)
    store.close()
    text = pdf_text(render_pdf(english), tmp_path)
    assert "Monthly satisfaction report" in text and "Outcome of my request" in text and "70 or over" in text


def test_the_html_is_autoescaped(report):
    from dataclasses import replace

    hostile = replace(report, site_name="<script>alert(1)</script>", notes=["<img src=x>"])
    html = render_html(hostile)
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)" in html
    assert "<img src=x>" not in html
    assert "<svg" in html  # the charts are markup on purpose
