"""The registry of provisioned terminals: the broker's ACL file, re-read when it changes."""

from __future__ import annotations

import base64
import binascii
import logging
import os
from pathlib import Path

from server.errors import ConfigError
from kiosk.protocol import check_identifier
from server.passwd import registry_from_text

log = logging.getLogger(__name__)


def keys_dir(acl_path: str | os.PathLike[str]) -> Path:
    """The directory of terminals' public keys: ``keys/`` beside the ACL file (the registry)."""
    return Path(acl_path).parent / "keys"


def public_key_path(directory: Path, site: str, terminal: str) -> Path:
    check_identifier("site", site)
    check_identifier("terminal", terminal)
    return directory / site / f"{terminal}.pub"


class Registry:
    """Which (site, terminal) pairs were provisioned, for ``Ingest(is_known=...)``.

    `onetap-server provision` replaces the ACL file by rename, so a new inode,
    modification time or size means a new registry: it is read again on the
    next question, and a newly provisioned terminal is accepted without a
    restart. If the file cannot be read later, the last registry stays in force.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._signature: tuple[int, int, int] | None = None
        self._known: frozenset[tuple[str, str]] = frozenset()
        self._failing = False
        #: Terminals' public keys, in keys/ beside the ACL file (server/provision.py).
        self.keys = PublicKeys(keys_dir(self.path))
        try:
            self._reload(self._signature_now())
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"registry {self.path}: cannot read the terminal registry "
                              f"(the broker's ACL file): {exc}") from None

    def _signature_now(self) -> tuple[int, int, int]:
        info = os.stat(self.path)
        return info.st_ino, info.st_mtime_ns, info.st_size

    def _reload(self, signature: tuple[int, int, int]) -> None:
        self._known = frozenset(registry_from_text(self.path.read_text(encoding="utf-8")))
        self._signature = signature
        log.info("registry %s: %d terminals", self.path, len(self._known))

    def refresh(self) -> None:
        """Read the file again if it changed since the last read."""
        try:
            signature = self._signature_now()
            if signature != self._signature:
                self._reload(signature)
            self._failing = False
        except (OSError, UnicodeDecodeError) as exc:
            if not self._failing:  # once per outage, not once per message
                log.error("registry %s: cannot read it (%s); keeping the %d terminals known",
                          self.path, exc, len(self._known))
            self._failing = True

    def is_known(self, site: str, terminal: str) -> bool:
        """Whether *terminal* was provisioned for *site* (the file as it is now)."""
        self.refresh()
        return (site, terminal) in self._known

    def public_key(self, site: str, terminal: str) -> bytes | None:
        """The terminal's Ed25519 public key (32 bytes), or None when it has none."""
        return self.keys.get(site, terminal)

    @property
    def terminals(self) -> frozenset[tuple[str, str]]:
        return self._known


def load_public_key(directory: Path, site: str, terminal: str) -> bytes | None:
    """A terminal's Ed25519 public key (32 raw bytes) from ``directory/{site}/{terminal}.pub``,
    or None when it has none (a kiosk provisioned before keys: unsigned, unchained or not).

    A file that is there but unreadable or malformed is a ConfigError: a key the
    server cannot read must not quietly turn signed terminals into unsigned ones.
    """
    path = public_key_path(directory, site, terminal)
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"public key {path}: cannot read it ({exc})") from None
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise ConfigError(f"public key {path}: not the base64 of a 32-byte Ed25519 public key")
    return raw


class PublicKeys:
    """Terminals' public keys under one ``keys/`` directory, re-read when a file changes."""

    def __init__(self, directory: str | os.PathLike[str]):
        self.directory = Path(directory)
        self._cache: dict[tuple[str, str], tuple[tuple[int, int, int] | None, bytes | None]] = {}

    def get(self, site: str, terminal: str) -> bytes | None:
        path = public_key_path(self.directory, site, terminal)
        try:
            info = os.stat(path)
            signature: tuple[int, int, int] | None = (info.st_ino, info.st_mtime_ns, info.st_size)
        except FileNotFoundError:
            signature = None
        cached = self._cache.get((site, terminal))
        if cached is not None and cached[0] == signature:
            return cached[1]
        key = load_public_key(self.directory, site, terminal) if signature is not None else None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[site, terminal] = (signature, key)
        return key
