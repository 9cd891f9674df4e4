"""The onetap-server command: `run` (ingest + HTTP API); more subcommands plug into SUBCOMMANDS."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable

from server.errors import ServerError

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
    from server.service import serve

    return serve(config)


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


def _add_pull_arguments(parser: argparse.ArgumentParser) -> None:
    from server.pull import add_arguments

    add_arguments(parser)


def _pull(args: argparse.Namespace) -> int:
    from server.pull import run

    return run(args)


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
