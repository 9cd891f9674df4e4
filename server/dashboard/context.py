"""What every dashboard page shares: the server's parts, the signed-in user, the page's scope and the templates."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlencode

from fastapi import Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from kiosk.protocol import is_identifier
from server.bounds import FIRST_DAY, LAST_DAY
from server.auth import (SESSION_COOKIE, HashSlots, LoginThrottle, credential_fingerprint, csrf_ok,
                         session_cookie_ok, session_token, token_hash)
from server.config import ServerConfig
from server.dashboard.i18n import LANGS, TEXT, code_label, t
from server.store import Filters


TEMPLATES_DIR = Path(__file__).parent / "templates"
LANG_COOKIE = "onetap_lang"
#: The suspect filter's choices, the default (exclude) first: one rule on every page and export.
SUSPECT_CHOICES = {"exclude": False, "include": None, "only": True}
MAX_RANGE_DAYS = 3660
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self';"
                               " script-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
#: The navigation: (text key, path).
NAVIGATION = (("home", "/"), ("trends", "/trends"), ("compare", "/compare"), ("alerts", "/alerts"),
              ("exports", "/exports"), ("help", "/help"))


class PageError(HTTPException):
    """A refusal staff read: a text key of i18n.TEXT and its parameters, shown in the reader's language."""

    def __init__(self, status: int, key: str, **params: Any):
        super().__init__(status, key)
        self.key = key
        self.params = params

    def text(self, lang: str) -> str:
        # A field's name (from, to, day) is itself a text key: read in the same language.
        params = {k: t(v, lang) if k == "name" and v in TEXT else v for k, v in self.params.items()}
        return t(self.key, lang).format(**params)


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


@dataclass
class Dashboard:
    """The server's parts the pages use (on app.state.dashboard)."""

    config: ServerConfig
    store: Callable[[], Any]
    store_factory: Callable[[], Any]
    now: Callable[[], datetime]
    throttle: LoginThrottle
    hash_slots: HashSlots
    templates: Environment = field(default_factory=lambda: Environment(
        # Autoescape everything: site names, notes and marks come from people.
        loader=FileSystemLoader(TEMPLATES_DIR), autoescape=True, undefined=StrictUndefined))

    def today(self) -> date:
        return self.now().astimezone(self.config.tz).date()

    def fingerprint(self, name: str) -> str | None:
        user = self.config.users.get(name)
        return None if user is None else credential_fingerprint(user.password_hash, self.config.user_sites(name))

    def visible_sites(self, session: Session) -> list[str]:
        if session.sites is not None:
            return sorted(session.sites)
        known = {row["site"] for row in self.store().terminals()} | set(self.config.sites)
        for group in self.config.groups.values():
            known |= set(group.sites)
        return sorted(known)


def board(request: Request) -> Dashboard:
    return request.app.state.dashboard


def secure(request: Request) -> bool:
    # uvicorn turns X-Forwarded-Proto into the scheme, but only from
    # forwarded_allow_ips (the reverse proxy): anyone else could send the header.
    return request.url.scheme == "https"


def reader_lang(request: Request) -> str:
    lang = request.query_params.get("lang") or request.cookies.get(LANG_COOKIE) or "ko"
    return lang if lang in LANGS else "ko"


def current(request: Request) -> Session:
    """The signed-in user, or LoginRequired."""
    dash = board(request)
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie or not session_token(cookie):
        raise LoginRequired()
    digest = token_hash(session_token(cookie))
    row = dash.store().get_session(digest)
    if row is None or datetime.fromisoformat(row["expires_at"]) < dash.now():
        raise LoginRequired()
    granted = dash.fingerprint(row["user"])
    if granted is None or not session_cookie_ok(cookie, granted):
        # Removed from the config, or a new password or scope since this login.
        dash.store().delete_session(digest)
        raise LoginRequired()
    return Session(row["user"], dash.config.user_sites(row["user"]), row["csrf"], digest)


def checked(session: Session = Depends(current), csrf: str = Form("")) -> Session:
    """The signed-in user of a form post that carries the session's CSRF token."""
    if not csrf_ok(session.csrf, csrf):
        raise PageError(403, "csrf_refused")
    return session


def day_param(name: str, text: str) -> date:
    """A date between FIRST_DAY and LAST_DAY, or 400 saying so."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise PageError(400, "bad_date", name=name) from None
    if not FIRST_DAY <= day <= LAST_DAY:
        raise PageError(400, "date_out_of_range", name=name, first=FIRST_DAY, last=LAST_DAY)
    return day


@dataclass(frozen=True)
class Scope:
    """What a page shows: a day range, a site or a group, a terminal, the suspect choice."""

    first: date
    last: date
    site: str | None
    group: str | None
    terminal: str | None
    suspect: str
    filters: Filters

    def caption(self, dash: Dashboard, lang: str) -> str:
        """The scope printed under every figure: period, place, counter, suspect rule."""
        config = dash.config
        where = (config.site_name(self.site) if self.site else
                 config.group_name(self.group) if self.group else t("all_sites", lang))
        parts = [f"{self.first.isoformat()} – {self.last.isoformat()}", where]
        if self.terminal and self.site:
            parts.append(config.terminal_name(self.site, self.terminal))
        parts.append(f"{t('suspect_short', lang)}: {code_label(self.suspect, lang)}")
        return " · ".join(parts)

    def query(self, **changes: Any) -> str:
        values = {"from": self.first.isoformat(), "to": self.last.isoformat(), "site": self.site or "",
                  "group": self.group or "", "terminal": self.terminal or "", "suspect": self.suspect}
        values.update(changes)
        return urlencode({k: v for k, v in values.items() if v})


def scoped_site(session: Session, site: str | None) -> str | None:
    if not site:
        return None
    if not is_identifier(site):
        raise PageError(400, "bad_site")
    if not session.allows(site):
        raise PageError(403, "forbidden")
    return site


def scope_of(request: Request, session: Session, *, default_days: int = 30, with_terminal: bool = True,
             choices: tuple[str, ...] = tuple(SUSPECT_CHOICES)) -> Scope:
    """The page's scope from its query: from, to, site, group, terminal, suspect (bounded, scoped)."""
    dash = board(request)
    q = request.query_params
    today = dash.today()
    first = day_param("from", q.get("from") or (today - timedelta(days=default_days - 1)).isoformat())
    last = day_param("to", q.get("to") or today.isoformat())
    if first > last or (last - first).days > MAX_RANGE_DAYS:
        raise PageError(400, "bad_range")
    site = scoped_site(session, q.get("site"))
    group = q.get("group") or None
    allowed = session.sites
    if group is not None:
        group_config = dash.config.groups.get(group) if is_identifier(group) else None
        if group_config is None:
            raise PageError(400, "bad_group")
        members = frozenset(group_config.sites)
        allowed = members if allowed is None else allowed & members
        if not allowed:
            raise PageError(403, "forbidden")
        if site is not None and site not in members:
            raise PageError(400, "site_not_in_group")
    terminal = (q.get("terminal") or None) if with_terminal else None
    if terminal is not None and "/" in terminal:
        # The filter form names a counter as site/terminal: two sites may both have counter-01.
        owner, terminal = terminal.split("/", 1)
        owner = scoped_site(session, owner)
        if site is not None and owner != site:
            raise PageError(400, "terminal_not_in_site")
        site = owner
    if terminal is not None:
        if not is_identifier(terminal):
            raise PageError(400, "bad_terminal")
        if site is None:
            # A terminal is known by its site: infer it only when one visible site has that terminal.
            owners = {row["site"] for row in dash.store().terminals(sites=allowed) if row["terminal"] == terminal}
            if len(owners) != 1:
                raise PageError(400, "terminal_needs_site")
            site = owners.pop()
    choice = q.get("suspect") or "exclude"
    if choice not in choices:
        raise PageError(400, "bad_suspect", choices=", ".join(code_label(c, reader_lang(request)) for c in choices))
    return Scope(first, last, site, group, terminal, choice,
                 Filters(first, last, site=site, terminal=terminal, sites=allowed, suspect=SUSPECT_CHOICES[choice]))


def filter_options(dash: Dashboard, session: Session, lang: str) -> dict[str, Any]:
    """The choices of the shared filter form: sites, groups, terminals (by site), suspect."""
    visible = dash.visible_sites(session)
    config = dash.config
    groups = [(gid, config.group_name(gid)) for gid, g in sorted(config.groups.items())
              if session.sites is None or set(g.sites) & set(visible)]
    terminals = [(row["site"], row["terminal"], config.terminal_name(row["site"], row["terminal"]))
                 for row in dash.store().terminals(sites=session.sites)]
    return {"sites": [(site, config.site_name(site)) for site in visible], "groups": groups,
            "terminals": terminals,
            "suspect_choices": [(c, code_label(c, lang)) for c in SUSPECT_CHOICES]}


def render(request: Request, template: str, *, session: Session | None, title: str, active: str = "",
           status: int = 200, **context: Any) -> HTMLResponse:
    """*template* in the base layout, in the reader's language."""
    dash = board(request)
    lang = reader_lang(request)
    other = "en" if lang == "ko" else "ko"
    query = dict(request.query_params)
    query["lang"] = other
    scope_label = None
    if session is not None:
        scope_label = t("all_sites", lang) if session.sites is None else ", ".join(
            dash.config.site_name(s) for s in sorted(session.sites))
    html = dash.templates.get_template(template).render(
        lang=lang, t=lambda key, **params: t(key, lang).format(**params) if params else t(key, lang),
        title=title, active=active, session=session, scope_label=scope_label,
        navigation=NAVIGATION if session is not None else (), lang_href="?" + urlencode(query),
        lang_label="English" if other == "en" else "한국어", num=number, svg=Markup, **context)
    response = HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)
    if request.query_params.get("lang") in LANGS:
        response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, samesite="lax", secure=secure(request))
    return response


def number(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def short_time(text: str | None, tz: Any) -> str:
    if not text:
        return "–"
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(tz)
    except ValueError:
        return text
    return moment.strftime("%m-%d %H:%M:%S")



#: Database row ids are signed 64-bit integers.
MAX_ROW_ID = 2 ** 63 - 1


def row_id(text: str) -> int:
    """A row id from a URL, or 404: anything else cannot name a row."""
    if not (text.isascii() and text.isdigit() and len(text) <= 19 and 0 < int(text) <= MAX_ROW_ID):
        raise PageError(404, "not_found")
    return int(text)
