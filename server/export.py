"""Exports: ratings CSV (contract), XLSX (summary and raw sheets), aggregates XLSX, monthly report data."""

from __future__ import annotations

import calendar
import csv
import io
from datetime import date, datetime
from typing import IO, Any, Iterable, Iterator, Mapping, Sequence

from server.aggregate import summarize
from server.store import RATING_COLUMNS, Filters

# Spreadsheet programs run a cell starting with these as a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
#: Data rows an XLSX sheet can hold below its header.
XLSX_MAX_ROWS = 1_048_575


def csv_cell(value: Any) -> str:
    """A value as a CSV cell: empty for None, true/false, text that cannot start a formula."""
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    text = str(value)
    if text.startswith(_FORMULA_START):
        return "'" + text
    return text


def _xlsx_cell(value: Any) -> Any:
    # Numbers stay numbers; every text goes through the same guard as CSV.
    if value is None or isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    return csv_cell(value)


def iter_csv(rows: Iterable[Mapping[str, Any]], columns: Sequence[str] = RATING_COLUMNS,
             chunk_rows: int = 1000) -> Iterator[bytes]:
    """UTF-8 CSV with a BOM (Excel reads UTF-8 only with one), CRLF lines, in chunks."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    buffer.write("\ufeff")
    writer.writerow(columns)
    count = 0
    for row in rows:
        writer.writerow([csv_cell(row.get(c)) for c in columns])
        count += 1
        if count % chunk_rows == 0:
            yield buffer.getvalue().encode("utf-8")
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode("utf-8")


def stream_ratings_csv(store_factory, filters: Filters) -> tuple[Iterator[bytes], str]:
    """The ratings of *filters* as CSV chunks on a store of their own, and a file name.

    The chunks are read after the request handler returns, from whichever
    thread is free, so they cannot share the handler's store; the store and
    its cursor close when the download ends, however it ends.
    """
    export = store_factory()
    rows = export.iter_ratings(filters)

    def chunks() -> Iterator[bytes]:
        try:
            yield from iter_csv(rows)
        finally:
            rows.close()
            export.close()

    return chunks(), f"onetap-ratings-{filters.date_from}-{filters.date_to}.csv"


def _summary_line(label: Any, dist: Mapping[int, int]) -> list[Any]:
    s = summarize(dist)
    return [label, s.count, *(s.distribution[k] for k in range(1, 6)), s.mean, s.csat, s.index]


SUMMARY_HEADER = ["", "count", "1", "2", "3", "4", "5", "mean", "csat", "index"]


def write_ratings_xlsx(out: IO[bytes], store: Any, filters: Filters, *, generated_at: datetime) -> int:
    """A workbook with a 'summary' sheet (totals, per site/terminal, per day) and a 'raw'
    sheet (every rating, as the CSV, plus suspect). Returns the raw rows written."""
    from openpyxl import Workbook

    wb = Workbook(write_only=True)
    summary = wb.create_sheet("summary")
    total = store.summary(filters)
    count = sum(total.values())
    summary.append(["onetap ratings"])
    summary.append(["from", filters.date_from.isoformat(), "to", filters.date_to.isoformat()])
    summary.append(["site", _xlsx_cell(filters.site or "*"), "terminal", _xlsx_cell(filters.terminal or "*")])
    summary.append(["suspect ratings", {None: "included", False: "excluded", True: "only"}[filters.suspect]])
    summary.append(["generated", generated_at.isoformat(timespec="seconds")])
    if count > XLSX_MAX_ROWS:
        summary.append(["NOTE", f"raw sheet holds the first {XLSX_MAX_ROWS} of {count} ratings;"
                                " use ratings.csv for all"])
    summary.append([])
    summary.append(SUMMARY_HEADER)
    summary.append(_summary_line("total", total))
    summary.append([])
    summary.append(["site / terminal", *SUMMARY_HEADER[1:]])
    for (site, terminal), dist in store.aggregates(("site", "terminal"), filters):
        summary.append(_summary_line(_xlsx_cell(f"{site} / {terminal}"), dist))
    summary.append([])
    summary.append(["day", *SUMMARY_HEADER[1:]])
    for (day,), dist in store.aggregates(("day",), filters):
        summary.append(_summary_line(day, dist))

    raw = wb.create_sheet("raw")
    columns = [*RATING_COLUMNS, "suspect"]
    raw.append(columns)
    written = 0
    rows = store.iter_ratings(filters, with_suspect=True)
    try:
        for row in rows:
            if written >= XLSX_MAX_ROWS:
                break
            raw.append([_xlsx_cell(row[c]) for c in columns])
            written += 1
    finally:
        rows.close()
    wb.save(out)
    return written


def write_aggregates_xlsx(out: IO[bytes], by: Sequence[str], rows: Sequence[Mapping[str, Any]],
                          notes: Sequence[tuple[str, str]] = ()) -> None:
    """Merged aggregates (pull): a 'summary' sheet of totals and labelled notes
    (the sources, a partial warning), an 'aggregates' sheet."""
    from openpyxl import Workbook

    from server.aggregate import merge

    wb = Workbook(write_only=True)
    summary = wb.create_sheet("summary")
    summary.append(["onetap aggregates", "by", ",".join(by)])
    for label, note in notes:
        summary.append([label, _xlsx_cell(note)])
    summary.append(SUMMARY_HEADER)
    summary.append(_summary_line("total", merge(r["distribution"] for r in rows)))
    sheet = wb.create_sheet("aggregates")
    sheet.append([*by, *SUMMARY_HEADER[1:]])
    for row in rows:
        line = _summary_line(None, row["distribution"])
        sheet.append([_xlsx_cell(row[k]) for k in by] + line[1:])
    wb.save(out)


def month_range(month: str) -> tuple[date, date]:
    """``YYYY-MM`` -> its first and last day; ValueError if malformed."""
    try:
        year, number = (int(part) for part in month.split("-"))
        first = date(year, number, 1)
    except (ValueError, TypeError):
        raise ValueError(f"{month!r} is not a month YYYY-MM") from None
    return first, date(year, number, calendar.monthrange(year, number)[1])


def report_data(store: Any, filters: Filters) -> dict[str, Any]:
    """What a monthly report shows: totals, suspects apart, per day, terminal, hour, reason, age group."""
    clean = Filters(filters.date_from, filters.date_to, filters.site, filters.terminal, filters.sites, False)
    flagged = Filters(filters.date_from, filters.date_to, filters.site, filters.terminal, filters.sites, True)

    def by(key: str) -> list[tuple[Any, Any]]:
        return [(k[0], summarize(d)) for k, d in store.aggregates((key,), clean)]

    return {
        "total": summarize(store.summary(clean)),
        "suspect": sum(store.summary(flagged).values()),
        "days": by("day"),
        "terminals": by("terminal"),
        "hours": by("hour"),
        "reasons": by("reason"),
        "age_groups": by("age_group"),
    }
