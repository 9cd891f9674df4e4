"""The before/after page: marks (dated changes) and the change in index and CSAT around one of them."""

from __future__ import annotations

from datetime import date, timedelta

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from server.bounds import FIRST_DAY, LAST_DAY
from server.compare import compare
from server.dashboard.context import (SUSPECT_CHOICES, PageError, Session, board, checked, current, filter_options,
                                      reader_lang, render, row_id, scope_of, scoped_site)
from server.dashboard.i18n import t
from server.store import Filters

router = APIRouter(include_in_schema=False)
#: A before/after mark: from the contract's earliest valid rating date to a year ahead.
FIRST_MARK_DAY, MARK_DAYS_AHEAD = date(2020, 1, 1), 366
MAX_DAYS = 365


def days_param(text: str) -> int:
    if not (text.isascii() and text.isdigit() and len(text) <= 3 and 1 <= int(text) <= MAX_DAYS):
        raise PageError(400, "bad_days", most=MAX_DAYS)
    return int(text)


def side(store, filters: Filters) -> dict:
    """One side of a comparison: the days it covers, the days that hold data, and its n."""
    held = sorted(key[0] for key, dist in store.aggregates(("day",), filters) if sum(dist.values()))
    return {"from": filters.date_from.isoformat(), "to": filters.date_to.isoformat(),
            "data_from": held[0] if held else None, "data_to": held[-1] if held else None}


@router.get("/compare")
def compare_page(request: Request, session: Session = Depends(current)) -> HTMLResponse:
    dash = board(request)
    config = dash.config
    lang = reader_lang(request)
    scope = scope_of(request, session, with_terminal=False)
    store = dash.store()
    days = days_param(request.query_params.get("days") or "28")
    mark_text = request.query_params.get("mark")
    chosen = row_id(mark_text) if mark_text else None
    marks = [m for m in store.marks(scope.filters.sites)
             if scope.site is None or m["site"] in (None, scope.site)]
    today = dash.today()
    result = None
    mark = next((m for m in marks if m["pk"] == chosen), None)
    if mark is not None:
        try:
            pivot = date.fromisoformat(str(mark["day"]))
        except ValueError:
            pivot = None
        if pivot is None or not FIRST_DAY + timedelta(days=366) <= pivot <= LAST_DAY - timedelta(days=366):
            # A mark stored before marks were bounded: said, not computed with.
            result = {"mark": mark, "out_of_range": True}
        else:
            suspect = SUSPECT_CHOICES[scope.suspect]
            before = Filters(pivot - timedelta(days=days), pivot - timedelta(days=1), site=mark["site"],
                             sites=scope.filters.sites, suspect=suspect)
            after = Filters(pivot, min(pivot + timedelta(days=days - 1), today), site=mark["site"],
                            sites=scope.filters.sites, suspect=suspect)
            c = compare(store.summary(before), store.summary(after))
            result = {"mark": mark, "out_of_range": False, "c": c, "statement": c.statement(lang),
                      "before": {**side(store, before), "n": c.before.count},
                      "after": {**side(store, after), "n": c.after.count},
                      "rows": [(t("index", lang), c.index), ("CSAT %", c.csat)]}
    rows = [{**m, "site_name": config.site_name(m["site"]) if m["site"] else t("all_sites", lang)} for m in marks]
    return render(request, "compare.html", session=session, title=t("compare", lang), active="compare",
                  scope=scope, options=filter_options(dash, session, lang), caption=scope.caption(dash, lang),
                  marks=rows, days=days, chosen=chosen, result=result, today=today,
                  may_mark_all=session.sites is None,
                  mark_query=lambda pk: scope.query(mark=pk, days=days, **{"from": "", "to": ""}))


@router.post("/marks")
def add_mark(request: Request, session: Session = Depends(checked), day: str = Form(""), note: str = Form(""),
             site: str = Form("")) -> Response:
    dash = board(request)
    try:
        when = date.fromisoformat(day)
    except ValueError:
        raise PageError(400, "bad_date", name="day") from None
    latest = dash.today() + timedelta(days=MARK_DAYS_AHEAD)
    if not FIRST_MARK_DAY <= when <= latest:
        raise PageError(400, "mark_day_out_of_range", first=FIRST_MARK_DAY, last=latest)
    note = note.strip()[:200]
    if not note:
        raise PageError(400, "mark_needs_note")
    chosen = scoped_site(session, site or None)
    if chosen is None and session.sites is not None:
        raise PageError(403, "mark_needs_site")
    pk = dash.store().add_mark(chosen, when, note, session.user, dash.now())
    return RedirectResponse(f"/compare?mark={pk}", status_code=303)


@router.post("/marks/{pk}/delete")
def delete_mark(request: Request, pk: str, session: Session = Depends(checked)) -> Response:
    number = row_id(pk)
    store = board(request).store()
    mark = next((m for m in store.marks(session.sites) if m["pk"] == number), None)
    if mark is None or (mark["site"] is None and session.sites is not None):
        raise PageError(404, "no_such_mark")
    store.delete_mark(number)
    return RedirectResponse("/compare", status_code=303)
