"""The home page: the terminals board and today's figures, refreshed live."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from server import audit
from server.aggregate import summarize
from server.alerts import is_open, terminal_state
from server.dashboard import charts
from server.dashboard.context import (SECURITY_HEADERS, Dashboard, Session, board, current, filter_options,
                                      reader_lang, render, scope_of, short_time)
from server.dashboard.i18n import t
from server.store import Filters

router = APIRouter(include_in_schema=False)


def live_context(request: Request, dash: Dashboard, session: Session) -> dict:
    """The board and today's figures, for the page and for its 5-second refresh."""
    config, tz, rules = dash.config, dash.config.tz, dash.config.alerts
    scope = scope_of(request, session, default_days=1, with_terminal=False)
    today = dash.today()
    moment = dash.now()
    open_now = is_open(moment.astimezone(tz), rules.hours)
    store = dash.store()
    taps = store.last_taps(scope.filters.sites)
    chains = {(c["site"], c["terminal"]): audit.public_view(c) for c in store.chain_states()}
    lang = reader_lang(request)
    rows = []
    for term in store.terminals(site=scope.site, sites=scope.filters.sites):
        state = terminal_state(moment, term, rules.status_interval_s)
        site, terminal = term["site"], term["terminal"]
        # The last tap ingest stored; the kiosk's own word (Status) only where the
        # stored ratings are gone (retention) or not yet received.
        tapped = taps.get((site, terminal)) or term.get("last_tap_at")
        chain = chains.get((site, terminal)) or audit.public_view(None)
        chain_text = t(f"chain_{chain['chain_status']}", lang).format(seq=chain["chain_broken_seq"])
        if chain["missing_ranges"]:
            chain_text += " · " + t("chain_missing", lang).format(ranges=", ".join(
                str(a) if a == b else f"{a}–{b}" for a, b in chain["missing_ranges"][:5]))
        rows.append({"site": config.site_name(site), "terminal": config.terminal_name(site, terminal),
                     "site_id": site, "terminal_id": terminal, "state": state,
                     "alarm": state in ("offline", "stale") and open_now,
                     "last_tap": short_time(tapped, tz), "backlog": term.get("backlog"),
                     "oldest_pending": short_time(term.get("oldest_pending_at"), tz),
                     "clock": term.get("clock_synced"), "version": term.get("version"),
                     "config_version": term.get("config_version"),
                     "last_status": short_time(term.get("updated_at"), tz),
                     "chain": chain_text, "chain_status": chain["chain_status"]})
    filters = Filters(today, today, site=scope.site, sites=scope.filters.sites, suspect=scope.filters.suspect)
    counters = []
    for (site, terminal), dist in store.aggregates(("site", "terminal"), filters):
        s = summarize(dist)
        counters.append({"site": config.site_name(site), "terminal": config.terminal_name(site, terminal),
                         "summary": s, "bar": charts.distribution_bar(s.distribution)})
    suspect = sum(store.summary(Filters(today, today, site=scope.site, sites=scope.filters.sites,
                                        suspect=True)).values())
    return {"rows": rows, "today": today, "total": summarize(store.summary(filters)), "suspect": suspect,
            "counters": counters, "stamp": moment.astimezone(tz).strftime("%H:%M:%S"),
            "caption": scope.caption(dash, reader_lang(request)), "scope": scope,
            "may_retire": session.sites is None}


@router.get("/")
def home(request: Request, session: Session = Depends(current)) -> HTMLResponse:
    dash = board(request)
    lang = reader_lang(request)
    context = live_context(request, dash, session)
    return render(request, "home.html", session=session, title=t("home", lang), active="home",
                  options=filter_options(dash, session, lang), **context)


@router.get("/live")
def live(request: Request, session: Session = Depends(current)) -> HTMLResponse:
    dash = board(request)
    response = render(request, "live.html", session=session, title="", **live_context(request, dash, session))
    response.headers.update(SECURITY_HEADERS)
    return response
