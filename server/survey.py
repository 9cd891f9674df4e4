"""Each site's survey config for its terminals (the retained config topic), built from a plain dict."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

from kiosk import protocol
from server.config import ServerConfig, content_version, survey_config  # noqa: F401 - content_version: part of this API
from server.errors import ConfigError
from server.periodic import Periodic
from server.store import Store


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


def site_payload(config: ServerConfig, site: str) -> bytes | None:
    """The survey payload for *site*'s terminals, or None when the config names no survey.

    ``[sites.<site>.survey]`` overrides ``[survey]`` key by key; the reasons
    default to the ones the server accepts from that site, so a kiosk never
    offers a reason its server would reject.
    """
    site_config = config.sites.get(site)
    site_spec = site_config.survey if site_config is not None else None
    if config.survey is None and site_spec is None:
        return None
    spec = {"reasons": list(config.reasons_for_site(site)), **(config.survey or {}),
            **(site_spec or {})}
    return survey_config(spec, f"sites.{site}.survey").encode()


class SurveyPublisher:
    """Publishes each known terminal's survey, retained, once per broker connection.

    Retained messages live in the broker; after a reconnect (the broker may
    have restarted empty) every terminal's survey is published again.
    """

    def __init__(self, config: ServerConfig, publish: Callable[[str, bytes], Any]):
        self.config = config
        self.publish = publish
        self._payloads: dict[str, bytes | None] = {}
        self._published: dict[tuple[str, str], bytes] = {}

    def run_once(self, terminals: Iterable[tuple[str, str]], connected: bool) -> int:
        """Publish to the *terminals* not yet holding their current survey; returns how many."""
        if not connected:
            self._published.clear()
            return 0
        count = 0
        for site, terminal in terminals:
            if site not in self._payloads:
                self._payloads[site] = site_payload(self.config, site)
            payload = self._payloads[site]
            if payload is None or self._published.get((site, terminal)) == payload:
                continue
            self.publish(protocol.topic(site, terminal, protocol.CONFIG), payload)
            self._published[(site, terminal)] = payload
            count += 1
        return count


class SurveyRunner(Periodic):
    """SurveyPublisher every few seconds over the terminals the store knows."""

    name = "onetap-survey"

    def __init__(self, config: ServerConfig, store_factory: Callable[[], Store], link: Any,
                 interval_s: float = 5.0):
        super().__init__(store_factory, interval_s)
        self.publisher = SurveyPublisher(config, link.publish_retained)
        self.link = link

    def tick(self, store: Store) -> None:
        terminals = [(t["site"], t["terminal"]) for t in store.terminals()]
        self.publisher.run_once(terminals, self.link.connected)
