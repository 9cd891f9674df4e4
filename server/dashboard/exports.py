"""The exports page: ratings as CSV and XLSX, and the monthly report form, under the page's scope."""

from __future__ import annotations

import io

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from server.dashboard.context import (Session, board, current, filter_options, reader_lang, render, scope_of)
from server.dashboard.i18n import t
from server.export import stream_ratings_csv, write_ratings_xlsx
from server.report import last_complete_month

router = APIRouter(include_in_schema=False)
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def export_name(scope, extension: str) -> str:
    """The file name says what it holds: period, place, counter and the suspect choice."""
    parts = ["onetap-ratings", scope.first.isoformat(), scope.last.isoformat()]
    parts += [p for p in (scope.group, scope.site, scope.terminal) if p]
    parts.append(f"suspect-{scope.suspect}")
    return "-".join(parts) + "." + extension


@router.get("/exports")
def exports_page(request: Request, session: Session = Depends(current)) -> HTMLResponse:
    dash = board(request)
    lang = reader_lang(request)
    scope = scope_of(request, session)
    month = last_complete_month(dash.today()).strftime("%Y-%m")
    return render(request, "exports.html", session=session, title=t("exports", lang), active="exports",
                  scope=scope, options=filter_options(dash, session, lang), month=month,
                  caption=scope.caption(dash, lang))


@router.get("/export/ratings.csv")
def export_csv(request: Request, session: Session = Depends(current)) -> StreamingResponse:
    dash = board(request)
    scope = scope_of(request, session, default_days=1)
    chunks, _ = stream_ratings_csv(dash.store_factory, scope.filters)
    return StreamingResponse(chunks, media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="{export_name(scope, "csv")}"',
                                      "Cache-Control": "no-store"})


@router.get("/export/ratings.xlsx")
def export_xlsx(request: Request, session: Session = Depends(current)) -> Response:
    dash = board(request)
    config = dash.config
    scope = scope_of(request, session, default_days=1)
    buffer = io.BytesIO()
    write_ratings_xlsx(buffer, dash.store(), scope.filters, generated_at=dash.now().astimezone(config.tz),
                       lang=reader_lang(request),
                       site_names={site: config.site_name(site) for site in config.sites},
                       terminal_names={(site, terminal): name for site, site_config in config.sites.items()
                                       for terminal, name in site_config.terminals.items()},
                       reasons=config.reasons_for_site(scope.site) if scope.site else config.reasons)
    return Response(buffer.getvalue(), media_type=XLSX_TYPE,
                    headers={"Content-Disposition": f'attachment; filename="{export_name(scope, "xlsx")}"',
                             "Cache-Control": "no-store"})
