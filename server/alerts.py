"""Alerts: terminal state, rules and suspect-burst detection (pure), and their delivery (dashboard, webhook, MQTT)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Mapping, Sequence
from zoneinfo import ZoneInfo

from kiosk.protocol import (
    ALERT_FIELDS,
    ALERTS,
    ProtocolError,
    SiteAlerts,
    format_timestamp,
    in_time_window,
    is_open,
    parse_timestamp,
    site_topic,
)
from server.certificates import CertificateCheck
from server import audit
from server.config import AlertsConfig, ServerConfig
from server.ingest import QUARANTINE_ALERT
from server.outbound import retrying_session
from server.periodic import Periodic
from server.restarts import find_restarts
from server.store import Store

log = logging.getLogger(__name__)

#: Alerts that describe a lasting condition: raised when it starts, cleared when it ends.
CONDITION_KINDS = ("offline", "low_scores", "backlog", "clock", "certificate", "help", audit.MISSING_ALERT)
#: A terminal numbering its taps from 1 again (server/restarts.py).
SEQ_RESTART_ALERT = "seq_restart"
#: Alerts that describe an event: open until someone acknowledges them.
EVENT_KINDS = ("suspect", SEQ_RESTART_ALERT, QUARANTINE_ALERT, audit.CHAIN_ALERT, audit.SIGNATURE_ALERT,
               audit.TAMPER_ALERT)
#: Every alert kind the server raises: each needs a label and a sentence on the dashboard
#: (server/dashboard/i18n.py; its test raises one of each).
ALERT_KINDS = CONDITION_KINDS + EVENT_KINDS
#: Event alerts ingest raises itself; the engine delivers them once.
INGEST_KINDS = (QUARANTINE_ALERT, audit.CHAIN_ALERT, audit.SIGNATURE_ALERT)
_SELF_CHECK_AT = "alerts.audit_check_at"
_WATERMARK = "alerts.suspect_pk"
#: Quarantine-cap alerts are raised by ingest; the engine delivers them once.
_QUARANTINE_WATERMARK = "alerts.quarantine_pk"


def _time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return parse_timestamp("time", text)
    except ProtocolError:
        return None


# -- pure rules -------------------------------------------------------------------


def terminal_state(now: datetime, terminal: Mapping[str, Any], status_interval_s: float) -> str:
    """online, offline, stale (online but no status for over two status intervals) or unknown."""
    state = terminal.get("state", "unknown")
    if state != "online":
        return state if state in ("offline", "unknown") else "unknown"
    updated = _time(terminal.get("updated_at"))
    if updated is not None and (now - updated).total_seconds() > 2 * status_interval_s:
        return "stale"
    return "online"


@dataclass(frozen=True)
class Condition:
    site: str
    terminal: str | None
    kind: str
    message: str

    @property
    def key(self) -> tuple[str, str | None, str]:
        return (self.site, self.terminal, self.kind)


def evaluate(now: datetime, terminals: Iterable[Mapping[str, Any]], low_scores: Iterable[Mapping[str, Any]],
             rules: AlertsConfig, tz: ZoneInfo) -> list[Condition]:
    """Every alert condition true at *now*, from terminal rows and recent low scores."""
    out: list[Condition] = []
    open_now = is_open(now.astimezone(tz), rules.hours)
    for t in terminals:
        site, name = t["site"], t["terminal"]
        state = terminal_state(now, t, rules.status_interval_s)
        if state in ("offline", "stale") and open_now:
            since = _time(t.get("updated_at"))
            if since is not None and now - since >= timedelta(minutes=rules.offline_minutes):
                minutes = int((now - since).total_seconds() // 60)
                out.append(Condition(site, name, "offline",
                                     f"{site}/{name} {state} for {minutes} min during opening hours"))
        if state in ("online", "stale"):
            oldest = _time(t.get("oldest_pending_at"))
            if oldest is not None and not in_time_window(oldest, now):
                oldest = None  # converting it to local time could overflow
            backlog = t.get("backlog") or 0
            if not isinstance(backlog, int):
                backlog = 0
            if backlog > 0 and oldest is not None and now - oldest >= timedelta(minutes=rules.backlog_minutes):
                out.append(Condition(site, name, "backlog",
                                     f"{site}/{name} backlog {backlog} not draining"
                                     f" (oldest pending {format_timestamp(oldest.astimezone(tz))})"))
            if rules.clock_unsynced and t.get("clock_synced") is False:
                out.append(Condition(site, name, "clock", f"{site}/{name} clock not synchronised (NTP)"))
            if t.get("help_requested") is True:
                # The kiosk's staff-call control (clears when staff open its staff screen).
                out.append(Condition(site, name, "help", f"{site}/{name}: a citizen asks for staff help"))
    window_start = now - timedelta(minutes=rules.low_score_minutes)
    lows: dict[tuple[str, str], int] = {}
    for r in low_scores:
        at = _time(r["at"])
        if r["score"] <= rules.low_score_max and at is not None and window_start <= at <= now:
            key = (r["site"], r["terminal"])
            lows[key] = lows.get(key, 0) + 1
    for (site, name), count in sorted(lows.items()):
        if count >= rules.low_score_count:
            out.append(Condition(site, name, "low_scores",
                                 f"{site}/{name}: {count} scores <= {rules.low_score_max}"
                                 f" in the last {rules.low_score_minutes} min"))
    return out


def certificate_conditions(warnings: Sequence[str], sites: Iterable[str]) -> list[Condition]:
    """An expiring broker certificate stops every terminal: each site's staff hear of it."""
    if not warnings:
        return []
    message = "; ".join(warnings)
    return [Condition(site, None, "certificate", message) for site in sorted(sites)]


#: Ratings of one terminal the server received within this many seconds of
#: each other came in one delivery (a batch, or a burst of them).
DELIVERY_S = 10.0
#: A run of run_length equal scores delivered together whose claimed taps are
#: each under this many seconds apart is flagged, whatever the kiosk claims:
#: no service counter serves twenty people that fast.
DELIVERED_RUN_INTERVAL_S = 30.0
#: A synchronised clock does not go back a day between two taps: a rating
#: dated that much before the tap before it (in seq order) was backdated.
BACKDATED_S = 24 * 3600.0


def detect_suspects(ratings: Sequence[Mapping[str, Any]], rules: AlertsConfig) -> set[int]:
    """pks of one terminal's ratings (in seq order) that look machine-made.

    On the kiosk's claims (``at``): a chain of at least burst_count taps each
    under burst_interval_s apart, or at least run_length equal scores each
    under run_interval_s apart. A seq gap does not break a chain: missing taps
    make a claimed pace faster, not slower.

    On the server's own evidence (``received_at``, present on stored rows):

    * seq holes or repeats within one delivery: an outbox sends its ratings
      in seq order with no hole, so a chain of burst_count ratings delivered
      together whose seqs do not follow one another was made up;
    * a run of run_length equal scores delivered together (received well
      inside their claimed spacing), each claimed under
      DELIVERED_RUN_INTERVAL_S apart: spacing invented to stay under
      run_interval_s does not hide what arrived at once;
    * a rating with a synchronised clock dated over BACKDATED_S before the
      rating before it in seq order: taps are numbered as they happen, so a
      later seq dated a month earlier was backdated (to land on a past day).

    A rating whose ``at`` was outside the time window (clock_suspect) is timed
    by its receipt.
    """
    received = [_time(r.get("received_at")) for r in ratings]
    times = [received[i] if r.get("clock_suspect") else _time(r["at"]) for i, r in enumerate(ratings)]
    suspects: set[int] = set()

    def chains(linked: Callable[[int], bool], minimum: int) -> None:
        start = 0
        for i in range(1, len(ratings) + 1):
            if i < len(ratings) and linked(i):
                continue
            if i - start >= minimum:
                suspects.update(r["pk"] for r in ratings[start:i])
            start = i

    def gap(i: int) -> float | None:
        if times[i] is None or times[i - 1] is None:
            return None
        return (times[i] - times[i - 1]).total_seconds()

    def received_gap(i: int) -> float | None:
        if received[i] is None or received[i - 1] is None:
            return None
        return abs((received[i] - received[i - 1]).total_seconds())

    def together(i: int) -> bool:
        r = received_gap(i)
        return r is not None and r <= DELIVERY_S

    def same_score(i: int) -> bool:
        return ratings[i]["score"] == ratings[i - 1]["score"]

    def fast(i: int) -> bool:
        g = gap(i)
        return g is not None and 0 <= g < rules.burst_interval_s

    def same_and_quick(i: int) -> bool:
        g = gap(i)
        return g is not None and 0 <= g < rules.run_interval_s and same_score(i)

    def out_of_sequence(i: int) -> bool:
        return ratings[i]["seq"] != ratings[i - 1]["seq"] + 1 and together(i)

    def delivered_run(i: int) -> bool:
        # Delivered together: received well inside the claimed spacing (a live
        # kiosk's taps arrive as far apart as they were made).
        g, r = gap(i), received_gap(i)
        return (g is not None and r is not None and 0 <= g < DELIVERED_RUN_INTERVAL_S
                and r <= DELIVERY_S and 2 * r <= g and same_score(i))

    chains(fast, rules.burst_count)
    chains(same_and_quick, rules.run_length)
    chains(out_of_sequence, rules.burst_count)
    chains(delivered_run, rules.run_length)
    for i in range(1, len(ratings)):
        g = gap(i)
        if (g is not None and g < -BACKDATED_S and ratings[i].get("clock_synced", True)
                and not ratings[i].get("clock_suspect")):
            suspects.add(ratings[i]["pk"])
    return suspects


# -- delivery ---------------------------------------------------------------------


def post_webhook(session: Any, url: str, body: Mapping[str, Any], *, timeout: float) -> bool:
    """POST *body* as JSON through *session* (a retrying_session, which retries connection
    errors and 5xx/429 with back-off). True if delivered."""
    import requests

    try:
        response = session.post(url, json=body, timeout=timeout)
    except requests.RequestException as exc:
        log.error("webhook %s: alert not delivered: %s", url, exc)
        return False
    if response.status_code < 300:
        return True
    log.error("webhook %s: alert not delivered: HTTP %d", url, response.status_code)
    return False


def alert_json(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: row.get(k) for k in ALERT_FIELDS}


class AlertEngine:
    """One evaluation pass on one store: flag suspects, reconcile alerts, deliver changes.

    *publish(topic, payload)* sends a retained MQTT message (Link.publish_retained);
    the webhook goes through *session* (a requests.Session).
    """

    def __init__(self, store: Store, config: ServerConfig, *,
                 publish: Callable[[str, bytes], Any] | None = None, session: Any = None):
        self.store = store
        self.config = config
        self.rules = config.alerts
        self.publish = publish if self.rules.mqtt else None
        self.certificates = CertificateCheck(config)
        if session is None and self.rules.webhook_url:
            session = retrying_session(retries=self.rules.webhook_retries, methods=("POST",),
                                       user_agent="onetap-alerts")
        self.session = session

    def flag_suspects(self) -> int:
        """Check ratings stored since the last pass; returns how many were newly flagged."""
        rules = self.rules
        watermark = int(self.store.get_meta(_WATERMARK, "0"))
        fresh = self.store.ratings_after(watermark)
        if not fresh:
            return 0
        by_terminal: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
        for r in fresh:
            by_terminal.setdefault((r["site"], r["terminal"]), []).append(r)
        # A chain may have begun before the last pass: look back one chain length.
        reach = max(rules.run_length, rules.burst_count)
        flagged_by_terminal: dict[tuple[str, str], int] = {}
        for (site, terminal), arrived in by_terminal.items():
            low = min(r["seq"] for r in arrived)
            high = max(r["seq"] for r in arrived)
            # Made-up seqs (1 and 2**63 - 1) must not make us read a terminal's
            # whole history: at most a few times what arrived, plus what arrived.
            limit = 4 * (len(arrived) + reach)
            rows = self.store.terminal_ratings(site, terminal, low - reach, high, limit=limit)
            if len(rows) >= limit:
                merged = {r["pk"]: r for r in rows}
                merged.update((r["pk"], r) for r in arrived)
                rows = sorted(merged.values(), key=lambda r: (r["seq"], r["pk"]))
            already = {r["pk"] for r in rows if r["suspect"]}
            pks = [pk for pk in detect_suspects(rows, rules) if pk not in already]
            if pks:
                flagged_by_terminal[site, terminal] = self.store.mark_suspect(sorted(pks))
        self.store.set_meta(_WATERMARK, str(fresh[-1]["pk"]))
        self._suspect_alerts = flagged_by_terminal
        return sum(flagged_by_terminal.values())

    def run_once(self, now: datetime) -> dict[str, list[dict[str, Any]]]:
        """Evaluate at *now*; returns the alerts raised and cleared in this pass."""
        self._suspect_alerts = {}
        self.flag_suspects()
        tz = self.config.tz
        since = (now - timedelta(minutes=self.rules.low_score_minutes)).astimezone(tz).date() - timedelta(days=1)
        conditions = evaluate(now, self.store.terminals(),
                              self.store.low_scores_since(since.isoformat(), self.rules.low_score_max),
                              self.rules, tz)
        conditions += [Condition(site, terminal, audit.MISSING_ALERT, message)
                       for site, terminal, message in audit.missing_conditions(
                           now, self.store.chain_states(), self.rules.missing_minutes)]
        conditions += certificate_conditions(self.certificates.warnings(now),
                                             {t["site"] for t in self.store.terminals()})
        current = {c.key: c for c in conditions}
        open_rows = self.store.open_alerts()
        open_keys = {(r["site"], r["terminal"], r["kind"]): r for r in open_rows}
        raised, cleared = [], []
        for key, condition in current.items():
            if key not in open_keys:
                pk = self.store.raise_alert(condition.site, condition.terminal, condition.kind,
                                            condition.message, now)
                raised.append(pk)
        for key, row in open_keys.items():
            if row["kind"] in CONDITION_KINDS and key not in current:
                self.store.clear_alert(row["pk"], now)
                cleared.append(row["pk"])
        for (site, terminal), count in self._suspect_alerts.items():
            raised.append(self.store.raise_alert(
                site, terminal, "suspect",
                f"{site}/{terminal}: {count} ratings at machine pace flagged suspect (kept, excludable)", now))
        for (site, terminal), starts in find_restarts(self.store).items():
            raised.append(self.store.raise_alert(
                site, terminal, SEQ_RESTART_ALERT,
                f"{site}/{terminal}: numbering began again at 1 ({starts} times in all): "
                "a kiosk replaced without its outbox? (ratings kept)", now))
        raised.extend(self.self_check(now))
        delivered = int(self.store.get_meta(_QUARANTINE_WATERMARK, "0"))
        from_ingest = [r["pk"] for r in open_rows if r["kind"] in INGEST_KINDS and r["pk"] > delivered]
        if from_ingest:
            raised.extend(from_ingest)
            self.store.set_meta(_QUARANTINE_WATERMARK, str(max(from_ingest)))
        by_pk = {r["pk"]: r for r in self.store.alerts(limit=100_000)} if raised or cleared else {}
        changes = {"raised": [alert_json(by_pk[pk]) for pk in raised],
                   "cleared": [alert_json(by_pk[pk]) for pk in cleared]}
        self.deliver(changes)
        return changes

    def self_check(self, now: datetime) -> list[int]:
        """Every audit_check_minutes, re-verify the stored chains; a "tamper" alert per terminal
        whose stored ratings no longer verify (changed in the database). Returns alerts raised."""
        minutes = self.rules.audit_check_minutes
        if minutes <= 0:
            return []
        last = _time(self.store.get_meta(_SELF_CHECK_AT))
        if last is not None and (now - last).total_seconds() < minutes * 60:
            return []
        self.store.set_meta(_SELF_CHECK_AT, format_timestamp(now))
        registry = self.config.registry
        keys = audit.PublicKeysFor(registry)
        by_terminal: dict[tuple[str, str], list[audit.Finding]] = {}
        for finding in audit.self_check(self.store, keys.get):
            by_terminal.setdefault((finding.site, finding.terminal), []).append(finding)
        open_tamper = {(r["site"], r["terminal"]) for r in self.store.open_alerts()
                       if r["kind"] == audit.TAMPER_ALERT}
        raised = []
        for (site, terminal), findings in sorted(by_terminal.items()):
            if (site, terminal) in open_tamper:
                continue
            shown = "; ".join(str(f) for f in findings[:5])
            more = f" (and {len(findings) - 5} more)" if len(findings) > 5 else ""
            log.error("audit self-check: %s", shown)
            raised.append(self.store.raise_alert(
                site, terminal, audit.TAMPER_ALERT,
                f"stored ratings no longer verify: {shown}{more}", now))
        return raised

    def deliver(self, changes: Mapping[str, list[dict[str, Any]]]) -> None:
        if self.session is not None and self.rules.webhook_url:
            for event in ("raised", "cleared"):
                for alert in changes[event]:
                    post_webhook(self.session, self.rules.webhook_url,
                                 {"v": 1, "event": event, "alert": alert},
                                 timeout=self.rules.webhook_timeout_s)
        if self.publish is not None:
            sites = {a["site"] for event in changes.values() for a in event}
            if sites:
                self.publish_sites(sites)

    def publish_sites(self, sites: Iterable[str]) -> None:
        """Each site's open alerts, retained on onetap/v1/{site}/alerts."""
        open_rows = self.store.open_alerts()
        for site in sorted(sites):
            message = SiteAlerts(site, tuple(r for r in open_rows if r["site"] == site))
            try:
                self.publish(site_topic(site, ALERTS), message.encode())
            except Exception as exc:  # the broker side must not stop the evaluation loop
                log.error("could not publish alerts of %s: %s", site, exc)


class AlertRunner(Periodic):
    """Runs an AlertEngine every alerts.interval_s."""

    name = "onetap-alerts"

    def __init__(self, config: ServerConfig, store_factory: Callable[[], Store], *,
                 publish: Callable[[str, bytes], Any] | None = None,
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)):
        super().__init__(store_factory, config.alerts.interval_s)
        self.config = config
        self.publish = publish
        self.now = now
        self._engines: dict[int, AlertEngine] = {}

    def tick(self, store: Store) -> None:
        engine = self._engines.get(id(store))
        if engine is None:
            engine = self._engines[id(store)] = AlertEngine(store, self.config, publish=self.publish)
        engine.run_once(self.now())
