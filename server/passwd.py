"""Mosquitto 2 password files: hashing and line-preserving edits, without mosquitto_passwd."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

# mosquitto_passwd 2.0 writes `user:$7$<iterations>$<b64 salt>$<b64 hash>`,
# where $7$ is PBKDF2-HMAC-SHA512 over a 12-byte salt with a 64-byte key.
# 101 iterations is mosquitto's own default; the broker reads the count from
# each line, so a larger one also works but costs CPU on every CONNECT.
PBKDF2_ID = "7"
ITERATIONS = 101
SALT_BYTES = 12
HASH_BYTES = 64


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


def new_password() -> str:
    """A random password for a machine account (192 bits, URL-safe characters)."""
    return secrets.token_urlsafe(24)


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
