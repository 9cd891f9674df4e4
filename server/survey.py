"""Each site's survey config for its terminals (the retained config topic), built from a plain dict."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

from kiosk import protocol
from kiosk.protocol import ProtocolError, SurveyConfig
from server.errors import ConfigError

KEYS = frozenset(("version", "question", "reasons", "reason_labels", "reason_threshold", "age_group",
                  "cooldown_s", "followup_timeout_s", "thank_you_s", "hours", "count_when_closed"))


def content_version(fields: Mapping[str, Any]) -> str:
    """A version that changes exactly when the content does (stable across server restarts)."""
    canonical = json.dumps(fields, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]


def survey_config(spec: Mapping[str, Any], where: str = "survey") -> SurveyConfig:
    """A validated SurveyConfig from *spec*; ConfigError names ``where.key`` for anything wrong.

    Without ``version``, the version is a hash of the content.
    """
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: must be a table")
    unknown = sorted(set(spec) - KEYS)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key (known: {', '.join(sorted(KEYS))})")
    fields = {key: (list(value) if isinstance(value, tuple) else value)
              for key, value in spec.items() if key != "version"}
    version = spec.get("version")
    if version is None:
        version = content_version(fields)
    try:
        return SurveyConfig.from_dict({"v": protocol.VERSION, "version": version, **fields})
    except ProtocolError as exc:
        raise ConfigError(f"{where}.{exc.field}: {exc.reason}") from None


def survey_payloads(sites: Mapping[str, Mapping[str, Any]],
                    defaults: Mapping[str, Any] | None = None) -> dict[str, bytes]:
    """site -> the payload to publish retained on every one of its terminals' config topics.

    A site's keys override *defaults* key by key.
    """
    out = {}
    for site, spec in sites.items():
        protocol.check_identifier("site", site)
        if not isinstance(spec, Mapping):
            raise ConfigError(f"sites.{site}.survey: must be a table")
        merged = {**(defaults or {}), **spec}
        out[site] = survey_config(merged, f"sites.{site}.survey").encode()
    return out
