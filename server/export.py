"""Exports: ratings CSV (contract + local day), XLSX for people (labelled sheets + raw), aggregates XLSX."""

from __future__ import annotations

import calendar
import csv
import io
from datetime import date, datetime
from typing import IO, Any, Iterable, Iterator, Mapping, Sequence

from kiosk.protocol import DEFAULT_REASONS
from server.aggregate import summarize
from server.labels import Labels, in_order
from server import words
from server.store import CSV_COLUMNS, Filters, Store

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


def iter_csv(rows: Iterable[Mapping[str, Any]], columns: Sequence[str] = CSV_COLUMNS,
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

#: Which word of the one catalogue (server/words.py) each part of the spreadsheet prints.
SHEET_WORDS: dict[str, str] = {
    "summary": "sheet_summary", "days": "sheet_days", "reasons": "sheet_reasons", "ages": "age_groups",
    "counters": "sheet_counters", "raw": "sheet_raw", "title": "sheet_title", "period": "period", "site": "site",
    "terminal": "terminal", "all": "sheet_all", "suspect": "suspect_short", "suspect_none": "sheet_suspect_none",
    "suspect_false": "sheet_suspect_false", "suspect_true": "sheet_suspect_true", "generated": "generated",
    "note": "sheet_note", "capped": "sheet_capped", "group": "sheet_group", "total": "total", "day": "day",
    "reason": "reason", "age_group": "age_group", "count": "count", "score": "sheet_score", "mean": "mean_score",
    "csat": "sheet_csat", "index": "satisfaction_index", "definitions": "sheet_definitions",
    "aggregates": "sheet_aggregates", "pull_title": "sheet_pull_title", "by": "sheet_by", "source": "sheet_source",
    "failed": "sheet_failed", "partial": "sheet_partial",
}

_DATE_FORMAT = "yyyy-mm-dd"
_TIME_FORMAT = "yyyy-mm-dd hh:mm:ss"
#: Number formats of a summary line's columns after the label: count, scores 1..5, mean, csat, index.
_LINE_FORMATS = ["#,##0"] * 6 + ["0.00", "0.0", "0.0"]


def _word(key: str, lang: str, **values: Any) -> str:
    return words.t(SHEET_WORDS[key], lang, **values)


def _local_time(text: Any, tz) -> datetime | Any:
    """An RFC 3339 timestamp as a naive local datetime (spreadsheets know no zones)."""
    if not isinstance(text, str):
        return text
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    if moment.tzinfo is None:
        return text
    return moment.astimezone(tz).replace(tzinfo=None)


def _local_day(text: Any) -> date | Any:
    try:
        return date.fromisoformat(text) if isinstance(text, str) else text
    except ValueError:
        return text


class _Sheet:
    """A write-only sheet with a bold frozen header, column widths and number formats."""

    def __init__(self, book, title: str, widths: Sequence[float], *, landscape: bool = False,
                 header_row: int = 1):
        from openpyxl.styles import Font

        self.sheet = book.create_sheet(title)
        self.bold = Font(bold=True)
        self.rows = 0
        for number, width in enumerate(widths, start=1):
            self.sheet.column_dimensions[_column_letter(number)].width = width
        setup = self.sheet.page_setup
        setup.paperSize = "9"  # A4 in the OOXML paper size table
        setup.orientation = "landscape" if landscape else "portrait"
        # Fit every column on the page's width, as many pages down as it takes.
        self.sheet.sheet_properties.pageSetUpPr.fitToPage = True
        setup.fitToWidth, setup.fitToHeight = 1, 0
        # A write-only sheet writes its view before its rows: freeze now, below the header to come.
        self.header_row = header_row
        self.sheet.freeze_panes = f"A{header_row + 1}"
        self.sheet.print_title_rows = f"{header_row}:{header_row}"

    def header(self, names: Sequence[str], label_columns: int | None = None) -> None:
        """The bold header row, at the row the sheet was told (it scrolls and prints below it);
        the headers of number columns (after *label_columns*) align right like their numbers."""
        if self.rows + 1 != self.header_row:
            raise ValueError(f"header on row {self.rows + 1}, expected on {self.header_row}")
        self.append(names, bold=True, right_from=label_columns)

    def append(self, values: Sequence[Any], formats: Sequence[str | None] = (), *, bold: bool = False,
               right_from: int | None = None) -> None:
        from openpyxl.cell import WriteOnlyCell
        from openpyxl.styles import Alignment

        cells = []
        for i, value in enumerate(values):
            cell = WriteOnlyCell(self.sheet, _xlsx_cell(value) if not isinstance(value, (date, datetime)) else value)
            fmt = formats[i] if i < len(formats) else None
            if isinstance(value, datetime):
                fmt = _TIME_FORMAT
            elif isinstance(value, date):
                fmt = _DATE_FORMAT
            if fmt:
                cell.number_format = fmt
            if bold:
                cell.font = self.bold
            if right_from is not None and i >= right_from:
                cell.alignment = Alignment(horizontal="right")
            cells.append(cell)
        self.sheet.append(cells)
        self.rows += 1


def _column_letter(number: int) -> str:
    from openpyxl.utils import get_column_letter

    return get_column_letter(number)


def write_ratings_xlsx(out: IO[bytes], store: Store, filters: Filters, *, generated_at: datetime,
                       lang: str = "ko", site_names: Mapping[str, str] | None = None,
                       terminal_names: Mapping[tuple[str, str], str] | None = None,
                       reasons: Sequence[str] = DEFAULT_REASONS,
                       reason_labels: Mapping[str, Mapping[str, str]] | None = None) -> int:
    """A workbook for people: summary, days, reasons, age groups and counters with labels in
    *lang* (ko or en), and the raw ratings (the API's columns) printable on landscape A4.
    Dates and times are real spreadsheet dates in *generated_at*'s zone. Returns the raw rows written."""
    from openpyxl import Workbook

    lang = "en" if lang == "en" else "ko"
    tz = generated_at.tzinfo
    labels = Labels(lang, reason_labels)
    names = site_names or {}
    w = lambda key, **values: _word(key, lang, **values)  # noqa: E731
    line_header = [w("count"), *(w("score", n=n) for n in range(1, 6)), w("mean"), w("csat"), w("index")]
    line_widths = [10] + [8] * 5 + [11, 10, 12]

    wb = Workbook(write_only=True)
    total = store.summary(filters)
    count = sum(total.values())
    capped = count > XLSX_MAX_ROWS
    # title, period, site, terminal, suspect, generated, [capped], definitions, blank, header
    summary = _Sheet(wb, w("summary"), [22, 19, 12, 8, 8, 8, 8, 11, 10, 12], header_row=9 + capped)
    summary.append([w("title")], bold=True)
    summary.append([w("period"), filters.date_from, filters.date_to])
    site = filters.site
    summary.append([w("site"), names.get(site, site) if site else w("all")])
    summary.append([w("terminal"), filters.terminal or w("all")])
    summary.append([w("suspect"), w({None: "suspect_none", False: "suspect_false", True: "suspect_true"}[
        filters.suspect])])
    summary.append([w("generated"), generated_at.astimezone(tz).replace(tzinfo=None)])
    if capped:
        summary.append([w("note"), w("capped", count=count, max=XLSX_MAX_ROWS)])
    summary.append([w("note"), w("definitions", tz=str(tz))])
    summary.append([])
    summary.header([w("group"), *line_header], label_columns=1)
    summary.append(_summary_line(w("total"), total), [None, *_LINE_FORMATS])

    def table(key: str, first: Sequence[str], rows: Iterable[tuple[Sequence[Any], Mapping[int, int]]],
              first_widths: Sequence[float]) -> None:
        sheet = _Sheet(wb, w(key), [*first_widths, *line_widths])
        sheet.header([*first, *line_header], label_columns=len(first))
        for label, dist in rows:
            line = _summary_line(None, dist)[1:]
            sheet.append([*label, *line], [None] * len(first) + _LINE_FORMATS)

    table("days", [w("day")], (([_local_day(day)], dist) for (day,), dist in store.aggregates(("day",), filters)),
          [12])
    for key, field in (("reasons", "reason"), ("ages", "age_group")):
        found = {k[0]: dist for k, dist in store.aggregates((field,), filters)}
        table(key, [w(field)], (([labels.code(field, code)], found[code])
                                for code in in_order(field, found, reasons)), [20])
    table("counters", [w("site"), w("terminal")],
          (([names.get(site, site), (terminal_names or {}).get((site, terminal), terminal)], dist)
           for (site, terminal), dist in store.aggregates(("site", "terminal"), filters)), [22, 16])

    columns = [*CSV_COLUMNS, "suspect"]
    raw = _Sheet(wb, w("raw"), [37, 16, 14, 7, 6, 19, 13, 15, 10, 5, 8, 19, 11, 8], landscape=True)
    raw.header(columns)
    written = 0
    rows = store.iter_ratings(filters, with_suspect=True)
    try:
        for row in rows:
            if written >= XLSX_MAX_ROWS:
                break
            values = [row[c] for c in columns]
            values[columns.index("at")] = _local_time(row["at"], tz)
            values[columns.index("received_at")] = _local_time(row["received_at"], tz)
            values[columns.index("local_day")] = _local_day(row["local_day"])
            raw.append(values)
            written += 1
    finally:
        rows.close()
    wb.save(out)
    return written


def write_aggregates_xlsx(out: IO[bytes], by: Sequence[str], rows: Sequence[Mapping[str, Any]], *,
                          answered: Sequence[str] = (), failed: Sequence[tuple[str, str]] = (),
                          period: tuple[date | None, date | None] = (None, None), lang: str = "ko") -> None:
    """Merged aggregates (pull) for people, in *lang* (ko or en): a summary sheet (title,
    grouping, every server that answered and every one that did not, the total) and an
    aggregates sheet, each key named and each code labelled as on the dashboard."""
    from openpyxl import Workbook

    from server.aggregate import merge

    lang = "en" if lang == "en" else "ko"
    labels = Labels(lang)
    w = lambda key, **values: _word(key, lang, **values)  # noqa: E731
    field = lambda key: words.t(key, lang)  # noqa: E731 - the dimensions are words of their own
    line_header = [w("count"), *(w("score", n=n) for n in range(1, 6)), w("mean"), w("csat"), w("index")]
    line_widths = [10] + [8] * 5 + [11, 10, 12]

    wb = Workbook(write_only=True)
    notes = 2 + (period[0] is not None) + bool(failed) + len(answered) + len(failed)
    summary = _Sheet(wb, w("summary"), [22, 40, 12, 8, 8, 8, 8, 11, 10, 12], header_row=notes + 2)
    summary.append([w("pull_title")], bold=True)
    if period[0] is not None:
        summary.append([w("period"), period[0], period[1]])
    summary.append([w("by"), " × ".join(field(key) for key in by)])
    if failed:
        summary.append([w("note"), w("partial")], bold=True)
    for url in answered:
        summary.append([w("source"), url])
    for url, error in failed:
        summary.append([w("failed"), f"{url}: {error}"])
    summary.append([])
    summary.header([w("group"), *line_header], label_columns=1)
    summary.append(_summary_line(w("total"), merge(r["distribution"] for r in rows)), [None, *_LINE_FORMATS])

    sheet = _Sheet(wb, w("aggregates"), [*(16 for _ in by), *line_widths])
    sheet.header([*(field(key) for key in by), *line_header], label_columns=len(by))
    for row in rows:
        keys = [_local_day(row[key]) if key == "day" else labels.code(key, row[key])
                if key not in ("site", "terminal") else row[key] for key in by]
        sheet.append([*keys, *_summary_line(None, row["distribution"])[1:]], [None] * len(by) + _LINE_FORMATS)
    wb.save(out)


def month_range(month: str) -> tuple[date, date]:
    """``YYYY-MM`` -> its first and last day; ValueError if malformed."""
    try:
        year, number = (int(part) for part in month.split("-"))
        first = date(year, number, 1)
    except (ValueError, TypeError):
        raise ValueError(f"{month!r} is not a month YYYY-MM") from None
    return first, date(year, number, calendar.monthrange(year, number)[1])
