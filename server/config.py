"""The server's configuration: settings dataclasses (onetap_config, msgspec) filled from TOML, ONETAP_* environment, then flags."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from msgspec import Meta

import onetap_config
from onetap_config import (After, Before, Env, EnvOnly, FilePath, KeyProblem, Plain, Settings, checked,
                           expanded_path, parsed_by)
from kiosk import protocol
from kiosk.protocol import DEFAULT_REASONS, ProtocolError, SurveyConfig, is_identifier, parse_hours
from kiosk.protocol import parse_broker_url as protocol_parse_broker_url
from server.errors import ConfigError

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


# -- value types: each a check that says what is wrong ---------------------------


class DatabaseURL(str):
    """A postgresql:// URL whose repr (say, in --check-config) hides its password."""

    def __repr__(self) -> str:
        parts = urlsplit(str(self))
        netloc = parts.netloc.rsplit("@", 1)[-1]
        user = f"{parts.username}@" if parts.username else ""
        return repr(f"{parts.scheme}://{user}{netloc}{parts.path}")


POSTGRES_SCHEMES = ("postgresql", "postgres")


def _db(value: Any) -> Path | str:
    """A SQLite file, or a postgresql:// URL libpq can read."""
    if isinstance(value, Path):
        return expanded_path(value)
    if not isinstance(value, str) or not value:
        raise ValueError("must be a file path or a postgresql:// URL")
    parts = urlsplit(value)
    if parts.scheme not in POSTGRES_SCHEMES:
        return expanded_path(Path(value))
    if not parts.path.strip("/") and "dbname=" not in parts.query:
        raise ValueError("names no database (postgresql://user@host:5432/DATABASE)")
    try:
        parts.port
    except ValueError:
        raise ValueError("has an invalid port") from None
    return DatabaseURL(value)


def _timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("is not a known time zone (e.g. Asia/Seoul)") from None
    return value


def _ip_list(value: str) -> str:
    for part in value.split(","):
        part = part.strip()
        if part == "*":
            continue
        try:
            ipaddress.ip_network(part, strict=False)
        except ValueError:
            raise ValueError(f"{part!r} is not an IP address or network (or *)") from None
    return value


def _display_name(value: str) -> str:
    """A name people read: 1..80 characters, no control characters."""
    text = value.strip()
    if not text or len(text) > 80 or any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in text):
        raise ValueError("must be 1 to 80 characters without control characters")
    return text


def _reasons(value: tuple[str, ...]) -> tuple[str, ...]:
    for code in value:
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", code):
            raise ValueError(f"{code!r} is not a reason code ([a-z][a-z0-9_]*, at most 32)")
    if len(set(value)) != len(value):
        raise ValueError("lists a reason code twice")
    return value


def _scope(value: Any) -> Any:
    """"*" (every site, None) or a non-empty list of site identifiers."""
    if value == "*" or value is None:
        return None
    if not isinstance(value, (list, tuple, set, frozenset)) or not value:
        raise ValueError('must be "*" (every site) or a non-empty list of site identifiers')
    for site in value:
        if not is_identifier(site):
            raise ValueError(f"{site!r} is not a site identifier")
    return frozenset(value)


_ARGON2_RE = re.compile(r"\$argon2(id|i|d)\$v=\d+\$m=\d+,t=\d+,p=\d+\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+")
_SCRYPT_RE = re.compile(r"scrypt\$(\d+)\$\d+\$\d+\$[A-Za-z0-9+/=_-]+\$[A-Za-z0-9+/=_-]+")


def _password_hash(value: str) -> str:
    scrypt = _SCRYPT_RE.fullmatch(value)
    if _ARGON2_RE.fullmatch(value) or (scrypt and int(scrypt[1]) > 1 and not int(scrypt[1]) & (int(scrypt[1]) - 1)):
        return value
    raise ValueError("must be an $argon2id$ hash (onetap-server user add writes one)")


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("is not an http:// or https:// URL")
    return value


def _site_list(value: tuple[str, ...]) -> tuple[str, ...]:
    if not 1 <= len(value) <= 100:
        raise ValueError("must be a list of 1 to 100 site identifiers")
    for site in value:
        if not is_identifier(site):
            raise ValueError(f"{site!r} is not a site identifier")
    return value


_EMAIL_RE = re.compile(r"\A[^@\s<>,;\"]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}\Z")

Positive = Annotated[int, Meta(gt=0)]
NonNegative = Annotated[int, Meta(ge=0)]
PositiveSeconds = Annotated[float, Meta(gt=0)]
Identifier = Annotated[str, checked(is_identifier, "is not an identifier (^[a-z0-9][a-z0-9-]{0,62}$)")]
DisplayName = Annotated[str, After(_display_name)]
#: A satisfaction index to aim for, on the index's own 0..100 scale.
Target = Annotated[float, Meta(ge=0, le=100)]
Reasons = Annotated[tuple[str, ...], After(_reasons)]
Scope = Annotated[frozenset[str] | None, Before(_scope)]
Email = Annotated[str, checked(_EMAIL_RE.match, "is not an e-mail address")]
Hours = Annotated[tuple[str, ...], parsed_by(lambda v: parse_hours("opening_hours", v))]


# -- the survey table: the protocol's SurveyConfig ---------------------------------

SURVEY_KEYS = frozenset(("version", "question", "reasons", "reason_labels", "reason_threshold", "age_group",
                         "cooldown_s", "followup_timeout_s", "thank_you_s", "hours", "count_when_closed"))


def content_version(fields: Mapping[str, Any]) -> str:
    """A version that changes exactly when the content does (stable across server restarts)."""
    canonical = json.dumps(fields, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]


def _survey(spec: Any) -> SurveyConfig:
    """*spec* as the protocol's SurveyConfig; KeyProblem names the key. Without
    ``version``, the version is a hash of the content."""
    if not isinstance(spec, Mapping):
        raise ValueError("must be a table")
    unknown = sorted(set(spec) - SURVEY_KEYS)
    if unknown:
        raise KeyProblem(unknown[0], f"unknown key (known: {', '.join(sorted(SURVEY_KEYS))})")
    fields = {key: (list(value) if isinstance(value, tuple) else value)
              for key, value in spec.items() if key != "version"}
    version = spec.get("version")
    if version is None:
        version = content_version(fields)
    try:
        return SurveyConfig.from_dict({"v": protocol.VERSION, "version": version, **fields})
    except ProtocolError as exc:
        raise KeyProblem(exc.field, exc.reason) from None


def survey_config(spec: Mapping[str, Any], where: str = "survey") -> SurveyConfig:
    """A validated SurveyConfig from *spec*; ConfigError names ``where.key`` for anything wrong."""
    try:
        return _survey(spec)
    except KeyProblem as exc:
        raise ConfigError(f"{where}.{exc.key}: {exc.reason}") from None
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _survey_table(spec: Any) -> Any:
    if spec is not None:
        _survey(spec)  # a bad survey stops the server at start, not at publish
        return dict(spec)
    return None


SurveyTable = Annotated[Mapping[str, Any] | None, Plain(_survey_table), Env(None)]


# -- tables ------------------------------------------------------------------------


@dataclass(frozen=True)
class SiteConfig(Settings):
    """Per-site settings, from ``[sites.<site>]``."""

    reasons: Reasons = DEFAULT_REASONS
    #: The site's survey for its terminals (``[sites.<site>.survey]``), over ``[survey]``.
    survey: SurveyTable = None
    #: The name staff and reports call the site ("강남구청 민원실"); None: its identifier.
    name: DisplayName | None = None
    #: Display names of its terminals ({"counter-01": "1번 창구"}); others show their identifier.
    terminals: dict[Identifier, DisplayName] = field(default_factory=dict)
    #: The satisfaction index (0..100) the site aims for; None: no target.
    target: Target | None = None


@dataclass(frozen=True)
class GroupConfig(Settings):
    """A group of sites (an institution's region), from ``[groups.<id>]``."""

    sites: Annotated[tuple[str, ...], After(_site_list)]
    #: The name staff and reports call the group; None: its identifier.
    name: DisplayName | None = None
    #: The satisfaction index (0..100) the group aims for; None: no target.
    target: Target | None = None


@dataclass(frozen=True)
class UserConfig(Settings):
    """A dashboard user, from ``[users.<name>]``: a password hash and a site scope."""

    password_hash: Annotated[str, After(_password_hash)] = field(repr=False)
    #: None ("*"): every site.
    sites: Scope = frozenset()
    #: Groups ([groups.<id>]) whose sites the user sees too.
    groups: tuple[Identifier, ...] = ()

    def check(self) -> None:
        if self.sites is not None and not self.sites and not self.groups:
            raise KeyProblem("sites", 'is missing: give "*" (every site), a list of sites, or groups')


@dataclass(frozen=True)
class TokenConfig(Settings):
    """An API token, from ``[tokens.<name>]``: its SHA-256 (hex) and a site scope."""

    sha256: Annotated[str, checked(lambda v: re.fullmatch(r"[0-9a-f]{64}", v),
                                  "must be the token's SHA-256 as 64 lowercase hex digits"
                                  " (python -m server.auth token prints a token and its hash)")] \
        = field(repr=False)
    sites: Scope


@dataclass(frozen=True)
class AlertsConfig(Settings):
    """Alert rules and delivery, from ``[alerts]`` (see server/alerts.py)."""

    interval_s: Positive = 30
    status_interval_s: Positive = 60
    opening_hours: Hours = ("mon-fri 09:00-18:00",)
    offline_minutes: Positive = 10
    low_score_count: Positive = 3
    low_score_max: Annotated[int, Meta(ge=1, le=5)] = 2
    low_score_minutes: Positive = 30
    burst_interval_s: PositiveSeconds = 1.0
    burst_count: Positive = 4
    run_length: Positive = 20
    run_interval_s: PositiveSeconds = 3.0
    backlog_minutes: Positive = 30
    clock_unsynced: bool = True
    #: Audit chain: a missing seq range older than this raises an alert (0: at once);
    #: the stored chains are re-verified every audit_check_minutes (0: never).
    missing_minutes: NonNegative = 30
    audit_check_minutes: NonNegative = 60
    webhook_url: Annotated[str, After(_http_url)] | None = field(default=None, repr=False)
    webhook_timeout_s: PositiveSeconds = 5.0
    webhook_retries: NonNegative = 3
    mqtt: bool = True

    @property
    def hours(self) -> tuple[tuple[frozenset[int], int, int], ...]:
        return parse_hours("alerts.opening_hours", list(self.opening_hours))


@dataclass(frozen=True)
class HttpConfig(Settings):
    """Limits of the HTTP side, from ``[http]``: request bodies, password hashing, login throttling."""

    #: Largest request body of a dashboard form (login included); bigger: 413 unread.
    max_form_bytes: Positive = 16 * 1024
    #: Password hashes computed at once (each scrypt or argon2 takes tens of MiB).
    max_concurrent_hashes: Positive = 2
    #: How long a login waits for a hashing slot before 503 with Retry-After.
    hash_wait_s: PositiveSeconds = 5.0
    #: Failed logins for one user name, and from one client address, answered without delay.
    login_free_failures: NonNegative = 3
    login_ip_free_failures: NonNegative = 10
    #: After those, the next try must wait this long, doubled at each further failure.
    login_delay_s: PositiveSeconds = 1.0
    #: This many failures for one user, or from one address, lock it out for login_lockout_s.
    login_user_lockout_failures: Positive = 10
    login_ip_lockout_failures: Positive = 30
    login_lockout_s: PositiveSeconds = 900.0


@dataclass(frozen=True)
class MailConfig(Settings):
    """The institution's SMTP server for report mail, from ``[mail]``; the password only
    from the environment (ONETAP_MAIL_PASSWORD)."""

    host: Annotated[str, checked(lambda v: re.fullmatch(r"[A-Za-z0-9.:\[\]-]{1,253}", v),
                                "is not a host name or address")]
    sender: Email
    port: Annotated[int, Meta(ge=1, le=65535)] = 587
    #: STARTTLS before logging in (port 587); false only for a relay on this machine.
    starttls: bool = True
    user: Annotated[str, Meta(min_length=1)] | None = None
    password: Annotated[str | None, EnvOnly()] = field(default=None, repr=False)
    #: CA certificate (PEM) that signed the SMTP server's; None: the system's trusted CAs.
    ca_file: FilePath | None = None
    timeout_s: PositiveSeconds = 30.0
    #: Further attempts after a failed delivery, one per interval_s.
    retries: NonNegative = 3
    #: How often due reports are looked for (and failed ones tried again), seconds.
    interval_s: Positive = 300
    #: Local hour from which a period's report is sent (the period is over by then).
    send_hour: Annotated[int, Meta(ge=0, le=23)] = 7


REPORT_EVERY = ("daily", "weekly", "monthly")


@dataclass(frozen=True)
class ReportScheduleConfig(Settings):
    """A report subscription, from ``[reports.<name>]``: whom, how often, which sites."""

    to: Annotated[tuple[Email, ...], Meta(min_length=1, max_length=50)]
    every: Literal["daily", "weekly", "monthly"]
    sites: Annotated[tuple[str, ...], After(_site_list)]
    lang: Literal["ko", "en"] = "ko"
    exclude_suspect: bool = True


ROLES = ("all", "ingest", "api")


@dataclass(frozen=True)
class ServerConfig(Settings):
    """Everything ``onetap-server run`` needs; every key is in deploy/server.example.toml.

    A key is one field (a table is a dataclass-typed field, ``[name.<x>]``
    tables a dict of one); its variable is ONETAP_<KEY> unless ``Env(...)``
    says otherwise (tests/test_onetap_config.py checks the example names it).
    """

    broker: Annotated[str, parsed_by(parse_broker_url)] = "mqtt://127.0.0.1:1883"
    username: Annotated[str | None, Env("ONETAP_MQTT_USERNAME")] = None
    password: Annotated[str | None, Env("ONETAP_MQTT_PASSWORD")] = field(default=None, repr=False)
    client_id: Annotated[str, Meta(min_length=1)] = "onetap-server"
    #: What `run` does: "all" (ingest + HTTP API + alerts), "ingest" (one of
    #: several workers sharing the ratings), "api" (HTTP API + alerts only).
    role: Annotated[str, checked(lambda v: v in ROLES, f"must be one of {', '.join(ROLES)}")] = "all"
    mqtt_protocol: Literal["5", "3.1.1"] = "5"
    session_expiry_s: Positive = 7 * 24 * 3600
    #: A SQLite file, or a postgresql:// URL (server/backend.py picks the store).
    #: Absolute, where the systemd unit's StateDirectory is: never a file that
    #: depends on the directory the server happened to start in.
    db: Annotated[Path | str, Plain(_db)] = Path("/var/lib/onetap/onetap.db")
    listen: Annotated[str, parsed_by(parse_listen)] = "127.0.0.1:8080"
    api_token: Annotated[str, Meta(min_length=1)] | None = field(default=None, repr=False)
    timezone: Annotated[str, After(_timezone)] = "Asia/Seoul"
    reasons: Reasons = DEFAULT_REASONS
    sites: dict[Identifier, SiteConfig] = field(default_factory=dict)
    #: Groups of sites by identifier (``[groups.<id>]``): a filter on every page, ``by=group`` in the API.
    groups: dict[Identifier, GroupConfig] = field(default_factory=dict)
    #: Survey defaults for every site's terminals (``[survey]``); None: publish none.
    survey: SurveyTable = None
    users: dict[Annotated[str, checked(lambda v: re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}", v),
                                      "is not a name (letters, digits, _ . @ -)")], UserConfig] \
        = field(default_factory=dict, repr=False)
    tokens: dict[str, TokenConfig] = field(default_factory=dict, repr=False)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    #: CA certificate (PEM) for mqtts://; None: the system's trusted CAs.
    ca_file: Annotated[FilePath | None, Env("ONETAP_MQTT_CA_FILE")] = None
    #: Client certificate and its key for mqtts:// (both or neither).
    certfile: Annotated[FilePath | None, Env("ONETAP_MQTT_CERTFILE")] = None
    keyfile: Annotated[FilePath | None, Env("ONETAP_MQTT_KEYFILE")] = None
    #: The broker's own certificate (PEM), where this server can read it: it and
    #: ca_file expiring within 30 days are a /healthz warning and an alert.
    broker_cert_file: FilePath | None = None
    #: Plain mqtt:// to another machine sends the password and ratings in clear.
    allow_plain_remote: bool = False
    #: The broker's ACL file (onetap-server provision --acl): only terminals in
    #: it are accepted, on their own site. None: every terminal is accepted.
    registry: FilePath | None = None
    #: Raw ratings older than this many days are deleted (daily counts stay); 0: kept.
    retention_days: NonNegative = 0
    #: The SMTP server for scheduled reports; None: no report mail.
    mail: MailConfig | None = None
    #: Scheduled report mail by name.
    reports: dict[str, ReportScheduleConfig] = field(default_factory=dict)
    #: The institution's name on reports and mail ("강남구청"); None: none shown.
    institution: DisplayName | None = None
    #: Per terminal and UTC day: quarantine rows and payload bytes kept; beyond
    #: them bad messages are counted (onetap_ingest_quarantine_dropped_total)
    #: and dropped, and an alert is raised.
    quarantine_rows_per_day: Positive = 1000
    quarantine_bytes_per_day: Positive = 16 * 1024 * 1024
    #: Quarantine rows older than this many days are deleted by retention; 0: kept.
    quarantine_days: NonNegative = 90
    #: Whose X-Forwarded-Proto/-For uvicorn believes (the reverse proxy), comma-separated.
    forwarded_allow_ips: Annotated[str, Meta(min_length=1), After(_ip_list)] = "127.0.0.1"
    #: Messages waiting with none processed for this many seconds: ingest is
    #: stuck (/healthz 503, systemd's watchdog no longer petted).
    ingest_stall_s: Positive = 20
    #: Any other supervised thread (alerts, retention, survey) busy in one pass
    #: for this many seconds is stuck.
    thread_stall_s: Positive = 600
    #: Where the file settings came from (for messages), None without a file.
    source: str | None = field(default=None, compare=False)

    def check(self) -> None:
        problem = protocol.broker_security_problem(
            self.broker, ca_file=self.ca_file, certfile=self.certfile, keyfile=self.keyfile,
            allow_plain_remote=self.allow_plain_remote)
        if problem is not None:
            raise KeyProblem(*problem)
        if self.reports and self.mail is None:
            raise KeyProblem("reports", "[reports] need a [mail] server to send them")
        for name, user in self.users.items():
            unknown = [g for g in user.groups if g not in self.groups]
            if unknown:
                raise KeyProblem(("users", name, "groups"), f"names no [groups.<id>] table: {', '.join(unknown)}")

    def user_sites(self, name: str) -> frozenset[str] | None:
        """The sites dashboard user *name* sees: their sites and their groups' sites; None: every site."""
        user = self.users[name]
        if user.sites is None:
            return None
        return user.sites.union(*(self.groups[g].sites for g in user.groups))

    def site_name(self, site: str) -> str:
        """The site's display name, else its identifier."""
        site_config = self.sites.get(site)
        return site_config.name if site_config is not None and site_config.name else site

    def terminal_name(self, site: str, terminal: str) -> str:
        """The terminal's display name, else its identifier."""
        site_config = self.sites.get(site)
        return (site_config.terminals.get(terminal) if site_config is not None else None) or terminal

    def group_name(self, group: str) -> str:
        """The group's display name, else its identifier."""
        group_config = self.groups.get(group)
        return group_config.name if group_config is not None and group_config.name else group

    def target(self, site: str | None = None, group: str | None = None) -> float | None:
        """The target index of *site* (else of *group*); None when none is set."""
        site_config = self.sites.get(site) if site else None
        if site_config is not None and site_config.target is not None:
            return site_config.target
        group_config = self.groups.get(group) if group else None
        return group_config.target if group_config is not None else None

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


#: Every key with a variable: dotted name -> ONETAP_* (the example documents each).
ENV_VARIABLES = {key.dotted: key.env for key in onetap_config.keys(ServerConfig) if key.env}
#: The names of the [alerts] keys.
ALERT_KEYS = onetap_config.key_names(AlertsConfig)


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
    return onetap_config.load(ServerConfig, path, env=env, overrides=overrides, error=ConfigError,
                              defaults={"source": None if path is None else str(path)})


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
