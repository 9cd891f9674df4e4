"""The site's survey config: validated from the server, cached on disk, merged into the visit settings."""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable, Mapping

from kiosk import protocol
from kiosk.flow import Question, Settings
from kiosk.protocol import ProtocolError, SurveyConfig

log = logging.getLogger(__name__)

CACHE_FILE = "survey.json"


def is_open(lines: Iterable[str], moment: datetime) -> bool:
    """Whether opening-hours lines ("mon-fri 09:00-18:00") include *moment* (its own local time).

    No lines: always open.
    """
    return protocol.is_open(moment, protocol.parse_hours("hours", tuple(lines)))


def questions(reasons: Iterable[str] = protocol.DEFAULT_REASONS, reason_threshold: int = 2,
              age_group: bool = False,
              reason_labels: Mapping[str, Mapping[str, str]] | None = None) -> tuple[Question, ...]:
    """The follow-up questions a survey config asks: why (low scores), then the age group."""
    asked = []
    if reason_threshold > 0 and tuple(reasons):
        asked.append(Question("reason", tuple(reasons), reason_threshold, labels=dict(reason_labels or {})))
    if age_group:
        asked.append(Question("age_group", protocol.AGE_GROUPS, key="age"))
    return tuple(asked)


def merge(base: Settings, survey: SurveyConfig | None) -> Settings:
    """The kiosk's own settings overlaid with what the site's config sets."""
    if survey is None:
        return base
    changes: dict[str, object] = {
        "questions": questions(survey.reasons, survey.reason_threshold, survey.age_group,
                               survey.reason_labels),
    }
    for key in ("cooldown_s", "followup_timeout_s", "thank_you_s", "count_when_closed"):
        value = getattr(survey, key)
        if value is not None:
            changes[key] = value
    return dataclasses.replace(base, **changes)


def hours(base: tuple[str, ...], survey: SurveyConfig | None) -> tuple[str, ...]:
    """Opening hours: the site's when it sets them, else the kiosk's own."""
    if survey is not None and survey.hours is not None:
        return survey.hours
    return base


class Survey:
    """The survey config in force: the last good one from the server, kept across restarts.

    :meth:`offer` may be called from the uplink's thread; *on_change* is called
    there too, so a UI passes a function that schedules the work on its own thread.
    """

    def __init__(self, cache_path: Path, on_change: Callable[[SurveyConfig], None] | None = None):
        self.cache_path = Path(cache_path)
        self.on_change = on_change
        self._lock = threading.Lock()
        self.current: SurveyConfig | None = self._load()
        #: Rejected payloads since start (for tests and the staff screen).
        self.rejected = 0

    @property
    def version(self) -> str | None:
        current = self.current
        return current.version if current is not None else None

    def _load(self) -> SurveyConfig | None:
        try:
            payload = self.cache_path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.error("survey config cache %s unreadable (%s); using the kiosk's own settings",
                      self.cache_path, exc.strerror)
            return None
        try:
            config = SurveyConfig.decode(payload)
        except ProtocolError as exc:
            log.error("survey config cache %s is invalid (%s); using the kiosk's own settings",
                      self.cache_path, exc)
            return None
        log.info("survey config version %s loaded from %s", config.version, self.cache_path)
        return config

    def _save(self, config: SurveyConfig) -> None:
        tmp = self.cache_path.with_name(self.cache_path.name + ".tmp")
        try:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                fh.write(config.encode())
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.cache_path)
        except OSError as exc:
            # Still applied now; after a restart offline the previous one returns.
            log.error("survey config version %s not cached in %s: %s",
                      config.version, self.cache_path, exc)

    def offer(self, payload: bytes) -> SurveyConfig | None:
        """A config payload from the server: applied and cached if valid and new, else logged."""
        with self._lock:
            keeping = self.version or "none (the kiosk's own settings)"
            if not payload:
                log.info("survey config cleared on the server; keeping version %s", keeping)
                return None
            try:
                config = SurveyConfig.decode(payload)
            except ProtocolError as exc:
                self.rejected += 1
                log.error("survey config rejected: %s; keeping version %s (payload %r)",
                          exc, keeping, bytes(payload[:200]))
                return None
            if config == self.current:
                return None
            self._save(config)
            self.current = config
            log.info("survey config version %s applied (was %s)", config.version, keeping)
        if self.on_change is not None:
            self.on_change(config)
        return config
