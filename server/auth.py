"""Staff authentication: password hashes (scrypt or argon2), API token hashes, session and CSRF tokens."""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import secrets
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Mapping

#: scrypt cost: 2**15 x 8 x 1 takes ~0.1 s and 32 MiB here: slow for a guesser, fine for a login.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 15, 8, 1
SESSION_LIFETIME = timedelta(hours=12)
SESSION_COOKIE = "onetap_session"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                          maxmem=256 * n * r * p, dklen=32)


def hash_password(password: str, method: str = "scrypt") -> str:
    """A hash for ``[users.<name>] password_hash``: ``scrypt$n$r$p$salt$key`` or argon2's PHC string."""
    if method == "argon2":
        from argon2 import PasswordHasher

        return PasswordHasher().hash(password)
    if method != "scrypt":
        raise ValueError(f"unknown method {method!r} (scrypt or argon2)")
    salt = secrets.token_bytes(16)
    key = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


def check_hash_format(stored: str) -> None:
    """ValueError unless *stored* is a hash this module can verify."""
    if stored.startswith("$argon2"):
        from argon2 import extract_parameters
        from argon2.exceptions import InvalidHashError

        try:
            extract_parameters(stored)
        except (InvalidHashError, ValueError):
            raise ValueError("is not a valid argon2 hash") from None
        return
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt" or not all(p.isdigit() for p in parts[1:4]):
        raise ValueError("must be scrypt$N$r$p$salt$key or an $argon2id$ hash"
                         " (python -m server.auth hash prints one)")
    n = int(parts[1])
    if n < 2 or n & (n - 1):
        raise ValueError("scrypt N must be a power of two")
    try:
        _unb64(parts[4]), _unb64(parts[5])
    except (ValueError, TypeError):
        raise ValueError("has a salt or key that is not base64") from None


def verify_password(stored: str, password: str) -> bool:
    if stored.startswith("$argon2"):
        from argon2 import PasswordHasher
        from argon2.exceptions import Argon2Error

        try:
            return PasswordHasher().verify(stored, password)
        except Argon2Error:
            return False
    try:
        _, n, r, p, salt, key = stored.split("$")
        expected = _unb64(key)
        got = _scrypt(password, _unb64(salt), int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


#: A verification of an unknown user costs as much as a known one's.
_DUMMY_HASH = None


def authenticate(users: Mapping[str, object], name: str, password: str) -> bool:
    """Whether *name* is a configured user with this password (same cost either way)."""
    global _DUMMY_HASH
    user = users.get(name)
    if user is None:
        if _DUMMY_HASH is None:
            _DUMMY_HASH = hash_password("not a password")
        verify_password(_DUMMY_HASH, password)
        return False
    return verify_password(user.password_hash, password)


def token_hash(token: str) -> str:
    """SHA-256 hex of an API or session token: only this is stored (tokens are long and random)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class NewSession:
    token: str
    token_hash: str
    csrf: str
    expires: datetime


def new_session(now: datetime) -> NewSession:
    token = new_token()
    return NewSession(token, token_hash(token), secrets.token_urlsafe(24), now + SESSION_LIFETIME)


def csrf_ok(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), given.encode())


def main(argv: list[str] | None = None) -> int:
    """``python -m server.auth hash [--argon2]``: read a password, print its hash;
    ``python -m server.auth token``: print a new API token and the sha256 for the config."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["token"]:
        token = new_token()
        print(f"token:  {token}")
        print(f'sha256 = "{token_hash(token)}"')
        return 0
    if args[:1] == ["hash"]:
        password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
        if not password:
            print("server.auth: error: empty password", file=sys.stderr)
            return 1
        print(hash_password(password, "argon2" if "--argon2" in args else "scrypt"))
        return 0
    print("usage: python -m server.auth hash [--argon2] | token", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
