"""The alerts page: open and past alerts in the reader's language, acknowledged by staff."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from server.dashboard.context import (PageError, Session, board, checked, current, filter_options, reader_lang,
                                      render, row_id, scope_of, short_time)
from server.dashboard.i18n import alert_kind, alert_text, t

router = APIRouter(include_in_schema=False)


@router.get("/alerts")
def alerts_page(request: Request, session: Session = Depends(current)) -> HTMLResponse:
    dash = board(request)
    config, tz = dash.config, dash.config.tz
    lang = reader_lang(request)
    scope = scope_of(request, session, with_terminal=False, default_days=1)
    allowed = scope.filters.sites
    open_rows, past_rows = [], []
    for a in dash.store().alerts(session.sites):
        if (allowed is not None and a["site"] not in allowed) or (scope.site and a["site"] != scope.site):
            continue
        row = {**a, "raised": short_time(a["raised_at"], tz), "cleared": short_time(a["cleared_at"], tz),
               "site_name": config.site_name(a["site"]),
               "terminal_name": config.terminal_name(a["site"], a["terminal"]) if a["terminal"] else "",
               "kind_label": alert_kind(a["kind"], lang),
               "text": alert_text(a["kind"], a["message"], lang)}
        (open_rows if a["cleared_at"] is None else past_rows).append(row)
    return render(request, "alerts.html", session=session, title=t("alerts", lang), active="alerts",
                  scope=scope, options=filter_options(dash, session, lang), open_rows=open_rows,
                  past_rows=past_rows)


@router.post("/alerts/{pk}/ack")
def ack(request: Request, pk: str, session: Session = Depends(checked)) -> Response:
    dash = board(request)
    number = row_id(pk)
    store = dash.store()
    if not store.ack_alert(number, session.user, dash.now(), session.sites):
        raise PageError(404, "no_such_alert")
    # An event (suspect burst) ends when someone has looked at it.
    row = next((a for a in store.alerts(session.sites) if a["pk"] == number), None)
    if row is not None and row["kind"] == "suspect":
        store.clear_alert(number, dash.now())
    return RedirectResponse("/alerts", status_code=303)
