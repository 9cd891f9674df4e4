"""Staff authentication: password hashes (argon2id), API token hashes, sessions, CSRF and login throttling."""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import ipaddress
import logging
import secrets
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Mapping

from server.passwd import new_secret

log = logging.getLogger(__name__)

SESSION_LIFETIME = timedelta(hours=12)
SESSION_COOKIE = "onetap_session"
#: Hashes of the first release (``scrypt$N$r$p$salt$key``): still verified so
#: that nobody is locked out by an upgrade, never written again. The server
#: does not rewrite its own config (it may not even be able to: the file is
#: the operator's, often read-only to the service), so a login with one logs
#: a warning asking for `onetap-server user passwd`, which writes argon2id.
LEGACY_SCRYPT_PREFIX = "scrypt$"
_UPGRADE_HINT = ("user %r still has a scrypt password hash: run `onetap-server user passwd %s` "
                 "to store an argon2id one (scrypt hashes will not be read forever)")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str) -> str:
    """An argon2id hash (PHC string) for ``[users.<name>] password_hash``."""
    from argon2 import PasswordHasher

    return PasswordHasher().hash(password)


def is_legacy_hash(stored: str) -> bool:
    """Whether *stored* is a first-release scrypt hash, to be replaced by argon2id."""
    return stored.startswith(LEGACY_SCRYPT_PREFIX)


def check_hash_format(stored: str) -> None:
    """ValueError unless *stored* is a hash this module can verify."""
    if is_legacy_hash(stored):
        parts = stored.split("$")
        if len(parts) != 6 or not all(p.isdigit() for p in parts[1:4]):
            raise ValueError("is not a valid scrypt hash (`onetap-server user passwd` writes argon2id)")
        n = int(parts[1])
        if n < 2 or n & (n - 1):
            raise ValueError("scrypt N must be a power of two")
        try:
            _unb64(parts[4]), _unb64(parts[5])
        except (ValueError, TypeError):
            raise ValueError("has a salt or key that is not base64") from None
        return
    from argon2 import extract_parameters
    from argon2.exceptions import InvalidHashError

    if not stored.startswith("$argon2"):
        raise ValueError("must be an $argon2id$ hash (`onetap-server user add` or `passwd` writes one)")
    try:
        extract_parameters(stored)
    except (InvalidHashError, ValueError):
        raise ValueError("is not a valid argon2 hash") from None


def _verify_legacy_scrypt(stored: str, password: str) -> bool:
    try:
        _, n, r, p, salt, key = stored.split("$")
        n_, r_, p_ = int(n), int(r), int(p)
        got = hashlib.scrypt(password.encode("utf-8"), salt=_unb64(salt), n=n_, r=r_, p=p_,
                             maxmem=256 * n_ * r_ * p_, dklen=32)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, _unb64(key))


def verify_password(stored: str, password: str) -> bool:
    if is_legacy_hash(stored):
        return _verify_legacy_scrypt(stored, password)
    from argon2 import PasswordHasher
    from argon2.exceptions import Argon2Error, InvalidHashError

    try:
        return PasswordHasher().verify(stored, password)
    except (Argon2Error, InvalidHashError):
        return False


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
    if not verify_password(user.password_hash, password):
        return False
    if is_legacy_hash(user.password_hash):
        log.warning(_UPGRADE_HINT, name, name)
    return True


def token_hash(token: str) -> str:
    """SHA-256 hex of an API or session token: only this is stored (tokens are long and random)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A new API or session token (256 bits; passwd.new_secret: usable after --token on a command line)."""
    return new_secret(32)


@dataclass(frozen=True)
class NewSession:
    token: str
    token_hash: str
    csrf: str
    expires: datetime


def new_session(now: datetime) -> NewSession:
    token = new_token()
    return NewSession(token, token_hash(token), secrets.token_urlsafe(24), now + SESSION_LIFETIME)


def credential_fingerprint(password_hash: str, sites: frozenset[str] | None) -> str:
    """What a session was granted on: a new password or scope gives another value."""
    scope = "*" if sites is None else ",".join(sorted(sites))
    return hashlib.sha256(f"{password_hash}\n{scope}".encode("utf-8")).hexdigest()


def session_cookie(token: str, fingerprint: str) -> str:
    """The session cookie: the token and a tag binding it to the user's credentials at login.

    The tag is an HMAC keyed by the (secret) token, so the cookie is refused as soon
    as the password or the scope changes, with nothing more kept in the database.
    """
    tag = hmac.new(token.encode(), fingerprint.encode(), hashlib.sha256).digest()[:16]
    return f"{token}.{_b64(tag)}"


def session_token(cookie: str) -> str:
    """The session token inside a session cookie (look its session up by token_hash of it)."""
    return cookie.rpartition(".")[0]


def session_cookie_ok(cookie: str, fingerprint: str) -> bool:
    """Whether *cookie* was issued for credentials whose fingerprint is *fingerprint*."""
    token = session_token(cookie)
    return bool(token) and hmac.compare_digest(session_cookie(token, fingerprint).encode(), cookie.encode())


def csrf_ok(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), given.encode())


class HashSlots:
    """At most *limit* password hashes at once: each costs tens of MiB, so forty
    parallel logins must queue rather than take the server's memory."""

    def __init__(self, limit: int, wait_s: float):
        self._slots = threading.BoundedSemaphore(limit)
        self.wait_s = wait_s

    def acquire(self) -> bool:
        """Wait up to wait_s for a slot; False when none came free (answer 503)."""
        return self._slots.acquire(timeout=self.wait_s)

    def release(self) -> None:
        self._slots.release()


@dataclass
class _Failures:
    count: int = 0
    last: float = 0.0
    blocked_until: float = 0.0


class LoginThrottle:
    """Failed logins per user and per client address: after *free* (*ip_free*)
    failures each try must wait *delay_s*, doubled per further failure; at the
    lockout count the key is locked for *lockout_s*. Times are plain seconds (a monotonic clock),
    passed in by the caller. Failures older than *lockout_s* are forgotten.

    Every name tried gets a counter, configured or not, so that a lockout does
    not tell a guesser which names exist; at most *max_keys* names and addresses
    are remembered (the oldest forgotten first). An IPv6 client is counted by its
    /64, which one machine can fill with addresses.
    """

    def __init__(self, *, free: int, ip_free: int, delay_s: float, user_lockout: int, ip_lockout: int,
                 lockout_s: float, max_keys: int = 10_000):
        self.delay_s, self.lockout_s = delay_s, lockout_s
        self.free = {"user": free, "ip": ip_free}
        self.lockout = {"user": user_lockout, "ip": ip_lockout}
        self.max_keys = max_keys
        self._keys: OrderedDict[tuple[str, str], _Failures] = OrderedDict()
        self._lock = threading.Lock()

    def _get(self, kind: str, key: str, now: float) -> _Failures | None:
        entry = self._keys.get((kind, key))
        if entry is not None and now - entry.last >= self.lockout_s and now >= entry.blocked_until:
            del self._keys[(kind, key)]
            return None
        return entry

    @staticmethod
    def _keys_of(user: str, address: str) -> tuple[tuple[str, str], tuple[str, str]]:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            pass
        else:
            if ip.version == 6 and ip.ipv4_mapped is None:
                address = str(ipaddress.ip_network(f"{ip}/64", strict=False))
        # Configured names are at most 64 characters; a longer one needs no more to be told apart.
        return ("user", user[:256]), ("ip", address)

    def wait(self, user: str, address: str, now: float) -> float:
        """Seconds until *user* may try from *address*; 0: now."""
        with self._lock:
            waits = [0.0]
            for kind, key in self._keys_of(user, address):
                entry = self._get(kind, key, now)
                if entry is not None:
                    waits.append(entry.blocked_until - now)
            return max(waits)

    def failed(self, user: str, address: str, now: float) -> None:
        with self._lock:
            for kind, key in self._keys_of(user, address):
                entry = self._get(kind, key, now) or _Failures()
                entry.count += 1
                entry.last = now
                if entry.count >= self.lockout[kind]:
                    entry.blocked_until = now + self.lockout_s
                elif entry.count > self.free[kind]:
                    delay = self.delay_s * 2 ** min(entry.count - self.free[kind] - 1, 30)
                    entry.blocked_until = now + min(delay, self.lockout_s)
                self._keys[(kind, key)] = entry
                self._keys.move_to_end((kind, key))
            while len(self._keys) > self.max_keys:
                self._keys.popitem(last=False)

    def succeeded(self, user: str, address: str) -> None:
        with self._lock:
            for key in self._keys_of(user, address):
                self._keys.pop(key, None)


def main(argv: list[str] | None = None) -> int:
    """``python -m server.auth hash``: read a password, print its argon2id hash;
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
        print(hash_password(password))  # an old script's --argon2 is what happens anyway
        return 0
    print("usage: python -m server.auth hash | token", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
