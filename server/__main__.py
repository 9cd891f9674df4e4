"""The onetap-server command: `run` (ingest + HTTP API); more subcommands plug into SUBCOMMANDS."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from typing import Callable

from server.errors import ServerError

log = logging.getLogger("server")

PROG = "onetap-server"


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML config (see deploy/server.example.toml)")
    parser.add_argument("--broker", metavar="URL", help="mqtt://host:port or mqtts://host:port")
    parser.add_argument("--db", metavar="PATH",
                        help="SQLite database file, or postgresql://user@host:5432/dbname")
    parser.add_argument("--role", choices=("all", "ingest", "api"),
                        help="all (default): ingest + HTTP API; ingest: one of several ingest"
                             " workers, no HTTP; api: HTTP API and alerts, no ingest")
    parser.add_argument("--listen", metavar="HOST:PORT", help="HTTP address (default 127.0.0.1:8080)")
    parser.add_argument("--api-token", metavar="TOKEN",
                        help="bearer token for /api/v1 (prefer ONETAP_API_TOKEN in production)")
    parser.add_argument("--check-config", action="store_true",
                        help="validate the configuration, print it and exit (0 valid, 1 not)")
    parser.add_argument("--log-level", default="INFO", type=str.upper,
                        choices=("DEBUG", "INFO", "WARNING", "ERROR"), help="default INFO")


def _run(args: argparse.Namespace) -> int:
    from server.config import load_config, secret_problems

    config = load_config(args.config, env=os.environ, overrides={
        "broker": args.broker, "db": args.db, "listen": args.listen, "api_token": args.api_token,
        "role": args.role,
    })
    problems = secret_problems(config)
    if problems:
        # A copied example or a short token would serve every site's figures to a guesser.
        raise ServerError("; ".join(problems))
    if args.check_config:
        print(f"{PROG}: configuration is valid: {config!r}")
        return 0
    if not config.api_token and config.role != "ingest":
        raise ServerError("no api_token: set it in the config, ONETAP_API_TOKEN or --api-token")
    return serve(config)


#: After SIGTERM everything is stopped within this, however wedged a thread is:
#: an orderly stop gets STOP_BUDGET_S, then the process exits regardless.
STOP_BUDGET_S = 6.0
EXIT_DEADLINE_S = 9.0


def serve(config) -> int:
    """Run link + ingest + HTTP API until SIGTERM or Ctrl-C (by config.role: only some of them)."""
    from server.backend import describe, open_store
    from server.link import Link
    from server.supervisor import Supervisor
    from server.watchdog import Watchdog

    def store_factory():
        return open_store(config.db, config.timezone)

    fault = fault_from_env(os.environ.get("ONETAP_FAULT"))
    # Every long-running thread runs under it; /healthz and the watchdog ask it.
    supervisor = Supervisor()
    if config.role == "ingest":
        store_factory().close()  # create or migrate the database before anything reads it
        return _serve_ingest(config, Link(config, store_factory, fault=fault, supervisor=supervisor),
                             Watchdog(supervisor))
    try:
        import uvicorn
    except ImportError:
        raise ServerError("the server needs its extras: pip install 'onetap[server]'") from None
    from server.alerts import AlertRunner
    from server.retention import RetentionRunner
    from server.api import create_app
    from server.subscription import ReportMailer
    from server.survey import SurveyRunner

    main_thread = threading.current_thread() is threading.main_thread()
    deadlines: list[threading.Timer] = []

    class HttpServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame) -> None:
            # uvicorn's own SIGTERM/SIGINT handler: from here on, the clock runs.
            if main_thread and not deadlines:
                deadlines.append(_exit_deadline(EXIT_DEADLINE_S))
            super().handle_exit(sig, frame)

    store_factory().close()  # create or migrate the database before anything reads it
    link = Link(config, store_factory, fault=fault, supervisor=supervisor).start()
    stall = {"stall_s": config.thread_stall_s}
    # Alert rules and suspect flagging, every alerts.interval_s, on their own connection.
    alerts = AlertRunner(config, store_factory, publish=link.publish_retained).start(
        supervisor, fault=fault, **stall)
    # Retention: raw ratings older than retention_days go, the daily counts stay;
    # quarantine rows older than quarantine_days go.
    retention = (RetentionRunner(config.retention_days, config.tz, store_factory,
                                 quarantine_days=config.quarantine_days).start(supervisor, **stall)
                 if config.retention_days or config.quarantine_days else None)
    # Each terminal's survey, retained on its config topic, from [survey] and [sites.*.survey].
    surveys = SurveyRunner(config, store_factory, link).start(supervisor, **stall)
    # [reports.*] mailed with the PDF attached through [mail].
    mailer = ReportMailer(config, store_factory).start(supervisor, **stall) if config.reports else None
    runners = [r for r in (alerts, retention, surveys, mailer) if r is not None]
    host, port = config.listen_address
    app = create_app(store_factory, config, link)
    server = HttpServer(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                       access_log=False, proxy_headers=True,
                                       # X-Forwarded-Proto (Secure cookies) and -For
                                       # are believed only from the reverse proxy.
                                       forwarded_allow_ips=config.forwarded_allow_ips,
                                       # Open requests (a dashboard's live view) may
                                       # not hold up a stop.
                                       timeout_graceful_shutdown=2))
    watchdog = Watchdog(supervisor, ready=lambda: server.started).start()
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
        _stop(link, runners)
        for deadline in deadlines:
            deadline.cancel()  # stopped in time; what follows (the demo's clean-up) is not ours
    if not server.started:
        raise ServerError(f"could not listen on {config.listen}")
    return 0


def _serve_ingest(config, link, watchdog) -> int:
    """An ingest worker: no HTTP, until SIGTERM or Ctrl-C; then it commits what
    it holds and sends those Acks before leaving."""
    from server.backend import describe

    stop = threading.Event()
    deadlines: list[threading.Timer] = []
    if threading.current_thread() is threading.main_thread():
        def on_signal(signum: int, frame) -> None:
            if not deadlines:
                deadlines.append(_exit_deadline(EXIT_DEADLINE_S))
            stop.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, on_signal)
    link.start()
    watchdog.start()
    log.info("ingest worker %s: broker %s, database %s", link.client._client_id.decode(),
             config.broker, describe(config.db))
    try:
        while not stop.wait(1.0):
            pass
    finally:
        watchdog.stopping()
        _stop(link, [])
        for deadline in deadlines:
            deadline.cancel()
    return 0


def _stop(link, runners) -> None:
    """Stop the periodic jobs and the link within STOP_BUDGET_S; a wedged thread is left behind."""
    deadline = time.monotonic() + STOP_BUDGET_S
    for runner in runners:
        runner.stop(timeout=0)  # asked at once, so they end while the link drains
    link.stop(timeout=max(0.5, deadline - time.monotonic() - 2))
    for runner in runners:
        runner.stop(timeout=max(0.0, deadline - time.monotonic()))


def _exit_deadline(seconds: float) -> threading.Timer:
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


def _add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    from server.demo import add_arguments

    add_arguments(parser)


def _demo(args: argparse.Namespace) -> int:
    from server.demo import run

    return run(args)


def _add_provision_arguments(parser: argparse.ArgumentParser) -> None:
    from server.provision import add_arguments

    add_arguments(parser)


def _provision(args: argparse.Namespace) -> int:
    from server.provision import run

    return run(args)


def _exit_on_signal(signum: int, frame) -> None:
    raise SystemExit(0)


def _add_pull_arguments(parser: argparse.ArgumentParser) -> None:
    from server.pull import add_arguments

    add_arguments(parser)


def _pull(args: argparse.Namespace) -> int:
    from server.pull import run

    return run(args)


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


def _run_and_check_users(args: argparse.Namespace) -> int:
    """`run`, and with --check-config a warning when nobody can log in to the dashboard."""
    code = _run(args)
    if code == 0 and args.check_config:
        from server.users import warn_without_dashboard_user

        warn_without_dashboard_user(args.config, args.role)
    return code


def _add_user_arguments(parser: argparse.ArgumentParser) -> None:
    from server.users import add_arguments

    add_arguments(parser)


def _user(args: argparse.Namespace) -> int:
    from server.users import run

    return run(args)


def _add_terminal_arguments(parser: argparse.ArgumentParser) -> None:
    from server.terminals import add_arguments

    add_arguments(parser)


def _terminal(args: argparse.Namespace) -> int:
    from server.terminals import run

    return run(args)


def _add_backup_arguments(parser: argparse.ArgumentParser) -> None:
    from server.backup import add_arguments

    add_arguments(parser)


def _backup(args: argparse.Namespace) -> int:
    from server.backup import run

    return run(args)


def _add_audit_arguments(parser: argparse.ArgumentParser) -> None:
    from server.audit import add_arguments

    add_arguments(parser)


def _audit(args: argparse.Namespace) -> int:
    from server.audit import run

    return run(args)


#: name -> (help, add_arguments(parser), run(args) -> exit code). Adding a
#: subcommand is one entry here plus its two functions.
SUBCOMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None],
                             Callable[[argparse.Namespace], int]]] = {
    "run": ("ingest ratings and serve the HTTP API", _add_run_arguments, _run_and_check_users),
    "demo": ("broker, server and a kiosk on this machine", _add_demo_arguments, _demo),
    "provision": ("add or rotate a broker account", _add_provision_arguments, _provision),
    "pull": ("central office: fetch and merge aggregates from many servers", _add_pull_arguments, _pull),
    "user": ("dashboard users: add, passwd, remove, list", _add_user_arguments, _user),
    "terminal": ("terminals: list, retire (ratings kept)", _add_terminal_arguments, _terminal),
    "backup": ("a consistent copy of the live database, mode 0600", _add_backup_arguments, _backup),
    "audit": ("audit chain: export a site's ratings with their proofs, verify an export",
              _add_audit_arguments, _audit),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="onetap aggregation server")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_arguments, _) in SUBCOMMANDS.items():
        add_arguments(commands.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(args, "log_level", "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return SUBCOMMANDS[args.command][2](args)
    except (ServerError, OSError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
