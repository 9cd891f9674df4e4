"""The monthly report page and its PDF, for a site, a group or one counter, in the reader's language."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from server.bounds import FIRST_DAY, LAST_DAY
from server.dashboard.context import (LANG_COOKIE, SECURITY_HEADERS, PageError, Session, board, current,
                                      reader_lang, scope_of, secure)
from server.dashboard.i18n import LANGS, t
from server.document import render_html, render_pdf
from server.export import month_range
from server.report import Report, last_complete_month, report_for

router = APIRouter(include_in_schema=False)


def report_model(request: Request, session: Session) -> Report:
    dash = board(request)
    lang = reader_lang(request)
    scope = scope_of(request, session, choices=("exclude", "include"))
    if scope.site is None and scope.group is None:
        raise PageError(400, "report_needs_site")
    try:
        first, _ = month_range(request.query_params.get("month") or last_complete_month(dash.today()).strftime("%Y-%m"))
    except ValueError:
        raise PageError(400, "bad_month") from None
    if not FIRST_DAY <= first <= LAST_DAY:
        raise PageError(400, "month_out_of_range", first=f"{FIRST_DAY:%Y-%m}", last=f"{LAST_DAY:%Y-%m}")
    return report_for(dash.config, dash.store(), scope.site, first, lang=lang, now=dash.now(),
                      sites=scope.filters.sites, exclude_suspect=scope.suspect == "exclude",
                      group=None if scope.site else scope.group, terminal=scope.terminal)


@router.get("/report")
def report(request: Request, session: Session = Depends(current)) -> HTMLResponse:
    model = report_model(request, session)
    query = dict(request.query_params)
    query["lang"] = "en" if model.lang == "ko" else "ko"
    pdf_query = {k: v for k, v in request.query_params.items() if k != "lang"}
    pdf_query["lang"] = model.lang
    html = render_html(model, script_href="/static/report.js", toolbar={
        "back": t("exports", model.lang), "print": t("print", model.lang),
        "lang_href": "?" + urlencode(query), "lang_label": "English" if model.lang == "ko" else "한국어",
        "pdf_href": "/report.pdf?" + urlencode(pdf_query)})
    response = HTMLResponse(html, headers=SECURITY_HEADERS)
    if request.query_params.get("lang") in LANGS:
        response.set_cookie(LANG_COOKIE, model.lang, max_age=365 * 86400, samesite="lax", secure=secure(request))
    return response


@router.get("/report.pdf")
def report_pdf(request: Request, session: Session = Depends(current)) -> Response:
    model = report_model(request, session)
    name = f"onetap-report-{model.site}-{model.first.strftime('%Y-%m')}-{model.lang}.pdf"
    return Response(render_pdf(model), media_type="application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"})
