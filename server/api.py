"""HTTP API v1 (FastAPI): health, summary, aggregates, terminals, ratings CSV and metrics."""

import hmac
import io
import logging
import threading
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Annotated, Any, Callable

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict

from kiosk.protocol import IDENT_PATTERN
from server import __version__
from server.aggregate import AGGREGATE_KEYS, distribution_json, parse_by, summarize
from server.config import ServerConfig
from server.auth import token_hash
from server.certificates import CertificateCheck
from server.errors import StoreError
from server.export import stream_ratings_csv, write_ratings_xlsx
from server.store import Filters, Store

log = logging.getLogger(__name__)

_DATE_PATTERN = r"^\d{4}-\d{2}-\d{2}$"
_IDENT = f"^{IDENT_PATTERN}$"


# -- who is asking ------------------------------------------------------------


@dataclass(frozen=True)
class Principal:
    """An authenticated caller and the sites it may see (None: every site)."""

    name: str
    sites: frozenset[str] | None = None

    def allows(self, site: str) -> bool:
        return self.sites is None or site in self.sites


def principals(config: ServerConfig) -> list[tuple[str, Principal]]:
    """SHA-256 (hex) of each bearer token and whom it stands for: ``api_token``
    for every site, each ``[tokens.<name>]`` for its sites."""
    out = []
    if config.api_token:
        out.append((token_hash(config.api_token), Principal("api", None)))
    for name, token in config.tokens.items():
        out.append((token.sha256, Principal(name, token.sites)))
    return out


# -- request bodies ---------------------------------------------------------------


class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: a request body larger than its route needs is refused with
    413 before it is read whole. POST (the dashboard's forms, login included) may
    carry *form_bytes*; nothing else needs a body. Content-Length is checked first,
    then the bytes actually received (a chunked body has no length)."""

    def __init__(self, app: Any, form_bytes: int):
        self.app = app
        self.form_bytes = form_bytes

    def limit(self, method: str) -> int:
        return self.form_bytes if method in ("POST", "PUT", "PATCH") else 0

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit(scope["method"])
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await self._refuse(send, limit)
            return
        received = 0
        started = False

        async def counted_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge()
            return message

        async def tracked_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _BodyTooLarge:
            if started:
                raise
            await self._refuse(send, limit)

    @staticmethod
    async def _refuse(send: Callable, limit: int) -> None:
        body = f'{{"detail":"the request body is larger than this route accepts ({limit} bytes)"}}'.encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"connection", b"close"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


# -- response models ------------------------------------------------------------


class Health(BaseModel):
    """ok, or error (503) with the reason; ingest liveness and each supervised thread's state."""

    status: str
    broker: str
    db: str
    reason: str | None = None
    ingest: dict[str, Any] | None = None
    threads: dict[str, str] | None = None
    #: Trouble ahead that does not fail the check yet (a certificate about to expire).
    warnings: list[str] | None = None


class SummaryOut(BaseModel):
    count: int
    distribution: dict[str, int]
    mean: float | None
    csat: float | None
    index: float | None


class AggregateRow(BaseModel):
    """One group: its ``by`` keys as fields, plus count and distribution."""

    model_config = ConfigDict(extra="allow")
    count: int
    distribution: dict[str, int]


class AggregatesOut(BaseModel):
    by: list[str]
    rows: list[AggregateRow]


class TerminalOut(BaseModel):
    """A terminal as its last retained Status (or Last Will) left it."""

    model_config = ConfigDict(extra="allow")
    site: str
    terminal: str
    state: str
    last_seen: str | None = None
    backlog: int | None = None
    version: str | None = None
    clock_synced: bool | None = None
    oldest_pending_at: str | None = None
    last_tap_at: str | None = None
    last_ack_at: str | None = None
    seq: int | None = None
    uptime_s: float | None = None
    disk_free_mb: float | None = None
    config_version: int | str | None = None
    status_at: str | None = None


class ErrorOut(BaseModel):
    detail: str


def create_app(
    store_factory: Callable[[], Store],
    config: ServerConfig,
    link: Any = None,
    *,
    now: Callable[[], datetime] | None = None,
) -> FastAPI:
    """The HTTP API. *store_factory* makes one store per worker thread;
    *link* (a server.link.Link) gives /healthz and /metrics the broker side."""
    now = now or (lambda: datetime.now(timezone.utc))
    tz = config.tz
    tokens = principals(config)
    local = threading.local()
    certificates = CertificateCheck(config)

    def store() -> Store:
        current = getattr(local, "store", None)
        if current is None:
            current = local.store = store_factory()
        return current

    app = FastAPI(
        title="onetap server",
        version=__version__,
        description="Ratings from onetap feedback terminals: HTTP API v1.",
        # Swagger UI and ReDoc load their scripts from a CDN and would answer
        # anyone; the contract (/openapi.json) stays served.
        docs_url=None,
        redoc_url=None,
    )

    app.add_middleware(BodyLimit, form_bytes=config.http.max_form_bytes)

    @app.exception_handler(StoreError)
    async def store_error(request: Request, exc: StoreError) -> JSONResponse:
        log.error("store error on %s: %s", request.url.path, exc)
        return JSONResponse({"detail": "the database is unavailable"}, status_code=503)

    bearer = HTTPBearer(auto_error=False, description="The server's API token")

    def principal(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Principal:
        challenge = {"WWW-Authenticate": 'Bearer realm="onetap"'}
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise HTTPException(401, "an Authorization: Bearer token is required", headers=challenge)
        given = token_hash(credentials.credentials).encode()
        found = None
        for digest, who in tokens:
            # Check every token so the time taken says nothing about which matched.
            if hmac.compare_digest(given, digest.encode()):
                found = who
        if found is None:
            raise HTTPException(401, "the token is not valid",
                                headers={"WWW-Authenticate": 'Bearer realm="onetap", error="invalid_token"'})
        return found

    Caller = Annotated[Principal, Depends(principal)]

    def filters(
        who: Caller,
        date_from: Annotated[str | None, Query(alias="from", pattern=_DATE_PATTERN,
                                               description="first local day, YYYY-MM-DD (default today)")] = None,
        date_to: Annotated[str | None, Query(alias="to", pattern=_DATE_PATTERN,
                                             description="last local day, inclusive (default today)")] = None,
        site: Annotated[str | None, Query(pattern=_IDENT)] = None,
        terminal: Annotated[str | None, Query(pattern=_IDENT)] = None,
        exclude_suspect: Annotated[bool, Query(
            description="leave out ratings flagged suspect (machine-pace bursts)")] = False,
    ) -> Filters:
        today = now().astimezone(tz).date()
        first = _parse_date("from", date_from) if date_from else today
        last = _parse_date("to", date_to) if date_to else today
        if first > last:
            raise HTTPException(400, f"from ({first}) is after to ({last})")
        if site is not None and not who.allows(site):
            raise HTTPException(403, f"this token may not read site {site!r}")
        return Filters(first, last, site, terminal, who.sites, False if exclude_suspect else None)

    Scope = Annotated[Filters, Depends(filters)]
    errors = {401: {"model": ErrorOut}, 403: {"model": ErrorOut}, 400: {"model": ErrorOut}}

    @app.get("/healthz", response_model=Health, responses={503: {"model": Health}}, tags=["health"])
    def healthz() -> JSONResponse:
        """200 when the database answers, ingest makes progress and every supervised
        thread runs; otherwise 503 with the reason (docs/deploy.md, "Health and watchdog")."""
        try:
            db_ok = store().ping()
        except StoreError:
            db_ok = False
        reasons = [] if db_ok else ["the database does not answer"]
        body: dict[str, Any] = {
            "status": "ok",
            "broker": "connected" if link is not None and link.connected else "disconnected",
            "db": "ok" if db_ok else "error",
        }
        supervisor = link.supervisor if link is not None else None
        if supervisor is not None:
            reasons += [problem.reason for problem in supervisor.problems()]
            ingest = link.ingest_state()
            if ingest is not None:
                body["ingest"] = ingest
            body["threads"] = supervisor.threads()
        if reasons:
            body["status"] = "error"
            body["reason"] = "; ".join(reasons)
        # Not yet a failure, but one coming: an expiring broker certificate.
        warnings = certificates.warnings(now())
        if warnings:
            body["warnings"] = warnings
        return JSONResponse(body, status_code=503 if reasons else 200)

    @app.get("/api/v1/summary", response_model=SummaryOut, responses=errors, tags=["ratings"])
    def summary(scope: Scope) -> dict[str, Any]:
        return summarize(store().summary(scope)).to_json()

    @app.get("/api/v1/aggregates", response_model=AggregatesOut, responses=errors, tags=["ratings"])
    def aggregates(
        scope: Scope,
        by: Annotated[str, Query(max_length=100,
                                 description=f"one to three of: {', '.join(AGGREGATE_KEYS)}, comma-separated")],
    ) -> dict[str, Any]:
        try:
            keys = parse_by(by)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        rows = []
        for key, dist in store().aggregates(keys, scope):
            rows.append({**dict(zip(keys, key)), "count": sum(dist.values()),
                         "distribution": distribution_json(dist)})
        return {"by": list(keys), "rows": rows}

    @app.get("/api/v1/terminals", response_model=list[TerminalOut], responses=errors, tags=["terminals"])
    def terminals(
        who: Caller,
        site: Annotated[str | None, Query(pattern=_IDENT)] = None,
    ) -> list[dict[str, Any]]:
        if site is not None and not who.allows(site):
            raise HTTPException(403, f"this token may not read site {site!r}")
        return store().terminals(site, who.sites)

    @app.get("/api/v1/ratings.csv", responses={**errors, 200: {"content": {"text/csv": {}}}},
             response_class=StreamingResponse, tags=["ratings"])
    def ratings_csv(scope: Scope) -> StreamingResponse:
        chunks, name = stream_ratings_csv(store_factory, scope)
        return StreamingResponse(
            chunks, media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'})

    xlsx_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

    @app.get("/api/v1/ratings.xlsx", responses={**errors, 200: {"content": {xlsx_type: {}}}},
             response_class=Response, tags=["ratings"])
    def ratings_xlsx(scope: Scope) -> Response:
        buffer = io.BytesIO()
        write_ratings_xlsx(buffer, store(), scope, generated_at=now().astimezone(tz))
        name = f"onetap-ratings-{scope.date_from}-{scope.date_to}.xlsx"
        return Response(buffer.getvalue(), media_type=xlsx_type,
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

    @app.get("/metrics", response_class=PlainTextResponse, responses={401: {"model": ErrorOut}}, tags=["health"])
    def metrics(who: Caller) -> PlainTextResponse:
        """Prometheus text. A site-scoped token gets only per-site series of its sites;
        the process-wide ones (ingest, broker, quarantine) mix every site's traffic."""
        lines: list[str] = []

        def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                lines.append(f"{name}{labels} {value}")

        today = now().astimezone(tz).date()
        by_site = store().aggregates(("site",), Filters(today, today, sites=who.sites))
        metric("onetap_site_ratings_today", "gauge", "Ratings stored for today (local day), by site.",
               [(f'{{site="{site}"}}', sum(dist.values())) for (site,), dist in by_site])
        states: dict[tuple[str, str], int] = {}
        for term in store().terminals(sites=who.sites):
            key = (term["site"], term.get("state") or "unknown")
            states[key] = states.get(key, 0) + 1
        metric("onetap_site_terminals", "gauge", "Known terminals by site and state.",
               [(f'{{site="{site}",state="{state}"}}', n) for (site, state), n in sorted(states.items())])
        if who.sites is not None:
            return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")
        counts = store().counts()
        metric("onetap_ratings_stored", "gauge", "Ratings in the database.", [("", counts["ratings"])])
        metric("onetap_quarantine_stored", "gauge", "Quarantined messages and ratings in the database.",
               [("", counts["quarantine"])])
        metric("onetap_terminals", "gauge", "Known terminals by state.",
               [(f'{{state="{s}"}}', counts[f"terminals_{s}"]) for s in ("online", "offline", "unknown")])
        metric("onetap_broker_connected", "gauge", "1 while connected to the MQTT broker.",
               [("", 1 if link is not None and link.connected else 0)])
        if link is not None:
            c = link.counters.snapshot()
            metric("onetap_ingest_messages_total", "counter", "MQTT messages ingested.", [("", c["messages"])])
            metric("onetap_ingest_batches_total", "counter", "Rating batches ingested.", [("", c["batches"])])
            metric("onetap_ingest_ratings_total", "counter", "Ratings ingested, by result.",
                   [(f'{{result="{r}"}}', c[f"ratings_{r}"]) for r in ("accepted", "duplicate", "rejected")])
            metric("onetap_ingest_quarantined_total", "counter", "Messages and ratings quarantined.",
                   [("", c["quarantined"])])
            metric("onetap_ingest_quarantine_dropped_total", "counter",
                   "Bad messages dropped over a terminal's daily quarantine cap.",
                   [("", c["quarantine_dropped"])])
            metric("onetap_ingest_retained_refused_total", "counter",
                   "Retained messages on ratings topics, refused.", [("", c["retained_refused"])])
            metric("onetap_ingest_statuses_total", "counter", "Terminal statuses stored.", [("", c["statuses"])])
            metric("onetap_ingest_acks_total", "counter", "Acks published.", [("", c["acks"])])
            metric("onetap_ingest_store_errors_total", "counter",
                   "Commits that failed (their messages get no Ack and are resent).", [("", c["store_errors"])])
            metric("onetap_ingest_queue_depth", "gauge", "Messages received, not yet ingested.",
                   [("", link.queue_depth)])
        return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    from server.dashboard.routes import install as install_dashboard

    install_dashboard(app, config, store, store_factory, now)
    return app


#: Days the API answers about: any real question, and every date computed from them stays valid.
FIRST_DAY, LAST_DAY = date(2000, 1, 1), date(2100, 12, 31)


def _parse_date(name: str, text: str) -> date:
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise HTTPException(400, f"{name}: {text!r} is not a date (YYYY-MM-DD)") from None
    if not FIRST_DAY <= day <= LAST_DAY:
        raise HTTPException(400, f"{name}: {text!r} is not between {FIRST_DAY} and {LAST_DAY}")
    return day
