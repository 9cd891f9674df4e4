"""The server's configuration: one frozen dataclass from TOML, ONETAP_* environment, then flags."""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kiosk.protocol import DEFAULT_REASONS, ProtocolError, is_identifier, is_loopback, parse_hours
from kiosk.protocol import parse_broker_url as protocol_parse_broker_url
from server.errors import ConfigError

_REASON_RE = re.compile(r"\A[a-z][a-z0-9_]{0,31}\Z")
_LISTEN_RE = re.compile(r"\A(?P<host>\[[0-9a-fA-F:]+\]|[^:\s]+):(?P<port>\d{1,5})\Z")


@dataclass(frozen=True)
class BrokerAddress:
    """A parsed ``mqtt://host:port`` or ``mqtts://host:port``."""

    host: str
    port: int
    tls: bool


def parse_broker_url(url: str) -> BrokerAddress:
    """Parse a broker URL or raise ValueError saying what is wrong."""
    scheme, host, port = protocol_parse_broker_url(url)
    return BrokerAddress(host, port, scheme == "mqtts")


def parse_listen(text: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[::1]:8080`` for IPv6) or raise ValueError."""
    match = _LISTEN_RE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not HOST:PORT")
    port = int(match["port"])
    if not 0 < port < 65536:
        raise ValueError(f"{text!r}: port must be 1..65535")
    return match["host"].strip("[]"), port


@dataclass(frozen=True)
class SiteConfig:
    """Per-site settings, from ``[sites.<site>]``."""

    reasons: tuple[str, ...] = DEFAULT_REASONS
    #: The site's survey for its terminals (``[sites.<site>.survey]``), over ``[survey]``.
    survey: Mapping[str, Any] | None = None
    #: The name staff and reports call the site ("강남구청 민원실"); None: its identifier.
    name: str | None = None
    #: Display names of its terminals ({"counter-01": "1번 창구"}); others show their identifier.
    terminals: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class UserConfig:
    """A dashboard user, from ``[users.<name>]``: a password hash and a site scope."""

    password_hash: str = field(repr=False)
    #: None: every site.
    sites: frozenset[str] | None


@dataclass(frozen=True)
class TokenConfig:
    """An API token, from ``[tokens.<name>]``: its SHA-256 (hex) and a site scope."""

    sha256: str = field(repr=False)
    sites: frozenset[str] | None


@dataclass(frozen=True)
class AlertsConfig:
    """Alert rules and delivery, from ``[alerts]`` (see server/alerts.py)."""

    interval_s: int = 30
    status_interval_s: int = 60
    opening_hours: tuple[str, ...] = ("mon-fri 09:00-18:00",)
    offline_minutes: int = 10
    low_score_count: int = 3
    low_score_max: int = 2
    low_score_minutes: int = 30
    burst_interval_s: float = 1.0
    burst_count: int = 4
    run_length: int = 20
    run_interval_s: float = 3.0
    backlog_minutes: int = 30
    clock_unsynced: bool = True
    webhook_url: str | None = field(default=None, repr=False)
    webhook_timeout_s: float = 5.0
    webhook_retries: int = 3
    mqtt: bool = True

    @property
    def hours(self) -> tuple[tuple[frozenset[int], int, int], ...]:
        return parse_hours("alerts.opening_hours", list(self.opening_hours))


@dataclass(frozen=True)
class HttpConfig:
    """Limits of the HTTP side, from ``[http]``: request bodies, password hashing, login throttling."""

    #: Largest request body of a dashboard form (login included); bigger: 413 unread.
    max_form_bytes: int = 16 * 1024
    #: Password hashes computed at once (each scrypt or argon2 takes tens of MiB).
    max_concurrent_hashes: int = 2
    #: How long a login waits for a hashing slot before 503 with Retry-After.
    hash_wait_s: float = 5.0
    #: Failed logins for one user name, and from one client address, answered without delay.
    login_free_failures: int = 3
    login_ip_free_failures: int = 10
    #: After those, the next try must wait this long, doubled at each further failure.
    login_delay_s: float = 1.0
    #: This many failures for one user, or from one address, lock it out for login_lockout_s.
    login_user_lockout_failures: int = 10
    login_ip_lockout_failures: int = 30
    login_lockout_s: float = 900.0


@dataclass(frozen=True)
class MailConfig:
    """The institution's SMTP server for report mail, from ``[mail]``; the password only
    from the environment (ONETAP_MAIL_PASSWORD)."""

    host: str
    sender: str
    port: int = 587
    #: STARTTLS before logging in (port 587); false only for a relay on this machine.
    starttls: bool = True
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    #: CA certificate (PEM) that signed the SMTP server's; None: the system's trusted CAs.
    ca_file: Path | None = None
    timeout_s: float = 30.0
    #: Further attempts after a failed delivery, one per interval_s.
    retries: int = 3
    #: How often due reports are looked for (and failed ones tried again), seconds.
    interval_s: int = 300
    #: Local hour from which a period's report is sent (the period is over by then).
    send_hour: int = 7


REPORT_EVERY = ("daily", "weekly", "monthly")


@dataclass(frozen=True)
class ReportScheduleConfig:
    """A report subscription, from ``[reports.<name>]``: whom, how often, which sites."""

    to: tuple[str, ...]
    every: str
    sites: tuple[str, ...]
    lang: str = "ko"
    exclude_suspect: bool = True


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``onetap-server run`` needs; every key is in deploy/server.example.toml."""

    broker: str = "mqtt://127.0.0.1:1883"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    client_id: str = "onetap-server"
    #: What `run` does: "all" (ingest + HTTP API + alerts), "ingest" (one of
    #: several workers sharing the ratings), "api" (HTTP API + alerts only).
    role: str = "all"
    mqtt_protocol: str = "5"
    session_expiry_s: int = 7 * 24 * 3600
    #: A SQLite file, or a postgresql:// URL (server/backend.py picks the store).
    #: Absolute, where the systemd unit's StateDirectory is: never a file that
    #: depends on the directory the server happened to start in.
    db: Path | str = Path("/var/lib/onetap/onetap.db")
    listen: str = "127.0.0.1:8080"
    api_token: str | None = field(default=None, repr=False)
    timezone: str = "Asia/Seoul"
    reasons: tuple[str, ...] = DEFAULT_REASONS
    sites: Mapping[str, SiteConfig] = field(default_factory=dict)
    #: Survey defaults for every site's terminals (``[survey]``); None: publish none.
    survey: Mapping[str, Any] | None = None
    users: Mapping[str, UserConfig] = field(default_factory=dict, repr=False)
    tokens: Mapping[str, TokenConfig] = field(default_factory=dict, repr=False)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    #: CA certificate (PEM) for mqtts://; None: the system's trusted CAs.
    ca_file: Path | None = None
    #: Client certificate and its key for mqtts:// (both or neither).
    certfile: Path | None = None
    keyfile: Path | None = None
    #: The broker's own certificate (PEM), where this server can read it: it and
    #: ca_file expiring within 30 days are a /healthz warning and an alert.
    broker_cert_file: Path | None = None
    #: Plain mqtt:// to another machine sends the password and ratings in clear.
    allow_plain_remote: bool = False
    #: The broker's ACL file (onetap-server provision --acl): only terminals in
    #: it are accepted, on their own site. None: every terminal is accepted.
    registry: Path | None = None
    #: Raw ratings older than this many days are deleted (daily counts stay); 0: kept.
    retention_days: int = 0
    #: The SMTP server for scheduled reports; None: no report mail.
    mail: MailConfig | None = None
    #: Scheduled report mail by name.
    reports: Mapping[str, ReportScheduleConfig] = field(default_factory=dict)
    #: The institution's name on reports and mail ("강남구청"); None: none shown.
    institution: str | None = None
    #: Per terminal and UTC day: quarantine rows and payload bytes kept; beyond
    #: them bad messages are counted (onetap_ingest_quarantine_dropped_total)
    #: and dropped, and an alert is raised.
    quarantine_rows_per_day: int = 1000
    quarantine_bytes_per_day: int = 16 * 1024 * 1024
    #: Quarantine rows older than this many days are deleted by retention; 0: kept.
    quarantine_days: int = 90
    #: Whose X-Forwarded-Proto/-For uvicorn believes (the reverse proxy), comma-separated.
    forwarded_allow_ips: str = "127.0.0.1"
    #: Messages waiting with none processed for this many seconds: ingest is
    #: stuck (/healthz 503, systemd's watchdog no longer petted).
    ingest_stall_s: int = 20
    #: Any other supervised thread (alerts, retention, survey) busy in one pass
    #: for this many seconds is stuck.
    thread_stall_s: int = 600
    #: Where the file settings came from (for messages), None without a file.
    source: str | None = field(default=None, compare=False)

    def site_name(self, site: str) -> str:
        """The site's display name, else its identifier."""
        site_config = self.sites.get(site)
        return site_config.name if site_config is not None and site_config.name else site

    def terminal_name(self, site: str, terminal: str) -> str:
        """The terminal's display name, else its identifier."""
        site_config = self.sites.get(site)
        return (site_config.terminals.get(terminal) if site_config is not None else None) or terminal

    def reasons_for_site(self, site: str) -> tuple[str, ...]:
        site_config = self.sites.get(site)
        return site_config.reasons if site_config is not None else self.reasons

    @property
    def broker_address(self) -> BrokerAddress:
        return parse_broker_url(self.broker)

    @property
    def listen_address(self) -> tuple[str, int]:
        return parse_listen(self.listen)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


# -- keys -------------------------------------------------------------------


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, not {type(value).__name__}")
    return value


def _nonempty(value: Any) -> str:
    if not _str(value):
        raise ValueError("must not be empty")
    return value


def _optional(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def inner(value: Any) -> Any:
        # An empty string (typically from the environment) clears the setting.
        return None if value in ("", None) else parse(value)

    return inner


def _broker(value: Any) -> str:
    parse_broker_url(_str(value))
    return value


def _listen(value: Any) -> str:
    parse_listen(_str(value))
    return value


def _positive_int(value: Any) -> int:
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ValueError(f"{value!r} is not an integer") from None
    if type(value) is not int or value <= 0:
        raise ValueError(f"{value!r} is not a positive integer")
    return value


def _bool(value: Any) -> bool:
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    if type(value) is not bool:
        raise ValueError(f"{value!r} is not true or false")
    return value


def _non_negative_int(value: Any) -> int:
    return 0 if value in (0, "0") else _positive_int(value)


def _display_name(value: Any) -> str:
    """A name people read: 1..80 characters, no control characters."""
    text = _nonempty(value).strip()
    if not text or len(text) > 80 or any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in text):
        raise ValueError("must be 1 to 80 characters without control characters")
    return text


def _terminal_names(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ValueError('must be a table of terminal = "name"')
    for terminal, name in value.items():
        if not is_identifier(terminal):
            raise ValueError(f"{terminal!r} is not a terminal identifier")
        _display_name(name)
    return {terminal: name.strip() for terminal, name in value.items()}


def _ip_list(value: Any) -> str:
    for part in _nonempty(value).split(","):
        part = part.strip()
        if part == "*":
            continue
        try:
            ipaddress.ip_network(part, strict=False)
        except ValueError:
            raise ValueError(f"{part!r} is not an IP address or network (or *)") from None
    return value


def _mqtt_protocol(value: Any) -> str:
    if _str(value) not in ("5", "3.1.1"):
        raise ValueError(f"{value!r} must be \"5\" or \"3.1.1\"")
    return value


def _path(value: Any) -> Path:
    return Path(_nonempty(value)).expanduser()


def _db(value: Any) -> Path | str:
    from server.backend import DatabaseURL, check_postgres_url, is_postgres_url

    if is_postgres_url(_nonempty(value)):
        return DatabaseURL(check_postgres_url(value))
    return _path(value)


ROLES = ("all", "ingest", "api")


def _role(value: Any) -> str:
    if _str(value) not in ROLES:
        raise ValueError(f"{value!r} must be one of {', '.join(ROLES)}")
    return value


def _timezone(value: Any) -> str:
    try:
        ZoneInfo(_nonempty(value))
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{value!r} is not a known time zone (e.g. Asia/Seoul)") from None
    return value


def _reasons(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):  # from the environment: comma-separated
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list):
        raise ValueError("must be a list of reason codes")
    for code in value:
        if not isinstance(code, str) or not _REASON_RE.match(code):
            raise ValueError(f"{code!r} is not a reason code ([a-z][a-z0-9_]*, at most 32)")
    if len(set(value)) != len(value):
        raise ValueError("lists a reason code twice")
    return tuple(value)


@dataclass(frozen=True)
class _Key:
    parse: Callable[[Any], Any]
    env: str


#: Top-level scalar keys: name -> how to parse it and its environment override.
KEYS: dict[str, _Key] = {
    "broker": _Key(_broker, "ONETAP_BROKER"),
    "username": _Key(_optional(_str), "ONETAP_MQTT_USERNAME"),
    "password": _Key(_optional(_str), "ONETAP_MQTT_PASSWORD"),
    "client_id": _Key(_nonempty, "ONETAP_CLIENT_ID"),
    "mqtt_protocol": _Key(_mqtt_protocol, "ONETAP_MQTT_PROTOCOL"),
    "session_expiry_s": _Key(_positive_int, "ONETAP_SESSION_EXPIRY_S"),
    "db": _Key(_db, "ONETAP_DB"),
    "role": _Key(_role, "ONETAP_ROLE"),
    "listen": _Key(_listen, "ONETAP_LISTEN"),
    "api_token": _Key(_optional(_nonempty), "ONETAP_API_TOKEN"),
    "timezone": _Key(_timezone, "ONETAP_TIMEZONE"),
    "reasons": _Key(_reasons, "ONETAP_REASONS"),
    "ca_file": _Key(_optional(_path), "ONETAP_MQTT_CA_FILE"),
    "certfile": _Key(_optional(_path), "ONETAP_MQTT_CERTFILE"),
    "keyfile": _Key(_optional(_path), "ONETAP_MQTT_KEYFILE"),
    "broker_cert_file": _Key(_optional(_path), "ONETAP_BROKER_CERT_FILE"),
    "allow_plain_remote": _Key(_bool, "ONETAP_ALLOW_PLAIN_REMOTE"),
    "registry": _Key(_optional(_path), "ONETAP_REGISTRY"),
    "retention_days": _Key(_non_negative_int, "ONETAP_RETENTION_DAYS"),
    "quarantine_rows_per_day": _Key(_positive_int, "ONETAP_QUARANTINE_ROWS_PER_DAY"),
    "quarantine_bytes_per_day": _Key(_positive_int, "ONETAP_QUARANTINE_BYTES_PER_DAY"),
    "quarantine_days": _Key(_non_negative_int, "ONETAP_QUARANTINE_DAYS"),
    "forwarded_allow_ips": _Key(_ip_list, "ONETAP_FORWARDED_ALLOW_IPS"),
    "institution": _Key(_optional(_display_name), "ONETAP_INSTITUTION"),
    "ingest_stall_s": _Key(_positive_int, "ONETAP_INGEST_STALL_S"),
    "thread_stall_s": _Key(_positive_int, "ONETAP_THREAD_STALL_S"),
}


def _parse_survey(table: Any, where: str) -> dict[str, Any]:
    """A survey table, checked now so that a bad one stops the server at start."""
    from server.survey import survey_config

    survey_config(table, where)
    return dict(table)


def _parse_sites(table: Any, where: str) -> dict[str, SiteConfig]:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [sites] must be a table of [sites.<site>] tables")
    sites = {}
    for site, body in table.items():
        key = f"sites.{site}"
        if not is_identifier(site):
            raise ConfigError(f"{where}: {key}: {site!r} is not a site identifier")
        if not isinstance(body, dict):
            raise ConfigError(f"{where}: {key} must be a table")
        values: dict[str, Any] = {}
        for name, value in body.items():
            if name == "survey":
                values[name] = _parse_survey(value, f"{where}: {key}.survey")
                continue
            if name in ("name", "terminals"):
                try:
                    values[name] = _display_name(value) if name == "name" else _terminal_names(value)
                except ValueError as exc:
                    raise ConfigError(f"{where}: {key}.{name} {exc}") from None
                continue
            if name != "reasons":
                raise ConfigError(f"{where}: unknown key {key}.{name}")
            try:
                values[name] = _reasons(value)
            except ValueError as exc:
                raise ConfigError(f"{where}: {key}.{name} {exc}") from None
        sites[site] = SiteConfig(**values)
    return sites


def _scope(value: Any) -> frozenset[str] | None:
    if value == "*":
        return None
    if not isinstance(value, list) or not value:
        raise ValueError('must be "*" (every site) or a non-empty list of site identifiers')
    for site in value:
        if not is_identifier(site):
            raise ValueError(f"{site!r} is not a site identifier")
    return frozenset(value)


def _password_hash(value: Any) -> str:
    from server.auth import check_hash_format

    check_hash_format(_nonempty(value))
    return value


def _sha256(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ValueError("must be the token's SHA-256 as 64 lowercase hex digits"
                         " (python -m server.auth token prints a token and its hash)")
    return value


def _named_tables(kind: str, schema: dict[str, Callable[[Any], Any]], make: Callable[..., Any],
                  optional: tuple[str, ...] = ()):
    def parse(table: Any, where: str) -> dict[str, Any]:
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: [{kind}] must be a table of [{kind}.<name>] tables")
        out = {}
        for name, body in table.items():
            key = f"{kind}.{name}"
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}", name):
                raise ConfigError(f"{where}: {key}: {name!r} is not a name (letters, digits, _ . @ -)")
            if not isinstance(body, dict):
                raise ConfigError(f"{where}: {key} must be a table")
            for item in body:
                if item not in schema:
                    raise ConfigError(f"{where}: unknown key {key}.{item}")
            values = {}
            for item, value in body.items():
                try:
                    values[item] = schema[item](value)
                except ValueError as exc:
                    raise ConfigError(f"{where}: {key}.{item} {exc}") from None
            for item in schema:
                if item not in values and item not in optional:
                    raise ConfigError(f"{where}: {key}.{item} is missing")
            out[name] = make(**values)
        return out

    return parse


def _positive_float(value: Any) -> float:
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ValueError(f"{value!r} is not a number") from None
    if type(value) not in (int, float) or not value > 0:
        raise ValueError(f"{value!r} is not a positive number")
    return float(value)


def _score(value: Any) -> int:
    value = _positive_int(value)
    if value > 5:
        raise ValueError(f"{value!r} is not a score 1..5")
    return value


def _opening_hours(value: Any) -> tuple[str, ...]:
    try:
        parse_hours("opening_hours", value)
    except ProtocolError as exc:
        raise ValueError(f"{exc.reason}") from None
    return tuple(value)


def _http_url(value: Any) -> str:
    parts = urlsplit(_str(value))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http:// or https:// URL")
    return value


#: [alerts] keys: name -> (parser, environment override or None).
ALERT_KEYS: dict[str, tuple[Callable[[Any], Any], str | None]] = {
    "interval_s": (_positive_int, "ONETAP_ALERTS_INTERVAL_S"),
    "status_interval_s": (_positive_int, None),
    "opening_hours": (_opening_hours, None),
    "offline_minutes": (_positive_int, None),
    "low_score_count": (_positive_int, None),
    "low_score_max": (_score, None),
    "low_score_minutes": (_positive_int, None),
    "burst_interval_s": (_positive_float, None),
    "burst_count": (_positive_int, None),
    "run_length": (_positive_int, None),
    "run_interval_s": (_positive_float, None),
    "backlog_minutes": (_positive_int, None),
    "clock_unsynced": (_bool, None),
    "webhook_url": (_optional(_http_url), "ONETAP_ALERTS_WEBHOOK_URL"),
    "webhook_timeout_s": (_positive_float, None),
    "webhook_retries": (lambda v: 0 if v == 0 else _positive_int(v), None),
    "mqtt": (_bool, None),
}
assert set(ALERT_KEYS) == {f.name for f in fields(AlertsConfig)}


def _parse_alerts(table: Any, where: str) -> AlertsConfig:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [alerts] must be a table")
    values = {}
    for name, value in table.items():
        if name not in ALERT_KEYS:
            raise ConfigError(f"{where}: unknown key alerts.{name}")
        try:
            values[name] = ALERT_KEYS[name][0](value)
        except ValueError as exc:
            raise ConfigError(f"{where}: alerts.{name} {exc}") from None
    return AlertsConfig(**values)


#: [http] keys: name -> (parser, environment override).
HTTP_KEYS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "max_form_bytes": (_positive_int, "ONETAP_HTTP_MAX_FORM_BYTES"),
    "max_concurrent_hashes": (_positive_int, "ONETAP_HTTP_MAX_CONCURRENT_HASHES"),
    "hash_wait_s": (_positive_float, "ONETAP_HTTP_HASH_WAIT_S"),
    "login_free_failures": (_non_negative_int, "ONETAP_HTTP_LOGIN_FREE_FAILURES"),
    "login_ip_free_failures": (_non_negative_int, "ONETAP_HTTP_LOGIN_IP_FREE_FAILURES"),
    "login_delay_s": (_positive_float, "ONETAP_HTTP_LOGIN_DELAY_S"),
    "login_user_lockout_failures": (_positive_int, "ONETAP_HTTP_LOGIN_USER_LOCKOUT_FAILURES"),
    "login_ip_lockout_failures": (_positive_int, "ONETAP_HTTP_LOGIN_IP_LOCKOUT_FAILURES"),
    "login_lockout_s": (_positive_float, "ONETAP_HTTP_LOGIN_LOCKOUT_S"),
}
assert set(HTTP_KEYS) == {f.name for f in fields(HttpConfig)}


def _parse_http(table: Any, where: str) -> HttpConfig:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [http] must be a table")
    values = {}
    for name, value in table.items():
        if name not in HTTP_KEYS:
            raise ConfigError(f"{where}: unknown key http.{name}")
        try:
            values[name] = HTTP_KEYS[name][0](value)
        except ValueError as exc:
            raise ConfigError(f"{where}: http.{name} {exc}") from None
    return HttpConfig(**values)


_EMAIL_RE = re.compile(r"\A[^@\s<>,;\"]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}\Z")


def _email(value: Any) -> str:
    if not isinstance(value, str) or not _EMAIL_RE.match(value):
        raise ValueError(f"{value!r} is not an e-mail address")
    return value


def _hostname(value: Any) -> str:
    if not re.fullmatch(r"[A-Za-z0-9.:\[\]-]{1,253}", _nonempty(value)):
        raise ValueError(f"{value!r} is not a host name or address")
    return value


def _port(value: Any) -> int:
    if _positive_int(value) > 65535:
        raise ValueError(f"{value!r} is not a port 1..65535")
    return value


def _hour(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 23:
        raise ValueError(f"{value!r} is not an hour 0..23")
    return value


#: [mail] keys: name -> parser; host and sender are required.
MAIL_KEYS: dict[str, Callable[[Any], Any]] = {
    "host": _hostname, "sender": _email, "port": _port, "starttls": _bool,
    "user": _optional(_nonempty), "ca_file": _optional(_path), "timeout_s": _positive_float,
    "retries": lambda v: 0 if v == 0 else _positive_int(v), "interval_s": _positive_int, "send_hour": _hour,
}


def _parse_mail(table: Any, where: str) -> MailConfig:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [mail] must be a table")
    values = {}
    for name, value in table.items():
        if name not in MAIL_KEYS:
            hint = " (the password comes from ONETAP_MAIL_PASSWORD only)" if name == "password" else ""
            raise ConfigError(f"{where}: unknown key mail.{name}{hint}")
        try:
            values[name] = MAIL_KEYS[name](value)
        except ValueError as exc:
            raise ConfigError(f"{where}: mail.{name} {exc}") from None
    for name in ("host", "sender"):
        if name not in values:
            raise ConfigError(f"{where}: mail.{name} is missing")
    return MailConfig(**values)


def _addresses(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or len(value) > 50:
        raise ValueError("must be a list of 1 to 50 e-mail addresses")
    return tuple(_email(v) for v in value)


def _site_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or len(value) > 100:
        raise ValueError("must be a list of 1 to 100 site identifiers")
    for site in value:
        if not isinstance(site, str) or not is_identifier(site):
            raise ValueError(f"{site!r} is not a site identifier")
    return tuple(value)


def _every(value: Any) -> str:
    if value not in REPORT_EVERY:
        raise ValueError(f"{value!r} must be one of {', '.join(REPORT_EVERY)}")
    return value


def _report_lang(value: Any) -> str:
    if value not in ("ko", "en"):
        raise ValueError(f'{value!r} must be "ko" or "en"')
    return value


def _parse_reports(table: Any, where: str) -> dict[str, ReportScheduleConfig]:
    parse = _named_tables("reports", {"to": _addresses, "every": _every, "sites": _site_list,
                                      "lang": _report_lang, "exclude_suspect": _bool},
                          ReportScheduleConfig, optional=("lang", "exclude_suspect"))
    return parse(table, where)


#: Table-valued sections: name -> parser(table, where) giving the ServerConfig
#: field of the same name. A new section (users, tokens, alerts...) is a field
#: on ServerConfig plus one entry here.
SECTIONS: dict[str, Callable[[Any, str], Any]] = {
    "sites": _parse_sites,
    "survey": lambda table, where: _parse_survey(table, f"{where}: survey"),
    "users": _named_tables("users", {"password_hash": _password_hash, "sites": _scope}, UserConfig),
    "tokens": _named_tables("tokens", {"sha256": _sha256, "sites": _scope}, TokenConfig),
    "alerts": _parse_alerts,
    "http": _parse_http,
    "mail": _parse_mail,
    "reports": _parse_reports,
}

assert set(KEYS) | set(SECTIONS) | {"source"} == {f.name for f in fields(ServerConfig)}


def load_config(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ServerConfig:
    """Read *path* (if any), then ``ONETAP_*`` variables of *env*, then *overrides* (flags).

    Raises ConfigError naming the key and where it came from.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    #: key -> where its value came from, for cross-key errors.
    origin: dict[str, str] = {}
    source = None
    if path is not None:
        source = str(path)
        try:
            with open(path, "rb") as handle:
                document = tomllib.load(handle)
        except FileNotFoundError:
            raise ConfigError(f"{source}: no such config file") from None
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read ({exc.strerror})") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{source}: not valid TOML ({exc})") from None
        for name, value in document.items():
            if name in SECTIONS:
                values[name] = SECTIONS[name](value, source)
            elif name in KEYS:
                values[name] = _parse_key(name, value, f"{source}: {name}")
                origin[name] = f"{source}: {name}"
            else:
                raise ConfigError(f"{source}: unknown key {name!r}")
    for name, key in KEYS.items():
        if key.env in env:
            values[name] = _parse_key(name, env[key.env], f"environment {key.env}")
            origin[name] = f"environment {key.env}"
    alert_env = {}
    for name, (parse, variable) in ALERT_KEYS.items():
        if variable is not None and variable in env:
            try:
                alert_env[name] = parse(env[variable])
            except ValueError as exc:
                raise ConfigError(f"environment {variable} {exc}") from None
    if alert_env:
        values["alerts"] = replace(values.get("alerts", AlertsConfig()), **alert_env)
    http_env = {}
    for name, (parse, variable) in HTTP_KEYS.items():
        if variable in env:
            try:
                http_env[name] = parse(env[variable])
            except ValueError as exc:
                raise ConfigError(f"environment {variable} {exc}") from None
    if http_env:
        values["http"] = replace(values.get("http", HttpConfig()), **http_env)
    if values.get("mail") is not None and env.get("ONETAP_MAIL_PASSWORD"):
        values["mail"] = replace(values["mail"], password=env["ONETAP_MAIL_PASSWORD"])
    if values.get("reports") and values.get("mail") is None:
        raise ConfigError(f"{source or 'config'}: [reports] need a [mail] server to send them")
    for name, value in (overrides or {}).items():
        if value is None:
            continue
        if name not in KEYS:
            raise ConfigError(f"unknown setting {name!r}")
        values[name] = _parse_key(name, value, f"--{name.replace('_', '-')}")
        origin[name] = f"--{name.replace('_', '-')}"
    config = replace(ServerConfig(**values), source=source)
    _check_tls(config, lambda name: origin.get(name, f"{source or 'default'}: {name}"))
    return config


# -- secrets ------------------------------------------------------------------

#: A secret shorter than this is guessable (python -m server.auth token makes 43).
MIN_SECRET_LENGTH = 16
#: Fewer distinct characters than this in a secret: a pattern, not randomness.
MIN_SECRET_SYMBOLS = 8
#: Words that mark a value someone meant to replace.
_PLACEHOLDER_WORDS = ("change-me", "changeme", "change_me", "replace", "example", "placeholder",
                      "your-", "secret", "password", "xxxx")
#: The values deploy/server.example.toml shows for secrets (tests/server/test_config.py
#: checks that every one of them is refused): a copied example is not a secret.
EXAMPLE_SECRETS = frozenset({
    "change-me", "change-me-too",
    "scrypt$32768$8$1$REPLACE-salt$REPLACE-key", "$argon2id$v=19$m=65536,t=3,p=4$REPLACE$REPLACE",
    "0" * 64,
})


def _weak_secret(value: str) -> str | None:
    """Why *value* is not a usable secret, or None."""
    if value in EXAMPLE_SECRETS:
        return "is the example file's placeholder"
    if any(word in value.lower() for word in _PLACEHOLDER_WORDS):
        return "looks like a placeholder"
    if len(value) < MIN_SECRET_LENGTH:
        return (f"is too short ({len(value)} character{'' if len(value) == 1 else 's'};"
                f" at least {MIN_SECRET_LENGTH} random ones)")
    if len(set(value)) < MIN_SECRET_SYMBOLS:
        return f"is not random enough ({len(set(value))} different characters)"
    return None


def secret_problems(config: ServerConfig) -> list[str]:
    """Each placeholder, short or patterned secret in *config*, said in one line
    (``run`` and ``--check-config`` refuse a configuration with any)."""
    problems = []
    hint = "; python -m server.auth token makes a good one"
    for name, value in (("api_token", config.api_token), ("password", config.password)):
        why = _weak_secret(value) if value else None
        if why:
            problems.append(f"{name} {why}{hint}")
    for name, user in config.users.items():
        if user.password_hash in EXAMPLE_SECRETS:
            problems.append(f"users.{name}.password_hash is the example file's placeholder;"
                            " python -m server.auth hash makes one")
    for name, token in config.tokens.items():
        if token.sha256 in EXAMPLE_SECRETS or len(set(token.sha256)) < MIN_SECRET_SYMBOLS:
            problems.append(f"tokens.{name}.sha256 is a placeholder{hint} and its sha256")
    return problems


def _check_tls(config: ServerConfig, where: Callable[[str], str]) -> None:
    """Cross-key rules of the broker connection; raises ConfigError naming the key."""
    address = config.broker_address
    if (config.certfile is None) != (config.keyfile is None):
        name = "keyfile" if config.keyfile is None else "certfile"
        raise ConfigError(f"{where(name)} is missing: a client certificate needs both "
                          "certfile and keyfile")
    if address.tls:
        return
    if config.ca_file is not None or config.certfile is not None:
        name = "ca_file" if config.ca_file is not None else "certfile"
        raise ConfigError(f"{where(name)} is set but the broker {config.broker!r} is mqtt://, "
                          "not mqtts://")
    if not is_loopback(address.host) and not config.allow_plain_remote:
        raise ConfigError(
            f"{where('broker')} {config.broker!r} is plain MQTT to another machine: the "
            "password and ratings would cross the network unencrypted; use mqtts:// with "
            "ca_file, or set allow_plain_remote = true")


def _parse_key(name: str, value: Any, where: str) -> Any:
    try:
        return KEYS[name].parse(value)
    except ValueError as exc:
        raise ConfigError(f"{where} {exc}") from None
