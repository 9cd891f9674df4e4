"""Provisioning: broker accounts and ACL rules for terminals and the server, and their TOML."""

from __future__ import annotations

import argparse
import base64
import fcntl
import logging
import os
import pwd
import secrets
import sys
import tempfile
import tomllib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import tomlkit
from tomlkit.exceptions import ParseError
from tomlkit.items import Table

from kiosk.protocol import (
    ProtocolError,
    broker_security_problem,
    check_identifier,
    default_chain_seed,
    hash_pin,
    parse_broker_url,
)
from server import passwd
from server.registry import keys_dir, public_key_path
from server.errors import ServerError

log = logging.getLogger(__name__)

#: The user mosquitto 2 drops to before it reads its password and ACL files.
BROKER_USER = "mosquitto"
DEFAULT_SERVICE_BROKER = "mqtt://127.0.0.1:1883"



class ProvisionError(ServerError, ValueError):
    """Provisioning cannot proceed; the message says which input or file is wrong."""


@dataclass(frozen=True)
class Account:
    """A provisioned broker account and the config file written for it."""

    username: str
    password: str
    config_path: Path
    #: A terminal's maintenance PIN, written into its kiosk.toml and shown once.
    pin: str | None = None


#: Digits of a terminal's maintenance PIN: 10**6 guesses at the kiosk's screen,
#: which locks out after a few wrong tries.
PIN_DIGITS = 6


def new_pin() -> str:
    """A random maintenance PIN (never the kiosk's default 0000)."""
    while True:
        pin = "".join(secrets.choice("0123456789") for _ in range(PIN_DIGITS))
        if len(set(pin)) > 1:  # not 000000, 111111...: the first thing tried
            return pin


def remove_account(passwd_path: Path, acl_path: Path, username: str) -> bool:
    """Delete a broker account from the password and ACL files (reload mosquitto
    afterwards); False when neither file had it."""
    passwd_path, acl_path = Path(passwd_path), Path(acl_path)
    with locked_directory(passwd_path):
        old_passwd, old_acl = _read(passwd_path), _read(acl_path)
        new_passwd = passwd.remove_entry(old_passwd, username)
        new_acl = passwd.remove_acl_block(old_acl, username)
        if new_passwd != old_passwd:
            write_atomic(passwd_path, new_passwd, 0o600, deny_other=True)
        if new_acl != old_acl:
            write_atomic(acl_path, new_acl, 0o644)
    return new_passwd != old_passwd or new_acl != old_acl


# -- files --------------------------------------------------------------------


@contextmanager
def locked_directory(path: Path) -> Iterator[None]:
    """One writer at a time for the files in *path*'s directory.

    Files are replaced by rename, so a lock on a file's inode would not
    exclude the next writer; a lock on the directory does, and leaves no
    lock file behind.
    """
    fd = os.open(Path(path).parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _broker_owner() -> tuple[int, int] | None:
    """Owner for new broker files: mosquitto reads them after dropping root."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(BROKER_USER)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    except UnicodeDecodeError as exc:
        raise ProvisionError(f"{path}: not UTF-8 text ({exc.reason})") from None


def write_atomic(path: Path, text: str, mode: int, *,
                 new_owner: tuple[int, int] | None = None,
                 keep_mode: bool = True, deny_other: bool = False) -> None:
    """Replace *path* with *text* by write-to-temp, fsync and rename.

    An existing file keeps its owner and group (mosquitto must still read it)
    and, if *keep_mode*, its permission bits; a new file gets *mode* and
    *new_owner*. *deny_other* strips the world bits whatever the old mode.
    """
    try:
        old = os.stat(path)
    except FileNotFoundError:
        old = None
    if old is not None:
        owner: tuple[int, int] | None = (old.st_uid, old.st_gid)
        if keep_mode:
            mode = old.st_mode & 0o777
    else:
        owner = new_owner
    if deny_other:
        mode &= ~0o007
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        if owner is not None and owner != (os.geteuid(), os.getegid()):
            try:
                os.fchown(fd, *owner)
            except PermissionError:
                raise ProvisionError(
                    f"{path}: cannot keep its owner uid={owner[0]} gid={owner[1]}; "
                    "run provision as root or as the file's owner"
                ) from None
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            fd = -1
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if fd != -1:
            os.close(fd)
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _document(header: Sequence[str], items: Sequence[tuple[str, str]],
              tables: Sequence[tuple[str, Sequence[tuple[str, str]]]] = ()) -> tomlkit.TOMLDocument:
    """A new TOML document: *header* comments, top-level *items*, then *tables*."""
    document = tomlkit.document()
    for line in header:
        document.add(tomlkit.comment(line))
    for key, value in items:
        document[key] = value
    for name, table_items in tables:
        document[name] = _table(table_items)
    return document


def _table(items: Sequence[tuple[str, str]]) -> Table:
    table = tomlkit.table()
    for key, value in items:
        table[key] = value
    return table


# -- inputs -------------------------------------------------------------------


def check_broker_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an `mqtt://host[:port]` or `mqtts://host[:port]` URL."""
    try:
        return parse_broker_url(url)
    except ValueError as exc:
        raise ProvisionError(f"--broker {exc}") from None


def _check_tls(url: str, ca_file: str | None) -> list[tuple[str, str]]:
    check_broker_url(url)
    # The kiosk's and the server's own rule (kiosk.protocol), said in flags.
    problem = broker_security_problem(url, ca_file=ca_file)
    if problem is not None and problem[0] == "broker":
        # The kiosk refuses it unless its kiosk.toml says allow_plain_remote.
        log.warning("%s %s; prefer mqtts:// with --ca-file", url, problem[1])
    elif problem is not None:
        raise ProvisionError(f"--ca-file {problem[1]}")
    if ca_file is None:
        return []
    try:
        text = Path(ca_file).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProvisionError(f"--ca-file {ca_file}: cannot read it ({exc})") from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ProvisionError(f"--ca-file {ca_file}: not a PEM certificate")
    return [("ca_file", str(Path(ca_file).absolute()))]


def _prepare_out(out_dir: Path) -> None:
    try:
        out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ProvisionError(f"--out {out_dir}: cannot create it ({exc})") from None
    if not out_dir.is_dir():
        raise ProvisionError(f"--out {out_dir}: not a directory")


def _parent_exists(option: str, path: Path) -> None:
    if not path.parent.is_dir():
        raise ProvisionError(f"{option} {path}: directory {path.parent} does not exist")


# -- provisioning -------------------------------------------------------------


def _add_account(passwd_path: Path, acl_path: Path, username: str, rules: Sequence[str],
                 comment: str, password: str) -> None:
    owner = _broker_owner()
    hashed = passwd.hash_password(password)
    write_atomic(passwd_path, passwd.set_entry(_read(passwd_path), username, hashed),
                 0o600, new_owner=owner, deny_other=True)
    # 0644: the ACL holds no secret, and the server reads it as its registry.
    write_atomic(acl_path, passwd.set_acl_block(_read(acl_path), username, rules, comment),
                 0o644, new_owner=owner)


def _checked_paths(broker: str, ca_file: str | None, passwd_path: Path, acl_path: Path,
                   out_dir: Path) -> tuple[list[tuple[str, str]], Path, Path, Path]:
    """The TLS keys for the config, and the three paths, each checked before anything is written."""
    tls = _check_tls(broker, ca_file)
    passwd_path, acl_path, out_dir = Path(passwd_path), Path(acl_path), Path(out_dir)
    _parent_exists("--passwd", passwd_path)
    _parent_exists("--acl", acl_path)
    _prepare_out(out_dir)
    return tls, passwd_path, acl_path, out_dir


# -- audit keys ------------------------------------------------------------------
#
# Each terminal gets an Ed25519 key pair at provisioning (docs/audit.md): the
# private key beside its kiosk.toml (0600), the public key in the server's
# registry as keys/{site}/{terminal}.pub next to the ACL file: one line, the
# 32 raw bytes in base64. Provisioning again makes a new pair (and so a new
# chain seed): the old key stops verifying at once.

KEY_FILE = "audit.key"


def _new_terminal_key(out_dir: Path, acl_path: Path, site: str, terminal: str) -> list[tuple[str, str]]:
    """Write a new key pair for the terminal; return its kiosk.toml [audit] items."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode("ascii")
    public_raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    key_path = out_dir / KEY_FILE
    write_atomic(key_path, private_pem, 0o600, keep_mode=False)
    pub_path = public_key_path(keys_dir(acl_path), site, terminal)
    try:
        pub_path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    except OSError as exc:
        raise ProvisionError(f"{pub_path.parent}: cannot create it ({exc})") from None
    # 0644: a public key is no secret, and the server reads it.
    write_atomic(pub_path, base64.b64encode(public_raw).decode("ascii") + "\n", 0o644, keep_mode=False)
    # Relative: beside kiosk.toml wherever the two are installed (docs/deploy.md).
    return [("key_file", KEY_FILE),
            ("chain_seed", default_chain_seed(site, terminal, public_raw))]


def provision_terminal(site: str, terminal: str, broker: str, passwd_path: Path,
                       acl_path: Path, out_dir: Path, ca_file: str | None = None,
                       password: str | None = None) -> Account:
    """Add or rotate one terminal's account; write `out_dir/kiosk.toml` (0600).

    Returns the account; its password appears nowhere else in clear.
    """
    try:
        username = passwd.terminal_username(site, terminal)
    except ProtocolError as exc:
        raise ProvisionError(f"--{exc.field}: {exc.reason}") from None
    tls, passwd_path, acl_path, out_dir = _checked_paths(broker, ca_file, passwd_path,
                                                         acl_path, out_dir)
    password = password or passwd.new_password()
    pin = new_pin()
    config_path = out_dir / "kiosk.toml"
    document = _document(
        [f"onetap kiosk {site}/{terminal}, written by `onetap-server provision`.",
         "Secret (broker password): keep it mode 0600, readable by root only."],
        # The shape of kiosk/config.py: identity and broker on top, account in [mqtt].
        [("site", site), ("terminal", terminal), ("broker", broker)],
        [("mqtt", [("username", username), ("password", password), *tls]),
         # The maintenance screen's PIN: random per terminal, shown once by
         # `provision`, never the default 0000; only its hash is kept.
         ("ui", [("maintenance_pin", hash_pin(pin))])],
    )
    with locked_directory(passwd_path):
        document["audit"] = _table(_new_terminal_key(out_dir, acl_path, site, terminal))
        _add_account(passwd_path, acl_path, username, passwd.terminal_rules(site, terminal),
                     f"terminal site={site} terminal={terminal}", password)
        write_atomic(config_path, tomlkit.dumps(document), 0o600, keep_mode=False)
    return Account(username, password, config_path, pin)


def provision_service(name: str, passwd_path: Path, acl_path: Path, out_dir: Path,
                      broker: str | None = None, ca_file: str | None = None,
                      password: str | None = None) -> Account:
    """Add or rotate the server's own account in `out_dir/server.toml` (0600).

    Only what was asked changes: username, password, client_id and registry
    always; broker and ca_file when given (a new file gets the default broker).
    Every other key, table and comment of an existing server.toml is kept, and
    the result must still load as the server's config, or nothing is written.
    The running server reads its config once: restart it after a rotation
    (docs/deploy.md, "Rotating the server's broker password").
    """
    try:
        check_identifier("service", name)
    except ProtocolError as exc:
        raise ProvisionError(f"--{exc.field}: {exc.reason}") from None
    config_path = Path(out_dir) / "server.toml"
    old = _read(config_path)
    try:
        current = tomllib.loads(old)
    except tomllib.TOMLDecodeError as exc:
        raise ProvisionError(f"{config_path}: not valid TOML ({exc}); fix it first") from None
    effective_broker = broker or current.get("broker") or DEFAULT_SERVICE_BROKER
    if not isinstance(effective_broker, str):
        raise ProvisionError(f"{config_path}: broker must be a string")
    tls, passwd_path, acl_path, out_dir = _checked_paths(effective_broker, ca_file, passwd_path,
                                                         acl_path, out_dir)
    password = password or passwd.new_password()
    # With use_username_as_clientid the broker uses the username anyway;
    # saying so keeps the persistent session's id the same everywhere.
    items = [("username", name), ("password", password), ("client_id", name), *tls,
             # The ACL file is the registry of terminals the server accepts.
             ("registry", str(acl_path.absolute()))]
    if broker is not None or "broker" not in current:
        items.insert(0, ("broker", effective_broker))
    with locked_directory(passwd_path):
        old = _read(config_path)
        if old.strip():
            # tomlkit edits in place: the operator's other keys, tables and
            # comments stay; a missing key goes before the first table.
            try:
                document = tomlkit.parse(old)
            except ParseError as exc:
                raise ProvisionError(f"{config_path}: not valid TOML ({exc}); fix it first") from None
            for key, value in items:
                document[key] = value
        else:
            document = _document(
                [f"onetap server broker account {name!r}, written by "
                 "`onetap-server provision`; other keys: deploy/server.example.toml.",
                 "Secret (broker password): keep it mode 0600, readable by root only."],
                items)
        text = tomlkit.dumps(document)
        check_server_config(text, config_path)
        _add_account(passwd_path, acl_path, name, passwd.service_rules(),
                     f"service name={name}", password)
        write_atomic(config_path, text, 0o600, keep_mode=False)
    return Account(name, password, config_path)


def check_server_config(text: str, config_path: Path) -> None:
    """ProvisionError unless *text*, meant for *config_path*, loads as the server's
    config (checked from a private temporary file beside it): a tool that edits
    server.toml never leaves a server that will not start."""
    from server.config import load_config
    from server.errors import ConfigError

    fd, tmp = tempfile.mkstemp(dir=config_path.parent, prefix=f".{config_path.name}.",
                               suffix=".check")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        load_config(tmp, env={})
    except ConfigError as exc:
        raise ProvisionError(f"{config_path} would not be valid, nothing written: "
                             f"{str(exc).replace(tmp, str(config_path))}") from None
    finally:
        os.unlink(tmp)


# -- command line -------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add `onetap-server provision`'s options to *parser*."""
    parser.description = (
        "Add or rotate a broker account: a terminal's (--site S --terminal T) or the "
        "server's (--service NAME). Updates the mosquitto password and ACL files "
        "(created when missing) and writes DIR/kiosk.toml or DIR/server.toml (mode 0600). "
        "Reload mosquitto afterwards (systemctl reload mosquitto, i.e. SIGHUP)."
    )
    parser.add_argument("--site", help="site identifier of the terminal")
    parser.add_argument("--terminal", help="terminal identifier within the site")
    parser.add_argument("--service", metavar="NAME", help="the server's account name")
    parser.add_argument("--broker", metavar="URL",
                        help="mqtt://host:port or mqtts://host:port the client will use "
                             "(required for a terminal; a service keeps the broker of its "
                             f"server.toml, else {DEFAULT_SERVICE_BROKER})")
    parser.add_argument("--passwd", metavar="FILE", required=True,
                        help="mosquitto password_file")
    parser.add_argument("--acl", metavar="FILE", required=True, help="mosquitto acl_file")
    parser.add_argument("--out", metavar="DIR", required=True,
                        help="directory for kiosk.toml or server.toml")
    parser.add_argument("--ca-file", metavar="FILE",
                        help="CA certificate (PEM) that signed the broker's certificate, "
                             "for mqtts://; its absolute path is written to the config")


def run(args: argparse.Namespace) -> int:
    """Carry out `onetap-server provision`; 0 on success, 1 with a message on stderr."""
    try:
        account = _run(args)
    except (ProvisionError, passwd.PasswordFileError) as exc:
        print(f"onetap-server: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"onetap-server: error: {exc}", file=sys.stderr)
        return 1
    then = ("now reload mosquitto, then restart the server: systemctl reload mosquitto && "
            "systemctl restart onetap-server" if args.service is not None else
            "now reload mosquitto (systemctl reload mosquitto) and copy the file to the kiosk")
    print(f"provisioned broker account {account.username!r}; wrote {account.config_path}; "
          f"{then}", file=sys.stderr)
    if account.pin is not None:
        print(f"maintenance PIN of {args.site}/{args.terminal}: {account.pin} (shown this once; "
              "give it to the staff who look after this kiosk)", file=sys.stderr)
    print(account.config_path)
    return 0


def _run(args: argparse.Namespace) -> Account:
    terminal_given = args.site is not None or args.terminal is not None
    if args.service is not None and terminal_given:
        raise ProvisionError("give either --service NAME or --site S --terminal T, not both")
    if args.service is not None:
        return provision_service(args.service, Path(args.passwd), Path(args.acl),
                                 Path(args.out), broker=args.broker, ca_file=args.ca_file)
    if args.site is None or args.terminal is None:
        raise ProvisionError("a terminal needs both --site and --terminal "
                             "(or give --service NAME for the server's account)")
    if args.broker is None:
        raise ProvisionError("a terminal needs --broker URL (the address it will dial)")
    return provision_terminal(args.site, args.terminal, args.broker, Path(args.passwd),
                              Path(args.acl), Path(args.out), ca_file=args.ca_file)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m server.provision ...`: the same as `onetap-server provision ...`."""
    parser = argparse.ArgumentParser(prog="onetap-server provision")
    add_arguments(parser)
    logging.basicConfig(level=logging.WARNING, format="onetap-server: %(levelname)s: %(message)s")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
