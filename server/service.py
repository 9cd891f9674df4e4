"""The running server: link, periodic jobs and HTTP app wired from one config, and `serve()`."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from server.errors import ServerError

log = logging.getLogger(__name__)

#: After SIGTERM everything is stopped within this, however wedged a thread is:
#: an orderly stop gets STOP_BUDGET_S, then the process exits regardless.
STOP_BUDGET_S = 6.0
EXIT_DEADLINE_S = 9.0

#: ONETAP_FAULT kinds: name -> (hook point, what happens when the count is reached).
FAULTS = {
    "kill-before-commit": ("before-commit", "kill"),
    "kill-after-commit": ("after-commit", "kill"),
    "stall-ingest": ("before-commit", "stall"),
    "raise-in-ingest": ("message", "raise"),
    "stall-alerts": ("onetap-alerts", "stall"),
}


def fault_from_env(spec: str | None) -> Callable[[str, int], None] | None:
    """ONETAP_FAULT=KIND:N, for end-to-end fault tests only:
    kill-before-commit:N / kill-after-commit:N SIGKILL this process just before
    the N-th ingest commit, or just after it (before its Acks go out);
    stall-ingest:N wedges the ingest worker before its N-th commit for good;
    raise-in-ingest:N raises inside ingest whenever the N-th message received
    is being ingested; stall-alerts:N wedges the alerts thread in its N-th pass."""
    if not spec:
        return None
    kind, _, number = spec.partition(":")
    if kind not in FAULTS or not number.isdigit():
        raise ServerError(f"ONETAP_FAULT {spec!r} is not one of {', '.join(f'{k}:N' for k in FAULTS)}")
    where, action = FAULTS[kind]
    n = int(number)
    log.warning("fault injection armed: %s", spec)
    wedged = threading.Event()  # never set

    def fault(point: str, count: int) -> None:
        if point != where:
            return
        if action == "kill" and count >= n:
            os.kill(os.getpid(), signal.SIGKILL)
        elif action == "stall" and count == n:
            log.warning("fault injection: %s wedged for good", threading.current_thread().name)
            wedged.wait()
        elif action == "raise" and count == n:
            raise RuntimeError(f"fault injection {spec}")

    return fault


@dataclass
class Service:
    """One server's parts, wired but not started: the MQTT link and, unless the
    role is "ingest", the periodic jobs and the HTTP app (``app``)."""

    config: Any
    store_factory: Callable[[], Any]
    supervisor: Any
    link: Any
    app: Any = None
    runners: list[Any] = field(default_factory=list)
    started: bool = False

    def start(self, *, fault: Callable[[str, int], None] | None = None) -> "Service":
        """Start the link and every periodic job under the supervisor."""
        from server.alerts import AlertRunner
        from server.retention import RetentionRunner
        from server.subscription import ReportMailer
        from server.survey import SurveyRunner

        config = self.config
        self.link.start()
        self.started = True
        if config.role == "ingest":
            return self
        stall = {"stall_s": config.thread_stall_s}
        # Alert rules and suspect flagging, every alerts.interval_s, on their own connection.
        alerts = AlertRunner(config, self.store_factory, publish=self.link.publish_retained).start(
            self.supervisor, fault=fault, **stall)
        # Retention: raw ratings older than retention_days go, the daily counts stay;
        # quarantine rows older than quarantine_days go.
        retention = (RetentionRunner(config.retention_days, config.tz, self.store_factory,
                                     quarantine_days=config.quarantine_days).start(self.supervisor, **stall)
                     if config.retention_days or config.quarantine_days else None)
        # Each terminal's survey, retained on its config topic, from [survey] and [sites.*.survey].
        surveys = SurveyRunner(config, self.store_factory, self.link).start(self.supervisor, **stall)
        # [reports.*] mailed with the PDF attached through [mail].
        mailer = (ReportMailer(config, self.store_factory).start(self.supervisor, **stall)
                  if config.reports else None)
        self.runners = [r for r in (alerts, retention, surveys, mailer) if r is not None]
        return self

    def stop(self) -> None:
        """Stop the periodic jobs and the link within STOP_BUDGET_S; a wedged thread is left behind."""
        deadline = time.monotonic() + STOP_BUDGET_S
        for runner in self.runners:
            runner.stop(timeout=0)  # asked at once, so they end while the link drains
        if self.started:
            self.link.stop(timeout=max(0.5, deadline - time.monotonic() - 2))
        for runner in self.runners:
            runner.stop(timeout=max(0.0, deadline - time.monotonic()))


def create_service(config: Any, store_factory: Callable[[], Any] | None = None, *,
                   fault: Callable[[str, int], None] | None = None) -> Service:
    """Wire a server from *config*: the database created or migrated, the link
    and (unless role is "ingest") the HTTP app; start it with ``start()``."""
    from server.backend import open_store
    from server.link import Link
    from server.supervisor import Supervisor
    from server.watchdog import starting

    if store_factory is None:
        def store_factory():
            return open_store(config.db, config.timezone)

    # Create or migrate the database before anything reads it (a migration of
    # millions of ratings takes minutes: systemd is told to wait).
    with starting("opening and migrating the database"):
        store_factory().close()
    # Every long-running thread runs under it; /healthz and the watchdog ask it.
    supervisor = Supervisor()
    link = Link(config, store_factory, fault=fault, supervisor=supervisor)
    service = Service(config, store_factory, supervisor, link)
    if config.role != "ingest":
        from server.api import create_app

        service.app = create_app(store_factory, config, link)
    return service


def serve(config: Any) -> int:
    """Run link + ingest + HTTP API until SIGTERM or Ctrl-C (by config.role: only some of them)."""
    from server.watchdog import Watchdog

    fault = fault_from_env(os.environ.get("ONETAP_FAULT"))
    if config.role == "ingest":
        service = create_service(config, fault=fault)
        return _serve_ingest(service, Watchdog(service.supervisor))
    try:
        import uvicorn
    except ImportError:
        raise ServerError("the server needs its extras: pip install 'onetap[server]'") from None
    from server.backend import describe

    main_thread = threading.current_thread() is threading.main_thread()
    deadlines: list[threading.Timer] = []

    class HttpServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame) -> None:
            # uvicorn's own SIGTERM/SIGINT handler: from here on, the clock runs.
            if main_thread and not deadlines:
                deadlines.append(exit_deadline(EXIT_DEADLINE_S))
            super().handle_exit(sig, frame)

    service = create_service(config, fault=fault).start(fault=fault)
    host, port = config.listen_address
    server = HttpServer(uvicorn.Config(service.app, host=host, port=port, log_level="warning",
                                       access_log=False, proxy_headers=True,
                                       # X-Forwarded-Proto (Secure cookies) and -For
                                       # are believed only from the reverse proxy.
                                       forwarded_allow_ips=config.forwarded_allow_ips,
                                       # Open requests (a dashboard's live view) may
                                       # not hold up a stop.
                                       timeout_graceful_shutdown=2))
    watchdog = Watchdog(service.supervisor, ready=lambda: server.started).start()
    log.info("HTTP API on http://%s:%d, broker %s, database %s, role %s", host, port, config.broker,
             describe(config.db), config.role)
    if main_thread:
        # uvicorn shuts down gracefully on SIGTERM, then re-raises it with the
        # handler it found; the default one would kill us before the finally
        # clauses below (and the demo's) stop the link, kiosk and broker.
        signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        # uvicorn handles SIGTERM and SIGINT by finishing its requests and returning.
        server.run()
    finally:
        watchdog.stopping()
        service.stop()
        for deadline in deadlines:
            deadline.cancel()  # stopped in time; what follows (the demo's clean-up) is not ours
    if not server.started:
        raise ServerError(f"could not listen on {config.listen}")
    return 0


def _serve_ingest(service: Service, watchdog: Any) -> int:
    """An ingest worker: no HTTP, until SIGTERM or Ctrl-C; then it commits what
    it holds and sends those Acks before leaving."""
    from server.backend import describe

    config = service.config
    stop = threading.Event()
    deadlines: list[threading.Timer] = []
    if threading.current_thread() is threading.main_thread():
        def on_signal(signum: int, frame) -> None:
            if not deadlines:
                deadlines.append(exit_deadline(EXIT_DEADLINE_S))
            stop.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, on_signal)
    service.start()
    watchdog.start()
    log.info("ingest worker %s: broker %s, database %s", service.link.client._client_id.decode(),
             config.broker, describe(config.db))
    try:
        while not stop.wait(1.0):
            pass
    finally:
        watchdog.stopping()
        service.stop()
        for deadline in deadlines:
            deadline.cancel()
    return 0


def exit_deadline(seconds: float) -> threading.Timer:
    """From a stop signal on, the process is gone within *seconds* (unless the
    returned timer is cancelled), even if a thread is wedged: nothing is lost
    (what was not committed was not Acked, and is resent)."""

    def expire() -> None:
        log.error("stopping took over %.0f s (a thread is wedged); exiting now", seconds)
        logging.shutdown()
        os._exit(1)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    return timer


def _exit_on_signal(signum: int, frame) -> None:
    raise SystemExit(0)
