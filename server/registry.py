"""The registry of provisioned terminals: the broker's ACL file, re-read when it changes."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from server.errors import ConfigError
from server.passwd import registry_from_text

log = logging.getLogger(__name__)


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

    @property
    def terminals(self) -> frozenset[tuple[str, str]]:
        return self._known
