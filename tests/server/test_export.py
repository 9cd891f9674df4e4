"""Exports: CSV cells, XLSX summary and raw sheets (formula-safe), month ranges, report data, exclude_suspect in the API."""

import io
import uuid
from datetime import date, datetime, timezone

import pytest
from fastapi.testclient import TestClient
from openpyxl import load_workbook

from kiosk.protocol import Rating
from server.api import create_app
from server.config import ServerConfig
from server.export import csv_cell, iter_csv, month_range, report_data, write_ratings_xlsx
from server.store import Filters, SQLiteStore

NOW = datetime(2026, 11, 27, 3, 0, tzinfo=timezone.utc)


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


def test_xlsx_has_summary_and_raw_and_is_formula_safe(store):
    buffer = io.BytesIO()
    day = Filters(date(2026, 11, 27), date(2026, 11, 27))
    assert write_ratings_xlsx(buffer, store, day, generated_at=NOW) == 4
    book = load_workbook(io.BytesIO(buffer.getvalue()))
    assert book.sheetnames == ["summary", "raw"]
    summary = list(book["summary"].iter_rows(values_only=True))
    total = next(r for r in summary if r and r[0] == "total")
    assert total[1:7] == (4, 1, 0, 1, 1, 1) and total[8] == 50.0 and total[9] == 56.25
    assert any(r and r[0] == "s1 / t2" for r in summary)
    raw = list(book["raw"].iter_rows(values_only=True))
    assert raw[0][:3] == ("id", "site", "terminal") and raw[0][-1] == "suspect" and len(raw) == 5
    langs = [r[raw[0].index("lang")] for r in raw[1:]]
    assert "'=cmd|' /c calc'!A1" in langs  # text, not a formula
    for row in book["raw"].iter_rows(min_row=2):
        assert all(cell.data_type != "f" for cell in row)


def test_month_range():
    assert month_range("2024-02") == (date(2024, 2, 1), date(2024, 2, 29))
    assert month_range("2026-12") == (date(2026, 12, 1), date(2026, 12, 31))
    for bad in ("2026-13", "2026", "x-y", ""):
        with pytest.raises(ValueError):
            month_range(bad)


def test_report_data_keeps_suspects_apart(store):
    pk = store.ratings_after(0)[0]["pk"]
    store.mark_suspect([pk])
    data = report_data(store, Filters(date(2026, 11, 1), date(2026, 11, 30), site="s1"))
    assert data["total"].count == 3 and data["suspect"] == 1
    assert [k for k, _ in data["terminals"]] == ["t1", "t2"]
    assert dict(data["reasons"])["wait_time"].count == 1


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
