"""Exports: CSV cells and the local day, XLSX sheets for people (labels, dates, formats, print), month ranges, exclude_suspect in the API."""

import io
import uuid
from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from openpyxl import load_workbook

from kiosk.protocol import Rating
from server.api import create_app
from server.config import ServerConfig
from server.export import csv_cell, iter_csv, month_range, write_ratings_xlsx
from server.store import RATING_COLUMNS, Filters, SQLiteStore

NOW = datetime(2026, 11, 27, 3, 0, tzinfo=timezone.utc)
SEOUL = ZoneInfo("Asia/Seoul")


def rating(seq, score, **extra):
    return Rating(id=str(uuid.uuid4()), seq=seq, score=score, at="2026-11-27T10:15:02.417+09:00",
                  clock_synced=True, **extra)


@pytest.fixture
def store(tmp_path):
    store = SQLiteStore.open(tmp_path / "onetap.db")
    store.ingest_batch("s1", "t1", [rating(1, 5), rating(2, 4, reason="wait_time"), rating(3, 1)], NOW)
    # The wire format admits no such text, but an export must not trust the database.
    store.db.conn.execute("UPDATE ratings SET lang = ? WHERE seq = 3", ["=cmd|' /c calc'!A1"])
    store.db.conn.commit()
    store.ingest_batch("s1", "t2", [rating(1, 3, age_group="30s")], NOW)
    yield store
    store.close()


def test_csv_cells_and_bom():
    assert [csv_cell(v) for v in (None, True, False, 3, "=1+1", "-2", "@x", "plain")] == \
        ["", "true", "false", "3", "'=1+1", "'-2", "'@x", "plain"]
    data = b"".join(iter_csv([{"id": "a", "site": "+s"}], columns=("id", "site")))
    assert data == "\ufeffid,site\r\na,'+s\r\n".encode("utf-8")


def xlsx(store, filters=None, **options):
    buffer = io.BytesIO()
    filters = filters or Filters(date(2026, 11, 27), date(2026, 11, 27))
    written = write_ratings_xlsx(buffer, store, filters, generated_at=NOW.astimezone(SEOUL), **options)
    return written, load_workbook(io.BytesIO(buffer.getvalue()))


def test_xlsx_sheets_are_korean_labelled_and_sorted_by_meaning(store):
    written, book = xlsx(store, site_names={"s1": "강남구청 민원실"}, terminal_names={("s1", "t2"): "2번 창구"})
    assert written == 4
    assert book.sheetnames == ["요약", "일별", "사유", "연령대", "창구별", "원자료"]
    summary = book["요약"]
    header = next(r for r in summary.iter_rows() if r[0].value == "구분")
    assert [c.value for c in header] == ["구분", "건수", "1점", "2점", "3점", "4점", "5점", "평균 점수",
                                         "CSAT (%)", "만족도 지수"]
    assert all(c.font.bold for c in header)
    assert summary.freeze_panes == f"A{header[0].row + 1}"
    total = [c for c in summary[header[0].row + 1]]
    assert [c.value for c in total[:7]] == ["합계", 4, 1, 0, 1, 1, 1]
    assert total[7].value == 3.25 and total[7].number_format == "0.00"
    assert total[8].value == 50.0 and total[8].number_format == "0.0" and total[9].value == 56.25
    assert [r[:3] for r in book["창구별"].iter_rows(min_row=2, values_only=True)] == [("강남구청 민원실", "t1", 3), ("강남구청 민원실", "2번 창구", 1)]
    assert [r[0] for r in book["사유"].iter_rows(min_row=2, values_only=True)] == ["대기 시간", "응답 없음"]
    assert [r[0] for r in book["연령대"].iter_rows(min_row=2, values_only=True)] == ["30대", "응답 없음"]
    day = book["일별"]["A2"]
    assert day.value == datetime(2026, 11, 27) and day.is_date and day.number_format == "yyyy-mm-dd"
    assert book["일별"].column_dimensions["A"].width >= 10 and book["일별"].freeze_panes == "A2"


def test_xlsx_in_english(store):
    _, book = xlsx(store, lang="en")
    assert book.sheetnames == ["Summary", "Days", "Reasons", "Age groups", "Per counter", "Raw"]
    assert [r[0] for r in book["Reasons"].iter_rows(min_row=2, values_only=True)] == ["Waiting time", "No answer"]


def test_the_raw_sheet_has_real_local_times_numbers_and_prints_on_landscape_a4(store):
    _, book = xlsx(store)
    raw = book["원자료"]
    header = [c.value for c in raw[1]]
    assert header[:3] == ["id", "site", "terminal"] and header[-2:] == ["local_day", "suspect"]
    assert raw.max_row == 5 and raw.freeze_panes == "A2" and all(c.font.bold for c in raw[1])
    row = {name: cell for name, cell in zip(header, raw[2])}
    assert row["at"].is_date and row["at"].value == datetime(2026, 11, 27, 10, 15, 2, 417000)  # Seoul time
    assert row["at"].number_format == "yyyy-mm-dd hh:mm:ss"
    assert row["received_at"].value == datetime(2026, 11, 27, 12, 0)  # 03:00 UTC
    assert row["local_day"].value == datetime(2026, 11, 27) and row["local_day"].is_date
    assert isinstance(row["score"].value, int) and isinstance(row["seq"].value, int)
    assert raw.page_setup.orientation == "landscape" and raw.page_setup.fitToWidth == 1
    assert raw.sheet_properties.pageSetUpPr.fitToPage and raw.print_title_rows == "$1:$1"
    langs = [r[header.index("lang")] for r in raw.iter_rows(min_row=2, values_only=True)]
    assert "'=cmd|' /c calc'!A1" in langs  # text, not a formula
    for row in raw.iter_rows(min_row=2):
        assert all(cell.data_type != "f" for cell in row)


def test_csv_keeps_the_contract_and_adds_the_local_day(store):
    late = Rating(id=str(uuid.uuid4()), seq=9, score=4, at="2026-11-30T15:30:00Z", clock_synced=True)
    store.ingest_batch("s1", "t3", [late], datetime(2026, 11, 30, 15, 31, tzinfo=timezone.utc))
    rows = store.iter_ratings(Filters(date(2026, 12, 1), date(2026, 12, 1)))
    text = b"".join(iter_csv(rows)).decode("utf-8")
    header, line = text.lstrip("\ufeff").splitlines()[:2]
    assert header == ",".join(RATING_COLUMNS) + ",local_day"
    assert line.endswith(",2026-12-01") and "2026-11-30T15:30:00" in line  # UTC 11-30 is 12-01 in Seoul


def test_month_range():
    assert month_range("2024-02") == (date(2024, 2, 1), date(2024, 2, 29))
    assert month_range("2026-12") == (date(2026, 12, 1), date(2026, 12, 31))
    for bad in ("2026-13", "2026", "x-y", ""):
        with pytest.raises(ValueError):
            month_range(bad)


def test_api_exclude_suspect(store, tmp_path):
    store.mark_suspect([store.ratings_after(0)[0]["pk"]])
    app = create_app(lambda: SQLiteStore.open(tmp_path / "onetap.db"), ServerConfig(api_token="t" * 16),
                     now=lambda: NOW)
    auth = {"Authorization": "Bearer " + "t" * 16}
    with TestClient(app) as client:
        assert client.get("/api/v1/summary", headers=auth).json()["count"] == 4
        assert client.get("/api/v1/summary?exclude_suspect=true", headers=auth).json()["count"] == 3
        rows = client.get("/api/v1/aggregates?by=terminal&exclude_suspect=true", headers=auth).json()["rows"]
        assert sum(r["count"] for r in rows) == 3
        csv_lines = client.get("/api/v1/ratings.csv?exclude_suspect=true", headers=auth).text.strip().splitlines()
        assert len(csv_lines) == 4
