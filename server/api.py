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
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from pydantic import BaseModel, ConfigDict, Field

from kiosk.protocol import IDENT_PATTERN
from server import __version__, audit
from server.bounds import FIRST_DAY, LAST_DAY, BodyLimit
from server.aggregate import (AGGREGATE_KEYS, GROUP_KEY, distribution_json, parse_by, regroup, store_keys,
                              summarize)
from server.alerts import alert_json
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
    #: The audit chain as ingest verified it (docs/audit.md): ok, broken or unchained.
    chain_status: str = "unchained"
    chain_broken_seq: int | None = None
    #: Highest seq up to which every rating arrived, and the seq ranges [low, high] still missing.
    contiguous_seq: int | None = None
    missing_ranges: list[list[int]] = []
    missing_since: str | None = None
    verified_head_seq: int | None = None
    verified_head_at: str | None = None


class AlertOut(BaseModel):
    pk: int
    site: str
    terminal: str | None
    kind: str
    message: str
    raised_at: str
    cleared_at: str | None
    acked_at: str | None
    acked_by: str | None


class AlertsOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    date_from: str = Field(alias="from")
    date_to: str = Field(alias="to")
    alerts: list[AlertOut]


#: The newest alerts /api/v1/alerts looks through (alerts are few: conditions, not ratings).
ALERTS_LIMIT = 10_000


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
        group: Annotated[str | None, Query(pattern=_IDENT, description="a [groups.<id>] of the server: its sites")] = None,
        exclude_suspect: Annotated[bool, Query(
            description="leave out ratings flagged suspect (machine-pace bursts)")] = False,
    ) -> Filters:
        first, last = day_range(date_from, date_to)
        if site is not None and not who.allows(site):
            raise HTTPException(403, f"this token may not read site {site!r}")
        return Filters(first, last, site, terminal, scoped_sites(who, group), False if exclude_suspect else None)

    def day_range(date_from: str | None, date_to: str | None) -> tuple[date, date]:
        today = now().astimezone(tz).date()
        first = _parse_date("from", date_from) if date_from else today
        last = _parse_date("to", date_to) if date_to else today
        if first > last:
            raise HTTPException(400, f"from ({first}) is after to ({last})")
        return first, last

    def scoped_sites(who: Principal, group: str | None) -> frozenset[str] | None:
        """The sites a caller reads: its token's, narrowed to *group*'s if given."""
        if group is None:
            return who.sites
        if group not in config.groups:
            raise HTTPException(400, f"no group {group!r} on this server")
        members = frozenset(config.groups[group].sites)
        allowed = members if who.sites is None else who.sites & members
        if not allowed:
            raise HTTPException(403, f"this token may not read any site of group {group!r}")
        return allowed

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
        by: Annotated[str, Query(max_length=100, description=(
            f"one to three of: {', '.join(AGGREGATE_KEYS)}, {GROUP_KEY}, comma-separated; {GROUP_KEY} sums "
            "each site into every [groups.<id>] holding it (a site in none: null)"))],
    ) -> dict[str, Any]:
        try:
            keys = parse_by(by)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        found = store().aggregates(store_keys(keys), scope)
        if GROUP_KEY in keys:
            found = regroup(found, keys, {gid: g.sites for gid, g in config.groups.items()})
        rows = []
        for key, dist in found:
            rows.append({**dict(zip(keys, key)), "count": sum(dist.values()),
                         "distribution": distribution_json(dist)})
        return {"by": list(keys), "rows": rows}

    @app.get("/api/v1/alerts", response_model=AlertsOut, responses=errors, tags=["alerts"])
    def alerts(
        who: Caller,
        date_from: Annotated[str | None, Query(alias="from", pattern=_DATE_PATTERN,
                                               description="first local day raised, YYYY-MM-DD (default today)")] = None,
        date_to: Annotated[str | None, Query(alias="to", pattern=_DATE_PATTERN,
                                             description="last local day raised, inclusive (default today)")] = None,
        site: Annotated[str | None, Query(pattern=_IDENT)] = None,
        group: Annotated[str | None, Query(pattern=_IDENT)] = None,
    ) -> dict[str, Any]:
        """Alerts raised in the range (open and cleared), newest first, at most ALERTS_LIMIT."""
        first, last = day_range(date_from, date_to)
        if site is not None and not who.allows(site):
            raise HTTPException(403, f"this token may not read site {site!r}")
        allowed = scoped_sites(who, group)
        out = []
        for row in store().alerts(allowed, limit=ALERTS_LIMIT):
            raised = _local_day(row["raised_at"], tz)
            if (site is None or row["site"] == site) and raised is not None and first <= raised <= last:
                out.append(alert_json(row))
        return {"from": first.isoformat(), "to": last.isoformat(), "alerts": out}

    @app.get("/api/v1/terminals", response_model=list[TerminalOut], responses=errors, tags=["terminals"])
    def terminals(
        who: Caller,
        site: Annotated[str | None, Query(pattern=_IDENT)] = None,
    ) -> list[dict[str, Any]]:
        if site is not None and not who.allows(site):
            raise HTTPException(403, f"this token may not read site {site!r}")
        chains = {(c["site"], c["terminal"]): c for c in store().chain_states(site)}
        return [{**row, **audit.public_view(chains.get((row["site"], row["terminal"])))}
                for row in store().terminals(site, who.sites)]

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
    def metrics(who: Caller) -> Response:
        """Prometheus text. A site-scoped token gets only per-site series of its sites;
        the process-wide ones (ingest, broker, quarantine) mix every site's traffic."""
        today = now().astimezone(tz).date()
        ratings_today = GaugeMetricFamily("onetap_site_ratings_today",
                                          "Ratings stored for today (local day), by site.", labels=["site"])
        for (site,), dist in store().aggregates(("site",), Filters(today, today, sites=who.sites)):
            ratings_today.add_metric([site], sum(dist.values()))
        states: dict[tuple[str, str], int] = {}
        for term in store().terminals(sites=who.sites):
            key = (term["site"], term.get("state") or "unknown")
            states[key] = states.get(key, 0) + 1
        site_terminals = GaugeMetricFamily("onetap_site_terminals", "Known terminals by site and state.",
                                           labels=["site", "state"])
        for (site, state), n in sorted(states.items()):
            site_terminals.add_metric([site, state], n)
        families: list[Metric] = [ratings_today, site_terminals]
        if who.sites is None:
            families.extend(_process_metrics(store().counts(), link))
        return Response(_exposition(families), media_type=METRICS_MEDIA_TYPE)

    from server.dashboard.routes import install as install_dashboard

    install_dashboard(app, config, store, store_factory, now)
    return app


#: The Prometheus text format prometheus_client's generate_latest writes.
METRICS_MEDIA_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Families:
    """Metric families computed for one request, for a registry of that request only."""

    def __init__(self, families: list[Metric]):
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def _exposition(families: list[Metric]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return generate_latest(registry)


def _process_metrics(counts: dict[str, int], link: Any) -> list[Metric]:
    """The process-wide series: what is stored, the broker, and ingest's counters."""
    families: list[Metric] = [
        GaugeMetricFamily("onetap_ratings_stored", "Ratings in the database.", value=counts["ratings"]),
        GaugeMetricFamily("onetap_quarantine_stored", "Quarantined messages and ratings in the database.",
                          value=counts["quarantine"]),
        GaugeMetricFamily("onetap_rollup_queue_rows",
                          "Counts committed and not yet moved into the rollups (every query reads them too).",
                          value=counts["rollup_queue"]),
    ]
    terminals = GaugeMetricFamily("onetap_terminals", "Known terminals by state.", labels=["state"])
    for state in ("online", "offline", "unknown"):
        terminals.add_metric([state], counts[f"terminals_{state}"])
    families.append(terminals)
    families.append(GaugeMetricFamily("onetap_broker_connected", "1 while connected to the MQTT broker.",
                                      value=1 if link is not None and link.connected else 0))
    if link is None:
        return families
    c = link.counters.snapshot()
    ratings = CounterMetricFamily("onetap_ingest_ratings_total", "Ratings ingested, by result.",
                                  labels=["result"])
    for result in ("accepted", "duplicate", "rejected"):
        ratings.add_metric([result], c[f"ratings_{result}"])
    families += [
        CounterMetricFamily("onetap_ingest_messages_total", "MQTT messages ingested.", value=c["messages"]),
        CounterMetricFamily("onetap_ingest_batches_total", "Rating batches ingested.", value=c["batches"]),
        ratings,
        CounterMetricFamily("onetap_ingest_quarantined_total", "Messages and ratings quarantined.",
                            value=c["quarantined"]),
        CounterMetricFamily("onetap_ingest_quarantine_dropped_total",
                            "Bad messages dropped over a terminal's daily quarantine cap.",
                            value=c["quarantine_dropped"]),
        CounterMetricFamily("onetap_ingest_retained_refused_total",
                            "Retained messages on ratings topics, refused.", value=c["retained_refused"]),
        CounterMetricFamily("onetap_ingest_statuses_total", "Terminal statuses stored.", value=c["statuses"]),
        CounterMetricFamily("onetap_ingest_acks_total", "Acks published.", value=c["acks"]),
        CounterMetricFamily("onetap_ingest_store_errors_total",
                            "Commits that failed (their messages get no Ack and are resent).",
                            value=c["store_errors"]),
        CounterMetricFamily("onetap_ingest_roll_up_errors_total",
                            "Roll-ups of the queued counts that failed (they stay queued and counted).",
                            value=c["roll_up_errors"]),
        GaugeMetricFamily("onetap_ingest_queue_depth", "Messages received, not yet ingested.",
                          value=link.queue_depth),
    ]
    return families


#: Days the API answers about: any real question, and every date computed from them stays valid.


def _local_day(text: str | None, tz: Any) -> date | None:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).astimezone(tz).date()
    except ValueError:
        return None


def _parse_date(name: str, text: str) -> date:
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise HTTPException(400, f"{name}: {text!r} is not a date (YYYY-MM-DD)") from None
    if not FIRST_DAY <= day <= LAST_DAY:
        raise HTTPException(400, f"{name}: {text!r} is not between {FIRST_DAY} and {LAST_DAY}")
    return day
