"""The trends page: daily index and CSAT with marks, hour × weekday heat map, reasons, age groups, sites."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from server.aggregate import summarize
from server.dashboard import charts
from server.dashboard.context import (PageError, Session, board, current, filter_options, reader_lang, render,
                                      scope_of)
from server.dashboard.i18n import t
from server.labels import Labels, in_order

router = APIRouter(include_in_schema=False)
CELL_METRICS = ("index", "count")


@router.get("/trends")
def trends(request: Request, session: Session = Depends(current)) -> HTMLResponse:
    dash = board(request)
    config = dash.config
    lang = reader_lang(request)
    scope = scope_of(request, session)
    cell = request.query_params.get("cell") or "index"
    if cell not in CELL_METRICS:
        raise PageError(400, "bad_cell")
    filters = scope.filters
    store = dash.store()
    by_day = {k[0]: summarize(d) for k, d in store.aggregates(("day",), filters)}
    days = [(scope.first + timedelta(days=i)).isoformat() for i in range((scope.last - scope.first).days + 1)]
    marks = [(m["day"], m["note"]) for m in store.marks(filters.sites)
             if scope.site is None or m["site"] in (None, scope.site)]
    words = {k: t(k, lang) for k in ("trend", "index", "count", "heatmap", "bars", "none", "no_data", "target")}
    target = config.target(scope.site, scope.group)
    trend = charts.trend_chart(days, [by_day[d].index if d in by_day else None for d in days],
                               [by_day[d].csat if d in by_day else None for d in days],
                               [by_day[d].count if d in by_day else 0 for d in days], marks, labels=words,
                               target=target)
    cells = {}
    for (hour, weekday), dist in store.aggregates(("hour", "weekday"), filters):
        s = summarize(dist)
        cells[int(hour), int(weekday)] = (s.count, s.index)
    labels = Labels(lang, (config.survey or {}).get("reason_labels"))
    heat = charts.heatmap(cells, [labels.weekday(i) for i in range(7)], labels=words, metric=cell,
                          hour_label=labels.hour)
    legend = charts.heat_legend(words={"index": t("index", lang), "no_data": t("no_data", lang)})
    reasons = config.reasons_for_site(scope.site) if scope.site else config.reasons

    def bar_items(field: str) -> list[tuple[str, int, float | None]]:
        sums = {k[0]: summarize(d) for k, d in store.aggregates((field,), filters)}
        return [(labels.code(field, code), sums[code].count, sums[code].index)
                for code in in_order(field, sums, reasons)]

    per_site = []
    if scope.site is None and (filters.sites is None or len(filters.sites) > 1):
        per_site = [(config.site_name(site), s.count, s.index) for site, s in
                    ((k[0], summarize(d)) for k, d in store.aggregates(("site",), filters))]
    return render(request, "trends.html", session=session, title=t("trends", lang), active="trends",
                  scope=scope, options=filter_options(dash, session, lang), caption=scope.caption(dash, lang),
                  total=summarize(store.summary(filters)), trend=trend, heat=heat, legend=legend, cell=cell,
                  cell_links=[(m, "?" + scope.query(cell=m), t(f"cell_{m}", lang)) for m in CELL_METRICS],
                  reasons=charts.bars(bar_items("reason"), labels=words),
                  ages=charts.bars(bar_items("age_group"), labels=words),
                  per_site=charts.bars(per_site, labels=words) if per_site else None,
                  target=target)
