"""Dashboard users: `onetap-server user add|passwd|remove|list`, editing [users.<name>] of server.toml."""

from __future__ import annotations

import argparse
import getpass
import os
import re
import sys
from pathlib import Path
from typing import TextIO

from kiosk.protocol import is_identifier
from server.auth import hash_password
from server.errors import ServerError

DEFAULT_CONFIG = "/etc/onetap/server.toml"
#: KISA's guide for public bodies asks for at least 10 characters of two kinds,
#: or 8 of three; length is what we can check without nagging.
MIN_PASSWORD_LENGTH = 10
_NAME_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}\Z")


class UserError(ServerError, ValueError):
    """A user command cannot proceed; the message says why."""


# -- the TOML document ----------------------------------------------------------


def _tomlkit():
    try:
        import tomlkit
    except ImportError:
        raise UserError("user management needs the server's extras: pip install 'onetap[server]'") from None
    return tomlkit


def check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise UserError(f"{name!r} is not a user name (letters, digits, _ . @ -; at most 64)")
    return name


def parse_scope(sites: str | None, groups: str | None) -> dict[str, object]:
    """The scope keys of a [users.<name>] table from --sites and --groups."""
    if sites is None and groups is None:
        raise UserError('give --sites "*" (every site), --sites SITE,SITE or --groups GROUP,GROUP')
    scope: dict[str, object] = {}
    if sites is not None:
        if sites.strip() == "*":
            if groups is not None:
                raise UserError('--sites "*" already means every site; leave out --groups')
            return {"sites": "*"}
        scope["sites"] = _identifiers("--sites", sites, "site")
    if groups is not None:
        scope["groups"] = _identifiers("--groups", groups, "group")
    return scope


def _identifiers(option: str, text: str, noun: str) -> list[str]:
    """The distinct identifiers of a comma-separated option, sorted."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise UserError(f"{option} is empty")
    for name in names:
        if not is_identifier(name):
            raise UserError(f"{option}: {name!r} is not a {noun} identifier")
    return sorted(set(names))


def set_user(text: str, name: str, password_hash: str | None,
             scope: dict[str, object] | None) -> str:
    """*text* of server.toml with [users.<name>] set; every other key and comment kept.

    A None *password_hash* keeps the user's hash (scope change), a None
    *scope* keeps the user's scope (password change).
    """
    tomlkit = _tomlkit()
    document = tomlkit.parse(text)
    users = document.get("users")
    if users is None:
        users = tomlkit.table(is_super_table=True)
        document.add(tomlkit.nl())
        document.add(tomlkit.comment("Dashboard users, written by `onetap-server user`."))
        document["users"] = users
    entry = users.get(name)
    if entry is None:
        if password_hash is None or scope is None:
            raise UserError(f"no user {name!r}")
        entry = tomlkit.table()
        users[name] = entry
    if password_hash is not None:
        entry["password_hash"] = password_hash
    if scope is not None:
        for key in ("sites", "groups"):
            if key in entry and key not in scope:
                del entry[key]
        for key, value in scope.items():
            entry[key] = value
    return tomlkit.dumps(document)


def remove_user(text: str, name: str) -> str:
    tomlkit = _tomlkit()
    document = tomlkit.parse(text)
    users = document.get("users")
    if users is None or name not in users:
        raise UserError(f"no user {name!r}")
    del users[name]
    return tomlkit.dumps(document)


def list_users(text: str) -> list[tuple[str, str]]:
    """(name, scope in words) of every user, in file order; hashes never leave the file."""
    tomlkit = _tomlkit()
    users = tomlkit.parse(text).get("users") or {}
    out = []
    for name, entry in users.items():
        sites, groups = entry.get("sites"), entry.get("groups")
        parts = []
        if sites == "*":
            parts.append("every site")
        elif sites:
            parts.append("sites " + ", ".join(sites))
        if groups:
            parts.append("groups " + ", ".join(groups))
        out.append((name, "; ".join(parts) or "no site"))
    return out


# -- the file -------------------------------------------------------------------


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such config file (create it with "
                        "`onetap-server provision --service ...` first)") from None


def edit(path: Path, change) -> None:
    """Apply *change(text) -> text* to the config file, checked, atomically, keeping its mode."""
    from server.provision import check_server_config, locked_directory, write_atomic

    path = Path(path)
    with locked_directory(path):
        text = change(_read(path))
        check_server_config(text, path)
        # The file holds secrets: never wider than it was, never world-readable.
        write_atomic(path, text, 0o600, deny_other=True)


def read_password(stdin: TextIO, *, prompt=getpass.getpass) -> str:
    """The new password: asked twice on a terminal, else one line of stdin (never argv)."""
    if stdin.isatty():
        password = prompt("new password: ")
        if prompt("again: ") != password:
            raise UserError("the two passwords differ")
    else:
        password = stdin.readline().rstrip("\r\n")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    return password


def warn_without_dashboard_user(path: str | os.PathLike[str] | None, role: str | None,
                                stderr: TextIO | None = None) -> bool:
    """For `run --check-config`: say so when a server with a dashboard has no
    [users.*] (nobody could log in). True when it warned."""
    from server.config import load_config

    config = load_config(path, env=os.environ, overrides={"role": role})
    if config.role == "ingest" or config.users:
        return False
    print("onetap-server: warning: no dashboard user: nobody can log in to the dashboard; "
          f"add one with: onetap-server user add NAME --sites '*' --config {path or DEFAULT_CONFIG}",
          file=sys.stderr if stderr is None else stderr)
    return True


# -- command line ---------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Dashboard users in the [users.<name>] tables of server.toml: password hashes "
        "(argon2id) and the sites or groups each user sees. The password is asked on the "
        "terminal (or read as one line from standard input), never given on the command "
        "line. Restart the server afterwards (systemctl restart onetap-server)."
    )
    actions = parser.add_subparsers(dest="user_command", required=True, metavar="ACTION")

    def common(name: str, help_text: str, *, with_name: bool = True) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--config", metavar="FILE", default=DEFAULT_CONFIG,
                         help=f"the server's TOML config (default {DEFAULT_CONFIG})")
        if with_name:
            sub.add_argument("name", help="user name (letters, digits, _ . @ -)")
        return sub

    sub = common("add", "add a user with a password and the sites or groups it sees")
    sub.add_argument("--sites", metavar="SITES",
                         help='"*" for every site, or a comma-separated list of sites')
    sub.add_argument("--groups", metavar="GROUPS",
                     help="comma-separated site groups ([groups.<id>] in the config)")
    common("passwd", "set a user's password")
    common("remove", "remove a user")
    common("list", "list users and what they see (never their hashes)", with_name=False)


def run(args: argparse.Namespace, *, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    stdin = sys.stdin if stdin is None else stdin
    stdout = sys.stdout if stdout is None else stdout
    path = Path(args.config)
    action = args.user_command
    if action == "list":
        for name, scope in list_users(_read(path)):
            print(f"{name}\t{scope}", file=stdout)
        return 0
    name = check_name(args.name)
    if action == "remove":
        edit(path, lambda text: remove_user(text, name))
        print(f"removed user {name!r} from {path}; restart the server", file=sys.stderr)
        return 0
    if action == "passwd":
        if name not in dict(list_users(_read(path))):
            raise UserError(f"no user {name!r} in {path}")
        hashed = hash_password(read_password(stdin))
        edit(path, lambda text: set_user(text, name, hashed, None))
        print(f"new password for {name!r} in {path}; restart the server", file=sys.stderr)
        return 0
    scope = parse_scope(args.sites, args.groups)
    if name in dict(list_users(_read(path))):
        raise UserError(f"user {name!r} exists in {path}: `user passwd` changes the password, "
                        "`user remove` then `user add` the sites")
    hashed = hash_password(read_password(stdin))
    edit(path, lambda text: set_user(text, name, hashed, scope))
    print(f"user {name!r} written to {path}; restart the server", file=sys.stderr)
    return 0
