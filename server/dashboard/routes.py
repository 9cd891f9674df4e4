"""The staff dashboard: login, terminals board, live today, trends, before/after, alerts, exports, monthly report."""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from html import escape
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from kiosk.protocol import AGE_GROUPS, is_identifier
from server.aggregate import summarize
from server.alerts import is_open, terminal_state
from server.auth import (SESSION_COOKIE, HashSlots, LoginThrottle, authenticate, credential_fingerprint,
                         csrf_ok, new_session, new_token, session_cookie, session_cookie_ok, session_token,
                         token_hash)
from server.api import FIRST_DAY, LAST_DAY
from server.compare import compare
from server.config import ServerConfig
from server.dashboard import charts
from server.dashboard.i18n import LANGS, code_label, t
from server.document import render_html, render_pdf
from server.export import month_range, stream_ratings_csv, write_ratings_xlsx
from server.report import last_complete_month, report_for
from server.store import Filters, Store

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
LANG_COOKIE = "onetap_lang"
LOGIN_CSRF_COOKIE = "onetap_login_csrf"
SUSPECT_CHOICES = {"exclude": False, "include": None, "only": True}
MAX_RANGE_DAYS = 3660
#: A before/after mark: from the contract's earliest valid rating date to a year ahead.
FIRST_MARK_DAY, MARK_DAYS_AHEAD = date(2020, 1, 1), 366
#: Database row ids are signed 64-bit integers.
MAX_ROW_ID = 2 ** 63 - 1
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self';"
                               " script-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _row_id(text: str) -> int:
    """A row id from a URL, or 404: anything else cannot name a row."""
    if not (text.isascii() and text.isdigit() and len(text) <= 19 and 0 < int(text) <= MAX_ROW_ID):
        raise HTTPException(404, "no such item")
    return int(text)


def _day(name: str, text: str) -> date:
    """A date between FIRST_DAY and LAST_DAY, or 400 saying so."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise HTTPException(400, f"{name} must be a date YYYY-MM-DD") from None
    if not FIRST_DAY <= day <= LAST_DAY:
        raise HTTPException(400, f"{name} must be between {FIRST_DAY} and {LAST_DAY}")
    return day


class LoginRequired(Exception):
    """No valid session: the browser goes to the login page."""


@dataclass(frozen=True)
class Session:
    user: str
    sites: frozenset[str] | None
    csrf: str
    token_hash: str

    def allows(self, site: str) -> bool:
        return self.sites is None or site in self.sites


def _secure(request: Request) -> bool:
    # uvicorn turns X-Forwarded-Proto into the scheme, but only from
    # forwarded_allow_ips (the reverse proxy): anyone else could send the header.
    return request.url.scheme == "https"


def _lang(request: Request) -> str:
    lang = request.query_params.get("lang") or request.cookies.get(LANG_COOKIE) or "ko"
    return lang if lang in LANGS else "ko"


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return escape(str(value))


def _short_time(text: str | None, tz) -> str:
    if not text:
        return "–"
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(tz)
    except ValueError:
        return escape(text)
    return moment.strftime("%m-%d %H:%M:%S")


def install(app: FastAPI, config: ServerConfig, store: Callable[[], Store],
            store_factory: Callable[[], Store], now: Callable[[], datetime]) -> None:
    """Mount the dashboard at / on *app* (HTML routes are left out of the OpenAPI schema)."""
    tz = config.tz
    rules = config.alerts
    router = APIRouter(include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.exception_handler(LoginRequired)
    async def to_login(request: Request, exc: LoginRequired) -> Response:
        return RedirectResponse("/login", status_code=303)

    limits = config.http
    throttle = LoginThrottle(free=limits.login_free_failures, ip_free=limits.login_ip_free_failures,
                             delay_s=limits.login_delay_s,
                             user_lockout=limits.login_user_lockout_failures,
                             ip_lockout=limits.login_ip_lockout_failures, lockout_s=limits.login_lockout_s)
    hash_slots = HashSlots(limits.max_concurrent_hashes, limits.hash_wait_s)

    def fingerprint(name: str) -> str | None:
        user = config.users.get(name)
        return None if user is None else credential_fingerprint(user.password_hash, user.sites)

    def current(request: Request) -> Session:
        cookie = request.cookies.get(SESSION_COOKIE)
        if not cookie or not session_token(cookie):
            raise LoginRequired()
        digest = token_hash(session_token(cookie))
        row = store().get_session(digest)
        if row is None or datetime.fromisoformat(row["expires_at"]) < now():
            raise LoginRequired()
        granted = fingerprint(row["user"])
        if granted is None or not session_cookie_ok(cookie, granted):
            # Removed from the config, or a new password or scope since this login.
            store().delete_session(digest)
            raise LoginRequired()
        return Session(row["user"], config.users[row["user"]].sites, row["csrf"], digest)

    async def form(request: Request) -> dict[str, str]:
        body = (await request.body()).decode("utf-8", "replace")
        return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}

    def checked_form(session: Session = Depends(current), data: dict = Depends(form)) -> dict[str, str]:
        if not csrf_ok(session.csrf, data.get("csrf")):
            raise HTTPException(403, "invalid or missing CSRF token")
        return data

    def page(request: Request, session: Session | None, title: str, body: str, active: str = "",
             status: int = 200, extra_head: str = "", body_class: str = "") -> HTMLResponse:
        lang = _lang(request)
        nav = ""
        if session is not None:
            items = [("home", "/"), ("trends", "/trends"), ("compare", "/compare"),
                     ("alerts", "/alerts"), ("exports", "/exports")]
            links = "".join(f'<a href="{href}"{" class=active" if key == active else ""}>{t(key, lang)}</a>'
                            for key, href in items)
            scope = t("all_sites", lang) if session.sites is None else ", ".join(sorted(session.sites))
            nav = (f'<nav><span class="brand">{t("title", lang)}</span>{links}'
                   f'<span class="spacer"></span><span class="who">{escape(session.user)} · {escape(scope)}</span>'
                   f'<form method="post" action="/logout" class="inline"><input type="hidden" name="csrf" '
                   f'value="{escape(session.csrf)}"><button type="submit" id="logout">{t("logout", lang)}</button></form>'
                   f'</nav>')
        other = "en" if lang == "ko" else "ko"
        query = dict(request.query_params)
        query["lang"] = other
        switch = f'<a class="lang" href="?{escape(urlencode(query))}">{"English" if other == "en" else "한국어"}</a>'
        html = (f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8">'
                f'<meta name="viewport" content="width=device-width, initial-scale=1">'
                f'<title>{escape(title)} · onetap</title><link rel="stylesheet" href="/static/style.css">'
                f'{extra_head}</head><body class="{body_class}">{nav}<main><div class="top"><h1>{escape(title)}</h1>'
                f'{switch}</div>{body}</main></body></html>')
        response = HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)
        if request.query_params.get("lang") in LANGS:
            response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, samesite="lax",
                                secure=_secure(request))
        return response

    def scoped_site(session: Session, site: str | None) -> str | None:
        if not site:
            return None
        if not is_identifier(site):
            raise HTTPException(400, "site is not a site identifier")
        if not session.allows(site):
            raise HTTPException(403, "you may not see this site")
        return site

    def date_range(request: Request, default_days: int) -> tuple[date, date]:
        today = now().astimezone(tz).date()
        first = _day("from", request.query_params.get("from") or
                     (today - timedelta(days=default_days - 1)).isoformat())
        last = _day("to", request.query_params.get("to") or today.isoformat())
        if first > last or (last - first).days > MAX_RANGE_DAYS:
            raise HTTPException(400, "from must not be after to, nor ten years before it")
        return first, last

    def suspect_choice(request: Request) -> tuple[str, bool | None]:
        choice = request.query_params.get("suspect", "exclude")
        if choice not in SUSPECT_CHOICES:
            raise HTTPException(400, "suspect must be exclude, include or only")
        return choice, SUSPECT_CHOICES[choice]

    def site_select(session: Session, selected: str | None, lang: str, allow_all: bool = True) -> str:
        sites = sorted(session.sites) if session.sites is not None else sorted(
            {row["site"] for row in store().terminals()} | set(config.sites))
        options = [f'<option value="">{t("all_sites", lang)}</option>'] if allow_all else []
        for site in sites:
            options.append(f'<option value="{escape(site)}"{" selected" if site == selected else ""}>'
                           f'{escape(site)}</option>')
        return f'<select name="site" id="site">{"".join(options)}</select>'

    # -- login ----------------------------------------------------------------

    @router.get("/login")
    def login_page(request: Request, error: str = "") -> HTMLResponse:
        lang = _lang(request)
        token = new_token()
        message = f'<p class="error">{t("bad_login", lang)}</p>' if error else ""
        body = (f'<form method="post" action="/login" class="login">{message}'
                f'<input type="hidden" name="csrf" value="{token}">'
                f'<label>{t("username", lang)}<input name="username" id="username" autocomplete="username" required></label>'
                f'<label>{t("password", lang)}<input name="password" id="password" type="password" '
                f'autocomplete="current-password" required></label>'
                f'<button type="submit" id="login">{t("login", lang)}</button></form>')
        response = page(request, None, t("login", lang), body, body_class="login-page")
        # Login CSRF: the form's token must match this cookie (double submit).
        response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict",
                            secure=_secure(request), path="/login")
        return response

    def refuse_login(request: Request, status: int, wait: float, message: str) -> Response:
        lang = _lang(request)
        seconds = max(1, math.ceil(wait))
        body = f'<p class="error" id="login-refused">{escape(t(message, lang).format(seconds=seconds))}</p>'
        response = page(request, None, t("login", lang), body, status=status, body_class="login-page")
        response.headers["Retry-After"] = str(seconds)
        return response

    @router.post("/login")
    def login(request: Request, data: dict = Depends(form)) -> Response:
        if not csrf_ok(request.cookies.get(LOGIN_CSRF_COOKIE, ""), data.get("csrf")):
            raise HTTPException(403, "invalid or missing CSRF token; reload the login page")
        name = data.get("username", "")
        # uvicorn puts X-Forwarded-For's client here, believed only from forwarded_allow_ips.
        address = request.client.host if request.client else "?"
        wait = throttle.wait(name, address, now().timestamp())
        if wait > 0:
            # Locked or delayed: answered without hashing, so guessing costs the server nothing.
            log.warning("dashboard login for %r from %s refused for %.0f s (failed logins)", name, address, wait)
            return refuse_login(request, 429, wait, "login_locked")
        if not hash_slots.acquire():
            return refuse_login(request, 503, limits.hash_wait_s, "login_busy")
        try:
            accepted = authenticate(config.users, name, data.get("password", ""))
        finally:
            hash_slots.release()
        if not accepted:
            throttle.failed(name, address, now().timestamp())
            log.warning("failed dashboard login for %r from %s", name, address)
            return RedirectResponse("/login?error=1", status_code=303)
        throttle.succeeded(name, address)
        session = new_session(now())
        store().add_session(session.token_hash, name, session.csrf, now(), session.expires)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(SESSION_COOKIE, session_cookie(session.token, fingerprint(name)), httponly=True,
                            samesite="lax",
                            secure=_secure(request), max_age=int((session.expires - now()).total_seconds()))
        response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
        log.info("dashboard login: %s", name)
        return response

    @router.post("/logout")
    def logout(session: Session = Depends(current), data: dict = Depends(checked_form)) -> Response:
        store().delete_session(session.token_hash)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    # -- now: terminals and today -------------------------------------------------

    def live_html(session: Session, lang: str) -> str:
        no_data = t("no_data", lang)
        closed = f' <strong>{t("closed_alarm", lang)}</strong>'
        moment = now()
        open_now = is_open(moment.astimezone(tz), rules.hours)
        rows = []
        for term in store().terminals(sites=session.sites):
            state = terminal_state(moment, term, rules.status_interval_s)
            alarm = state in ("offline", "stale") and open_now
            clock = term.get("clock_synced")
            rows.append(
                f'<tr class="state-{state}{" alarm" if alarm else ""}">'
                f'<td>{escape(term["site"])}</td><td>{escape(term["terminal"])}</td>'
                f'<td><span class="badge {state}">{t(state, lang)}</span>'
                f'{closed if alarm else ""}</td>'
                f'<td>{_short_time(term.get("last_tap_at"), tz)}</td><td class="num">{_fmt(term.get("backlog"))}</td>'
                f'<td>{_short_time(term.get("oldest_pending_at"), tz)}</td>'
                f'<td>{"–" if clock is None else t("yes" if clock else "no", lang)}</td>'
                f'<td>{_fmt(term.get("version"))}</td><td>{_fmt(term.get("config_version"))}</td>'
                f'<td>{_short_time(term.get("updated_at"), tz)}</td></tr>')
        board = (f'<table class="board" id="terminals"><thead><tr><th>{t("site", lang)}</th><th>{t("terminal", lang)}</th>'
                 f'<th>{t("state", lang)}</th><th>{t("last_tap", lang)}</th><th>{t("backlog", lang)}</th>'
                 f'<th>{t("oldest_pending", lang)}</th><th>{t("clock", lang)}</th><th>{t("version", lang)}</th>'
                 f'<th>{t("config_version", lang)}</th><th>{t("last_status", lang)}</th></tr></thead>'
                 f'<tbody>{"".join(rows) or f"<tr><td colspan=10>{no_data}</td></tr>"}</tbody></table>')
        today = moment.astimezone(tz).date()
        filters = Filters(today, today, sites=session.sites, suspect=False)
        total = summarize(store().summary(filters))
        suspect = sum(store().summary(Filters(today, today, sites=session.sites, suspect=True)).values())
        counters = []
        for (site, terminal), dist in store().aggregates(("site", "terminal"), filters):
            s = summarize(dist)
            counters.append(f'<tr><td>{escape(site)}</td><td>{escape(terminal)}</td><td class="num">{s.count}</td>'
                            f'<td class="num">{_fmt(s.csat)}</td><td class="num">{_fmt(s.index)}</td>'
                            f'<td>{charts.distribution_bar(s.distribution)}</td></tr>')
        tiles = (f'<div class="tiles"><div class="tile"><span>{t("count", lang)}</span><b id="today-count">{total.count}</b></div>'
                 f'<div class="tile"><span>CSAT %</span><b>{_fmt(total.csat)}</b></div>'
                 f'<div class="tile"><span>{t("index", lang)}</span><b>{_fmt(total.index)}</b></div>'
                 f'<div class="tile muted"><span>{t("suspect", lang)}</span><b>{suspect}</b></div></div>')
        per_counter = (f'<table class="today"><thead><tr><th>{t("site", lang)}</th><th>{t("terminal", lang)}</th>'
                       f'<th>{t("count", lang)}</th><th>CSAT %</th><th>{t("index", lang)}</th>'
                       f'<th>{t("distribution", lang)} 1→5</th></tr></thead><tbody>'
                       f'{"".join(counters) or f"<tr><td colspan=6>{no_data}</td></tr>"}</tbody></table>')
        stamp = moment.astimezone(tz).strftime("%H:%M:%S")
        return (f'<section><h2>{t("terminals", lang)}</h2>{board}</section>'
                f'<section><h2>{t("today", lang)} {today.isoformat()}</h2>{tiles}{per_counter}'
                f'<p class="muted">{t("updated", lang)} <span id="updated">{stamp}</span></p></section>')

    @router.get("/")
    def home(request: Request, session: Session = Depends(current)) -> HTMLResponse:
        lang = _lang(request)
        body = f'<div id="live" data-src="/live">{live_html(session, lang)}</div>'
        return page(request, session, t("home", lang), body, "home",
                    extra_head='<script src="/static/live.js" defer></script>')

    @router.get("/live")
    def live(request: Request, session: Session = Depends(current)) -> HTMLResponse:
        return HTMLResponse(live_html(session, _lang(request)), headers=SECURITY_HEADERS)

    # -- trends ---------------------------------------------------------------

    def range_form(request: Request, session: Session, lang: str, first: date, last: date,
                   site: str | None, choice: str, action: str) -> str:
        options = "".join(f'<option value="{k}"{" selected" if k == choice else ""}>'
                          f'{escape(code_label(k, lang))}</option>' for k in SUSPECT_CHOICES)
        return (f'<form method="get" action="{action}" class="filters">'
                f'<label>{t("from", lang)}<input type="date" name="from" value="{first}"></label>'
                f'<label>{t("to", lang)}<input type="date" name="to" value="{last}"></label>'
                f'<label>{t("site", lang)}{site_select(session, site, lang)}</label>'
                f'<label>{t("suspect", lang)}<select name="suspect">{options}</select></label>'
                f'<button type="submit">{t("show", lang)}</button></form>')

    @router.get("/trends")
    def trends(request: Request, session: Session = Depends(current)) -> HTMLResponse:
        lang = _lang(request)
        first, last = date_range(request, 30)
        site = scoped_site(session, request.query_params.get("site"))
        choice, suspect = suspect_choice(request)
        filters = Filters(first, last, site=site, sites=session.sites, suspect=suspect)
        s = store()
        by_day = {k[0]: summarize(d) for k, d in s.aggregates(("day",), filters)}
        days = [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
        marks = [(m["day"], m["note"]) for m in s.marks(session.sites)
                 if site is None or m["site"] in (None, site)]
        labels = {k: t(k, lang) for k in ("trend", "index", "count", "heatmap", "bars", "none")}
        trend = charts.trend_chart(days, [by_day[d].index if d in by_day else None for d in days],
                                   [by_day[d].csat if d in by_day else None for d in days],
                                   [by_day[d].count if d in by_day else 0 for d in days], marks, labels=labels)
        cells = {(k[0], k[1]): (summarize(d).count, summarize(d).index)
                 for k, d in s.aggregates(("hour", "weekday"), filters)}
        heat = charts.heatmap(cells, t("weekdays", lang).split(","), labels=labels)

        def bar_items(key: str) -> list[tuple[str, int, float | None]]:
            out = []
            for k, d in s.aggregates((key,), filters):
                if k[0] is None:
                    continue
                summary = summarize(d)
                out.append((str(k[0]), summary.count, summary.index))
            if key == "age_group":
                out.sort(key=lambda item: AGE_GROUPS.index(item[0]) if item[0] in AGE_GROUPS else 99)
            if key not in ("reason", "age_group"):
                return out
            return [(code_label(code, lang), count, index) for code, count, index in out]

        total = summarize(s.summary(filters))
        body = [range_form(request, session, lang, first, last, site, choice, "/trends"),
                f'<div class="tiles"><div class="tile"><span>{t("count", lang)}</span><b>{total.count}</b></div>'
                f'<div class="tile"><span>CSAT %</span><b>{_fmt(total.csat)}</b></div>'
                f'<div class="tile"><span>{t("index", lang)}</span><b>{_fmt(total.index)}</b></div></div>',
                f'<section><h2>{t("daily", lang)}</h2>{trend}</section>',
                f'<div class="two"><section><h2>{t("heatmap", lang)}</h2>{heat}</section>'
                f'<section><h2>{t("reasons", lang)}</h2>{charts.bars(bar_items("reason"), labels=labels)}'
                f'<h2>{t("age_groups", lang)}</h2>{charts.bars(bar_items("age_group"), labels=labels)}</section></div>']
        if site is None and (session.sites is None or len(session.sites) > 1):
            body.append(f'<section><h2>{t("per_site", lang)}</h2>{charts.bars(bar_items("site"), labels=labels)}</section>')
        return page(request, session, t("trends", lang), "".join(body), "trends")

    # -- before / after -----------------------------------------------------------

    @router.get("/compare")
    def compare_page(request: Request, session: Session = Depends(current)) -> HTMLResponse:
        lang = _lang(request)
        s = store()
        marks = s.marks(session.sites)
        text = request.query_params.get("days", "28")
        if not (text.isascii() and text.isdigit() and len(text) <= 3 and 1 <= int(text) <= 365):
            raise HTTPException(400, "days must be a whole number of days from 1 to 365")
        days = int(text)
        mark_text = request.query_params.get("mark")
        chosen = _row_id(mark_text) if mark_text else None
        rows = []
        for m in marks:
            rows.append(f'<tr><td>{escape(m["day"])}</td><td>{escape(m["site"] or "*")}</td><td>{escape(m["note"])}</td>'
                        f'<td>{escape(m["created_by"])}</td>'
                        f'<td><a href="/compare?mark={m["pk"]}&amp;days={days}" class="button compare-link">{t("compare_at", lang)}</a></td>'
                        f'<td><form method="post" action="/marks/{m["pk"]}/delete" class="inline">'
                        f'<input type="hidden" name="csrf" value="{escape(session.csrf)}">'
                        f'<button type="submit">{t("delete", lang)}</button></form></td></tr>')
        table = (f'<table><thead><tr><th>{t("day", lang)}</th><th>{t("site", lang)}</th><th>{t("note", lang)}</th>'
                 f'<th></th><th></th><th></th></tr></thead><tbody>{"".join(rows)}</tbody></table>')
        today = now().astimezone(tz).date()
        add = (f'<form method="post" action="/marks" class="filters"><input type="hidden" name="csrf" value="{escape(session.csrf)}">'
               f'<label>{t("day", lang)}<input type="date" name="day" id="mark-day" value="{today}" required></label>'
               f'<label>{t("site", lang)}{site_select(session, None, lang, allow_all=session.sites is None)}</label>'
               f'<label>{t("note", lang)}<input name="note" id="mark-note" maxlength="200" required></label>'
               f'<button type="submit" id="add-mark">{t("add_mark", lang)}</button></form>')
        result = ""
        mark = next((m for m in marks if m["pk"] == chosen), None)
        try:
            pivot = date.fromisoformat(str(mark["day"])) if mark is not None else None
        except ValueError:
            pivot = None
        if mark is not None and (pivot is None or not FIRST_DAY + timedelta(days=366) <= pivot
                                 <= LAST_DAY - timedelta(days=366)):
            # A mark stored before marks were bounded: said, not computed with.
            result = (f'<section class="result"><h2>{escape(mark["day"])} · {escape(mark["note"])}</h2>'
                      f'<p class="error" id="statement">{t("mark_out_of_range", lang)}</p></section>')
        elif mark is not None:
            before = Filters(pivot - timedelta(days=days), pivot - timedelta(days=1), site=mark["site"],
                             sites=session.sites, suspect=False)
            after = Filters(pivot, min(pivot + timedelta(days=days - 1), today), site=mark["site"],
                            sites=session.sites, suspect=False)
            c = compare(s.summary(before), s.summary(after))

            def verdict(change) -> str:
                if change.significant is None:
                    return t("no_verdict", lang)
                return t("significant" if change.significant else "not_significant", lang)

            def line(name: str, change) -> str:
                ci = "–" if change.low is None else f"{change.low:+.1f} … {change.high:+.1f}"
                diff = "–" if change.diff is None else f"{change.diff:+.1f}"
                return (f'<tr><td>{name}</td><td class="num">{_fmt(change.before)}</td><td class="num">{_fmt(change.after)}</td>'
                        f'<td class="num">{diff}</td><td class="num">{ci}</td><td>{verdict(change)}</td></tr>')

            result = (f'<section class="result"><h2>{escape(mark["day"])} · {escape(mark["note"])}</h2>'
                      f'<p class="muted">{t("before", lang)}: {before.date_from} – {before.date_to} (n={c.before.count}) · '
                      f'{t("after", lang)}: {after.date_from} – {after.date_to} (n={c.after.count})</p>'
                      f'<table><thead><tr><th></th><th>{t("before", lang)}</th><th>{t("after", lang)}</th>'
                      f'<th>{t("change", lang)}</th><th>{t("ci", lang)}</th><th></th></tr></thead><tbody>'
                      f'{line(t("index", lang), c.index)}{line("CSAT %", c.csat)}</tbody></table>'
                      f'<p class="statement" id="statement">{escape(c.statement(lang))}</p></section>')
        days_form = (f'<form method="get" action="/compare" class="filters">'
                     f'<input type="hidden" name="mark" value="{chosen or ""}">'
                     f'<label>{t("days_each_side", lang)}<input type="number" name="days" min="1" max="365" value="{days}"></label>'
                     f'<button type="submit">{t("show", lang)}</button></form>')
        body = f'{result}<section><h2>{t("marks", lang)}</h2>{days_form}{table}<h2>{t("add_mark", lang)}</h2>{add}</section>'
        return page(request, session, t("compare", lang), body, "compare")

    @router.post("/marks")
    def add_mark(session: Session = Depends(current), data: dict = Depends(checked_form)) -> Response:
        try:
            day = date.fromisoformat(data.get("day", ""))
        except ValueError:
            raise HTTPException(400, "day must be a date YYYY-MM-DD") from None
        latest = now().astimezone(tz).date() + timedelta(days=MARK_DAYS_AHEAD)
        if not FIRST_MARK_DAY <= day <= latest:
            raise HTTPException(400, f"a mark's day must be between {FIRST_MARK_DAY} and {latest}")
        note = data.get("note", "").strip()[:200]
        if not note:
            raise HTTPException(400, "a mark needs a note")
        site = scoped_site(session, data.get("site") or None)
        if site is None and session.sites is not None:
            raise HTTPException(403, "a site-scoped user marks one of their sites")
        pk = store().add_mark(site, day, note, session.user, now())
        return RedirectResponse(f"/compare?mark={pk}", status_code=303)

    @router.post("/marks/{pk}/delete")
    def delete_mark(pk: str, session: Session = Depends(current), data: dict = Depends(checked_form)) -> Response:
        pk = _row_id(pk)
        mark = next((m for m in store().marks(session.sites) if m["pk"] == pk), None)
        if mark is None or (mark["site"] is None and session.sites is not None):
            raise HTTPException(404, "no such mark")
        store().delete_mark(pk)
        return RedirectResponse("/compare", status_code=303)

    # -- alerts -----------------------------------------------------------------

    @router.get("/alerts")
    def alerts_page(request: Request, session: Session = Depends(current)) -> HTMLResponse:
        lang = _lang(request)
        rows_open, rows_past = [], []
        for a in store().alerts(session.sites):
            cells = (f'<td>{_short_time(a["raised_at"], tz)}</td><td>{escape(a["site"])}</td>'
                     f'<td>{escape(a["terminal"] or "")}</td><td>{escape(a["kind"])}</td><td>{escape(a["message"])}</td>')
            if a["cleared_at"] is None:
                if a["acked_at"]:
                    ack = f'{t("acked", lang)}: {escape(a["acked_by"])}'
                else:
                    ack = (f'<form method="post" action="/alerts/{a["pk"]}/ack" class="inline">'
                           f'<input type="hidden" name="csrf" value="{escape(session.csrf)}">'
                           f'<button type="submit">{t("acknowledge", lang)}</button></form>')
                rows_open.append(f'<tr class="{"" if a["acked_at"] else "alarm"}">{cells}<td>{ack}</td></tr>')
            else:
                rows_past.append(f'<tr>{cells}<td>{_short_time(a["cleared_at"], tz)}</td></tr>')
        head = (f'<tr><th>{t("raised", lang)}</th><th>{t("site", lang)}</th><th>{t("terminal", lang)}</th>'
                f'<th>{t("kind", lang)}</th><th>{t("message", lang)}</th><th></th></tr>')
        empty = f'<tr><td colspan="6">{t("none", lang)}</td></tr>'
        body = (f'<section><h2>{t("open_alerts", lang)}</h2><table id="open-alerts"><thead>{head}</thead>'
                f'<tbody>{"".join(rows_open) or empty}</tbody></table></section>'
                f'<section><h2>{t("past_alerts", lang)}</h2><table><thead>{head}</thead>'
                f'<tbody>{"".join(rows_past) or empty}</tbody></table></section>')
        return page(request, session, t("alerts", lang), body, "alerts")

    @router.post("/alerts/{pk}/ack")
    def ack(pk: str, session: Session = Depends(current), data: dict = Depends(checked_form)) -> Response:
        pk = _row_id(pk)
        if not store().ack_alert(pk, session.user, now(), session.sites):
            raise HTTPException(404, "no such alert")
        # An event (suspect burst) ends when someone has looked at it.
        row = next((a for a in store().alerts(session.sites) if a["pk"] == pk), None)
        if row is not None and row["kind"] == "suspect":
            store().clear_alert(pk, now())
        return RedirectResponse("/alerts", status_code=303)

    # -- exports ----------------------------------------------------------------

    @router.get("/exports")
    def exports_page(request: Request, session: Session = Depends(current)) -> HTMLResponse:
        lang = _lang(request)
        first, last = date_range(request, 30)
        options = "".join(f'<option value="{k}"{" selected" if k == "include" else ""}>'
                          f'{escape(code_label(k, lang))}</option>' for k in SUSPECT_CHOICES)
        month = last_complete_month(now().astimezone(tz).date()).strftime("%Y-%m")
        body = (f'<section><form method="get" class="filters" action="/export/ratings.csv" id="export-form">'
                f'<label>{t("from", lang)}<input type="date" name="from" value="{first}"></label>'
                f'<label>{t("to", lang)}<input type="date" name="to" value="{last}"></label>'
                f'<label>{t("site", lang)}{site_select(session, None, lang)}</label>'
                f'<label>{t("suspect", lang)}<select name="suspect">{options}</select></label>'
                f'<button type="submit" id="csv">{t("csv", lang)}</button>'
                f'<button type="submit" id="xlsx" formaction="/export/ratings.xlsx">{t("xlsx", lang)}</button>'
                f'</form></section>'
                f'<section><h2>{t("report", lang)}</h2><form method="get" action="/report" class="filters">'
                f'<label>{t("site", lang)}{site_select(session, None, lang, allow_all=False)}</label>'
                f'<label>{t("month", lang)}<input type="month" name="month" value="{month}"></label>'
                f'<button type="submit" id="report">{t("open", lang)}</button></form></section>')
        return page(request, session, t("exports", lang), body, "exports")

    def export_filters(request: Request, session: Session) -> Filters:
        first, last = date_range(request, 1)
        site = scoped_site(session, request.query_params.get("site"))
        _, suspect = suspect_choice(request) if request.query_params.get("suspect") else ("include", None)
        return Filters(first, last, site=site, sites=session.sites, suspect=suspect)

    @router.get("/export/ratings.csv")
    def export_csv(request: Request, session: Session = Depends(current)) -> StreamingResponse:
        filters = export_filters(request, session)
        chunks, name = stream_ratings_csv(store_factory, filters)
        return StreamingResponse(chunks, media_type="text/csv; charset=utf-8",
                                 headers={"Content-Disposition": f'attachment; filename="{name}"',
                                          "Cache-Control": "no-store"})

    @router.get("/export/ratings.xlsx")
    def export_xlsx(request: Request, session: Session = Depends(current)) -> Response:
        filters = export_filters(request, session)
        buffer = io.BytesIO()
        write_ratings_xlsx(buffer, store(), filters, generated_at=now().astimezone(tz), lang=_lang(request),
                           site_names={site: config.site_name(site) for site in config.sites},
                           terminal_names={(site, terminal): name for site, site_config in config.sites.items()
                                           for terminal, name in site_config.terminals.items()},
                           reasons=config.reasons_for_site(filters.site) if filters.site else config.reasons)
        name = f"onetap-ratings-{filters.date_from}-{filters.date_to}.xlsx"
        return Response(buffer.getvalue(),
                        media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                        headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"})

    def report_model(request: Request, session: Session):
        lang = _lang(request)
        site = scoped_site(session, request.query_params.get("site"))
        if site is None:
            raise HTTPException(400, "a report is for one site: give site")
        today = now().astimezone(tz).date()
        try:
            first, _ = month_range(request.query_params.get("month")
                                   or last_complete_month(today).strftime("%Y-%m"))
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        if not FIRST_DAY <= first <= LAST_DAY:
            raise HTTPException(400, f"month must be between {FIRST_DAY:%Y-%m} and {LAST_DAY:%Y-%m}")
        choice = request.query_params.get("suspect", "exclude")
        if choice not in ("exclude", "include"):
            raise HTTPException(400, "suspect must be exclude or include")
        return report_for(config, store(), site, first, lang=lang, now=now(), sites=session.sites,
                          exclude_suspect=choice == "exclude")

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
            response.set_cookie(LANG_COOKIE, model.lang, max_age=365 * 86400, samesite="lax",
                                secure=_secure(request))
        return response

    @router.get("/report.pdf")
    def report_pdf(request: Request, session: Session = Depends(current)) -> Response:
        model = report_model(request, session)
        name = f"onetap-report-{model.site}-{model.first.strftime('%Y-%m')}-{model.lang}.pdf"
        return Response(render_pdf(model), media_type="application/pdf",
                        headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"})

    app.include_router(router)
