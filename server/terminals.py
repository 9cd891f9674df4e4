"""Terminals' life cycle from the command line: `onetap-server terminal list|retire`."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

from kiosk.protocol import ProtocolError, check_identifier
from server.errors import ServerError
from server.store import Store

DEFAULT_CONFIG = "/etc/onetap/server.toml"
DEFAULT_PASSWD = "/etc/mosquitto/onetap.passwd"


class TerminalError(ServerError, ValueError):
    """A terminal command cannot proceed; the message says why."""


def board(store: Store, registry: frozenset[tuple[str, str]] | set[tuple[str, str]]) -> list[dict]:
    """Every terminal the store knows (retired ones too) and every provisioned one
    not heard from yet, by site and terminal."""
    rows = {(row["site"], row["terminal"]): row for row in store.terminals(include_retired=True)}
    for site, terminal in registry:
        rows.setdefault((site, terminal), {"site": site, "terminal": terminal,
                                           "state": "never seen", "last_seen": None,
                                           "retired_at": None})
    return [rows[key] for key in sorted(rows)]


def retire(store: Store, site: str, terminal: str, *, now: datetime, passwd_path: Path | None,
           acl_path: Path | None, force: bool = False) -> list[str]:
    """Retire one terminal: its broker account goes (so it can send nothing more),
    it leaves the board and the alert rules, and its ratings stay. Returns what was done.

    A terminal whose last status still reports unsent ratings is refused without
    *force*: those ratings would be stranded (docs/deploy.md, "Replacing a kiosk").
    """
    from server.passwd import terminal_username
    from server.provision import remove_account

    known = {(row["site"], row["terminal"]): row for row in store.terminals(include_retired=True)}
    row = known.get((site, terminal))
    backlog = (row or {}).get("backlog") or 0
    if backlog and not force and not (row or {}).get("retired_at"):
        raise TerminalError(
            f"{site}/{terminal} last reported {backlog} unsent ratings: let it drain (backlog 0 "
            "on the terminals board) or carry its outbox to its replacement; --force retires it anyway")
    done = []
    if passwd_path is None or acl_path is None:
        done.append("no `registry` (ACL file) in the config: remove its broker account by hand")
    elif remove_account(passwd_path, acl_path, terminal_username(site, terminal)):
        done.append(f"removed its broker account from {passwd_path} and {acl_path}; "
                    "reload mosquitto (systemctl reload mosquitto)")
    if store.retire_terminal(site, terminal, now):
        done.append("retired: off the terminals board and the alert rules; its ratings stay")
    else:
        done.append("was retired already")
    return done


# -- command line ---------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("List the terminals (retired ones too), or retire one: its broker "
                          "account goes, it leaves the board and the alerts, its ratings stay.")
    actions = parser.add_subparsers(dest="terminal_command", required=True, metavar="ACTION")
    for name, help_text in (("list", "every terminal: state, last seen, backlog, retired"),
                            ("retire", "retire a terminal (ratings kept)")):
        sub = actions.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--config", metavar="FILE", default=DEFAULT_CONFIG,
                         help=f"the server's TOML config (default {DEFAULT_CONFIG})")
        sub.add_argument("--db", metavar="PATH", help="database, if not the config's `db`")
        if name == "retire":
            sub.add_argument("--site", required=True, help="site identifier")
            sub.add_argument("--terminal", required=True, help="terminal identifier")
            sub.add_argument("--passwd", metavar="FILE", default=DEFAULT_PASSWD,
                             help=f"mosquitto password_file (default {DEFAULT_PASSWD}); the ACL "
                                  "file is the config's `registry`")
            sub.add_argument("--force", action="store_true",
                             help="retire even though its last status reports unsent ratings")


def run(args: argparse.Namespace, *, stdout: TextIO | None = None,
        now: datetime | None = None) -> int:
    from server.backend import open_store
    from server.config import load_config
    from server.registry import Registry

    stdout = sys.stdout if stdout is None else stdout
    config = load_config(args.config, env=os.environ, overrides={"db": args.db})
    registry = Registry(config.registry).terminals if config.registry is not None else frozenset()
    store = open_store(config.db, config.timezone)
    try:
        if args.terminal_command == "list":
            for row in board(store, registry):
                state = f"retired {row['retired_at']}" if row.get("retired_at") else row["state"]
                print(f"{row['site']}\t{row['terminal']}\t{state}\t"
                      f"last seen {row.get('last_seen') or '-'}\tbacklog {row.get('backlog', '-')}",
                      file=stdout)
            return 0
        try:
            check_identifier("site", args.site)
            check_identifier("terminal", args.terminal)
        except ProtocolError as exc:
            raise TerminalError(f"--{exc.field}: {exc.reason}") from None
        if (args.site, args.terminal) not in registry and not any(
                (row["site"], row["terminal"]) == (args.site, args.terminal)
                for row in store.terminals(include_retired=True)):
            raise TerminalError(f"no terminal {args.site}/{args.terminal} in the registry or the database")
        acl = config.registry
        passwd_path = Path(args.passwd) if acl is not None else None
        for line in retire(store, args.site, args.terminal, now=now or datetime.now(timezone.utc),
                           passwd_path=passwd_path, acl_path=acl, force=args.force):
            print(f"{args.site}/{args.terminal}: {line}", file=stdout)
        return 0
    finally:
        store.close()
