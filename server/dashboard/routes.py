"""The dashboard mounted on the HTTP app: its pages, static files and error pages in the reader's language."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Callable

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from server.bounds import BodyTooLarge
from server.auth import HashSlots, LoginThrottle
from server.config import ServerConfig
from server.errors import StoreError
from server.store import Store
from server.dashboard import alerts, compare, exports, help, home, login, report, terminals, trends
from server.dashboard.context import Dashboard, LoginRequired, PageError, current, reader_lang, render
from server.dashboard.login import LOGIN_CSRF_COOKIE  # noqa: F401 - where the deploy tests look for it
from server.dashboard.i18n import t

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
#: Paths that answer machines (JSON or text), never an HTML error page.
MACHINE_PREFIXES = ("/api/", "/healthz", "/metrics", "/openapi.json", "/docs", "/redoc", "/static/")
#: An error's title by status; other statuses read as "bad_request".
ERROR_TITLES = {400: "error_400", 403: "error_403", 404: "error_404", 405: "error_405", 413: "error_413",
                429: "error_429", 500: "error_500", 503: "error_503"}


def for_people(request: Request) -> bool:
    return not request.url.path.startswith(MACHINE_PREFIXES)


def error_page(request: Request, status: int, message: str | None, *, with_session: bool = True) -> Response:
    session = None
    if with_session:
        try:
            session = current(request)
        except Exception as exc:  # noqa: BLE001 - an error page renders whether or not a session is valid
            log.debug("error page without a session: %s", exc)
    title = t(ERROR_TITLES.get(status, "error_400"), reader_lang(request))
    return render(request, "error.html", session=session, title=title, status=status, code=status,
                  message=message, back="/" if session is not None else "/login")


def install(app: FastAPI, config: ServerConfig, store: Callable[[], Store],
            store_factory: Callable[[], Store], now: Callable[[], datetime]) -> None:
    """Mount the dashboard at / on *app* (HTML routes are left out of the OpenAPI schema)."""
    limits = config.http
    app.state.dashboard = Dashboard(
        config=config, store=store, store_factory=store_factory, now=now,
        throttle=LoginThrottle(free=limits.login_free_failures, ip_free=limits.login_ip_free_failures,
                               delay_s=limits.login_delay_s, user_lockout=limits.login_user_lockout_failures,
                               ip_lockout=limits.login_ip_lockout_failures, lockout_s=limits.login_lockout_s),
        hash_slots=HashSlots(limits.max_concurrent_hashes, limits.hash_wait_s))
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.exception_handler(LoginRequired)
    async def to_login(request: Request, exc: LoginRequired) -> Response:
        return RedirectResponse("/login", status_code=303)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if isinstance(exc.__cause__, BodyTooLarge):
            # FastAPI's form parsing turns any failure into a 400: the body limit answers 413 itself.
            raise exc.__cause__
        if not for_people(request):
            return await http_exception_handler(request, exc)
        lang = reader_lang(request)
        message = exc.text(lang) if isinstance(exc, PageError) else None
        response = error_page(request, exc.status_code, message)
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        if not for_people(request):
            return await request_validation_exception_handler(request, exc)
        return error_page(request, 400, t("bad_form", reader_lang(request)))

    @app.exception_handler(StoreError)
    async def store_down(request: Request, exc: StoreError) -> Response:
        log.error("store error on %s: %s", request.url.path, exc)
        if not for_people(request):
            return JSONResponse({"detail": "the database is unavailable"}, status_code=503)
        return error_page(request, 503, t("store_down", reader_lang(request)), with_session=False)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> Response:
        log.exception("error on %s", request.url.path)
        if not for_people(request):
            return Response('{"detail":"internal server error"}', status_code=500, media_type="application/json")
        return error_page(request, 500, None)

    for page in (login, home, trends, compare, alerts, exports, report, help, terminals):
        app.include_router(page.router)
