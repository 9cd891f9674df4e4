"""Mosquitto 2 password and ACL files: hashing, onetap's accounts and rules, line-preserving edits."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path
from typing import Sequence

from kiosk.protocol import IDENT_PATTERN, TOPIC_ROOT, check_identifier

# mosquitto_passwd 2.0 writes `user:$7$<iterations>$<b64 salt>$<b64 hash>`,
# where $7$ is PBKDF2-HMAC-SHA512 over a 12-byte salt with a 64-byte key.
# 101 iterations is mosquitto's own default; the broker reads the count from
# each line, so a larger one also works but costs CPU on every CONNECT.
PBKDF2_ID = "7"
ITERATIONS = 101
SALT_BYTES = 12
HASH_BYTES = 64

# `terminal@site`: '@' never occurs in an identifier, so the split is
# unambiguous and no terminal name can equal a service name (an identifier).
_TERMINAL_USER_RE = re.compile(rf"\A({IDENT_PATTERN})@({IDENT_PATTERN})\Z")
_MARK = "# onetap:"


class PasswordFileError(ValueError):
    """A password-file line or username is not usable by mosquitto."""


def check_username(username: str) -> str:
    """Return *username* if mosquitto can store and match it, else raise PasswordFileError."""
    if not username:
        raise PasswordFileError("username must not be empty")
    # ':' ends the username on a password-file line; whitespace and '#' would
    # be trimmed or taken as a comment on an ACL `user` line.
    bad = sorted({ch for ch in username if ch in ":#" or ch.isspace() or ord(ch) < 32})
    if bad:
        raise PasswordFileError(f"username {username!r} contains {''.join(bad)!r}")
    return username


def hash_password(password: str, *, salt: bytes | None = None,
                  iterations: int = ITERATIONS) -> str:
    """The `$7$...` hash mosquitto 2 stores for *password* (a fresh salt unless given)."""
    if salt is None:
        salt = secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations,
                                 HASH_BYTES)
    return "${}${}${}${}".format(
        PBKDF2_ID, iterations,
        base64.b64encode(salt).decode("ascii"),
        base64.b64encode(digest).decode("ascii"),
    )


def verify_password(password: str, hashed: str) -> bool:
    """Whether *password* matches a `$7$` hash as mosquitto would judge it."""
    parts = hashed.split("$")
    if len(parts) != 5 or parts[0] != "" or parts[1] != PBKDF2_ID:
        raise PasswordFileError(f"not a mosquitto $7$ hash: {hashed[:12]!r}...")
    try:
        iterations = int(parts[2])
        salt = base64.b64decode(parts[3], validate=True)
        expected = base64.b64decode(parts[4], validate=True)
    except ValueError as exc:
        raise PasswordFileError(f"malformed $7$ hash ({exc})") from None
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations,
                                 len(expected))
    return hmac.compare_digest(digest, expected)


def new_secret(nbytes: int) -> str:
    """A random secret of *nbytes* bytes in URL-safe characters, never starting with "-":
    a command line (`--password …`, `--token …`, an operator's shell) would take it for
    an option."""
    while True:
        secret = secrets.token_urlsafe(nbytes)
        if not secret.startswith("-"):
            return secret


def new_password() -> str:
    """A random password for a machine account (192 bits)."""
    return new_secret(24)


def entry_user(line: str) -> str | None:
    """The username a password-file line defines, or None for blanks and comments."""
    stripped = line.strip()
    if not stripped or stripped.startswith("#") or ":" not in stripped:
        return None
    return stripped.split(":", 1)[0]


def set_entry(text: str, username: str, hashed: str) -> str:
    """*text* of a password file with *username*'s line set to *hashed*.

    An existing line for the user is replaced in place (rotation); every other
    line, comments included, is kept byte for byte. A new user is appended.
    """
    check_username(username)
    new_line = f"{username}:{hashed}\n"
    lines = text.splitlines(keepends=True)
    replaced = False
    out = []
    for line in lines:
        if entry_user(line) == username:
            if not replaced:
                out.append(new_line)
                replaced = True
            # A duplicate line for the same user would shadow the rotation
            # depending on mosquitto's lookup order: drop it.
            continue
        out.append(line)
    if not replaced:
        if out and not out[-1].endswith("\n"):
            out[-1] += "\n"
        out.append(new_line)
    return "".join(out)


def remove_entry(text: str, username: str) -> str:
    """*text* of a password file without *username*'s line(s); every other line kept."""
    return "".join(line for line in text.splitlines(keepends=True) if entry_user(line) != username)


def users(text: str) -> list[str]:
    """Usernames defined in a password file's *text*, in file order."""
    return [user for line in text.splitlines() if (user := entry_user(line)) is not None]


# -- names and rules ----------------------------------------------------------


def terminal_username(site: str, terminal: str) -> str:
    """The broker username (and, with use_username_as_clientid, client id) of a terminal."""
    check_identifier("site", site)
    check_identifier("terminal", terminal)
    return f"{terminal}@{site}"


def parse_terminal_username(username: str) -> tuple[str, str] | None:
    """(site, terminal) of a terminal's username, or None for any other account."""
    match = _TERMINAL_USER_RE.match(username)
    if match is None:
        return None
    return match.group(2), match.group(1)


def terminal_rules(site: str, terminal: str) -> list[str]:
    """ACL lines for one terminal: it speaks only on its own four topics, one way each."""
    base = f"{TOPIC_ROOT}/{site}/{terminal}"
    return [
        f"topic write {base}/ratings",
        # The Last Will is published on status too, so write covers it.
        f"topic write {base}/status",
        f"topic read {base}/ack",
        f"topic read {base}/config",
    ]


def service_rules() -> list[str]:
    """ACL lines for the server: hears every terminal, answers every terminal."""
    return [
        f"topic read {TOPIC_ROOT}/+/+/ratings",
        f"topic read {TOPIC_ROOT}/+/+/status",
        f"topic write {TOPIC_ROOT}/+/+/ack",
        # readwrite so the server can read back the retained config it published.
        f"topic readwrite {TOPIC_ROOT}/+/+/config",
        f"topic write {TOPIC_ROOT}/+/alerts",
    ]


# -- ACL file -----------------------------------------------------------------


def acl_user(line: str) -> str | None:
    stripped = line.strip()
    if stripped.startswith("user ") or stripped.startswith("user\t"):
        return stripped[5:].strip()
    return None


def set_acl_block(text: str, username: str, rules: Sequence[str], comment: str) -> str:
    """*text* of an ACL file with *username*'s block set to *rules*.

    In mosquitto's ACL file a `user` line owns every `topic` line up to the
    next `user` line. The block of *username* is replaced where it stands
    (keeping any global `pattern` lines an operator wrote inside it); every
    other line of the file is kept byte for byte. A new user is appended.
    """
    check_username(username)
    block = [f"user {username}\n", f"{_MARK} {comment}\n", *(f"{r}\n" for r in rules), "\n"]
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    index = 0
    found = False
    while index < len(lines):
        line = lines[index]
        if acl_user(line) != username:
            out.append(line)
            index += 1
            continue
        kept_patterns = []
        index += 1
        while index < len(lines) and acl_user(lines[index]) is None:
            if lines[index].strip().startswith("pattern"):
                kept_patterns.append(lines[index])
            index += 1
        if not found:
            out.extend(block)
            found = True
        out.extend(kept_patterns)
    if not found:
        if out and not out[-1].endswith("\n"):
            out[-1] += "\n"
        if out and out[-1].strip():
            out.append("\n")
        out.extend(block)
    return "".join(out)


def remove_acl_block(text: str, username: str) -> str:
    """*text* of an ACL file without *username*'s block (its `user` line and the
    `topic` lines it owns); operators' `pattern` lines and every other block stay."""
    out: list[str] = []
    inside = False
    for line in text.splitlines(keepends=True):
        user = acl_user(line)
        if user is not None:
            inside = user == username
            if inside:
                continue
        elif inside and not line.strip().startswith("pattern"):
            continue
        out.append(line)
    return "".join(out)


def registry_from_text(text: str) -> set[tuple[str, str]]:
    """(site, terminal) of every terminal account in an ACL file's *text*."""
    found = set()
    for line in text.splitlines():
        user = acl_user(line)
        if user is not None and (pair := parse_terminal_username(user)) is not None:
            found.add(pair)
    return found


def read_registry(acl_path: str | os.PathLike[str]) -> set[tuple[str, str]]:
    """(site, terminal) of every provisioned terminal, read from the broker's ACL file.

    The ACL file is the registry: a terminal exists exactly when the broker
    lets it publish. Raises OSError (FileNotFoundError) when the file is
    missing, since an empty registry would quarantine every rating.
    """
    return registry_from_text(Path(acl_path).read_text(encoding="utf-8"))
