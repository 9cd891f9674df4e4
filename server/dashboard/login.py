"""The login page: sign in (throttled, login CSRF) and sign out."""

from __future__ import annotations

import logging
import math

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from server.auth import SESSION_COOKIE, authenticate, csrf_ok, new_session, new_token, session_cookie
from server.dashboard.context import PageError, Session, board, checked, reader_lang, render, secure
from server.dashboard.i18n import t

log = logging.getLogger(__name__)

LOGIN_CSRF_COOKIE = "onetap_login_csrf"
router = APIRouter(include_in_schema=False)


@router.get("/login")
def login_page(request: Request, error: str = "") -> HTMLResponse:
    token = new_token()
    response = render(request, "login.html", session=None, title=t("login", reader_lang(request)),
                      csrf=token, failed=bool(error), refused=None)
    # Login CSRF: the form's token must match this cookie (double submit).
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict",
                        secure=secure(request), path="/login")
    return response


def refuse(request: Request, status: int, wait: float, message: str) -> Response:
    seconds = max(1, math.ceil(wait))
    lang = reader_lang(request)
    response = render(request, "login.html", session=None, title=t("login", lang), status=status,
                      csrf="", failed=False, refused=t(message, lang).format(seconds=seconds))
    response.headers["Retry-After"] = str(seconds)
    return response


@router.post("/login")
def login(request: Request, csrf: str = Form(""), username: str = Form(""), password: str = Form("")) -> Response:
    dash = board(request)
    if not csrf_ok(request.cookies.get(LOGIN_CSRF_COOKIE, ""), csrf):
        raise PageError(403, "login_csrf_refused")
    # uvicorn puts X-Forwarded-For's client here, believed only from forwarded_allow_ips.
    address = request.client.host if request.client else "?"
    now = dash.now()
    wait = dash.throttle.wait(username, address, now.timestamp())
    if wait > 0:
        # Locked or delayed: answered without hashing, so guessing costs the server nothing.
        log.warning("dashboard login for %r from %s refused for %.0f s (failed logins)", username, address, wait)
        return refuse(request, 429, wait, "login_locked")
    if not dash.hash_slots.acquire():
        return refuse(request, 503, dash.config.http.hash_wait_s, "login_busy")
    try:
        accepted = authenticate(dash.config.users, username, password)
    finally:
        dash.hash_slots.release()
    if not accepted:
        dash.throttle.failed(username, address, dash.now().timestamp())
        log.warning("failed dashboard login for %r from %s", username, address)
        return RedirectResponse("/login?error=1", status_code=303)
    dash.throttle.succeeded(username, address)
    now = dash.now()
    session = new_session(now)
    dash.store().add_session(session.token_hash, username, session.csrf, now, session.expires)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(SESSION_COOKIE, session_cookie(session.token, dash.fingerprint(username)), httponly=True,
                        samesite="lax", secure=secure(request),
                        max_age=int((session.expires - now).total_seconds()))
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    log.info("dashboard login: %s", username)
    return response


@router.post("/logout")
def logout(request: Request, session: Session = Depends(checked)) -> Response:
    board(request).store().delete_session(session.token_hash)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response
