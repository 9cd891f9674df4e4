"""The kiosk's configuration: settings dataclasses (onetap_config, msgspec) filled from TOML, ONETAP_* environment and flags."""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

from msgspec import Meta

import onetap_config
from onetap_config import After, FilePath, KeyProblem, Settings, checked
from kiosk import protocol
from kiosk.catalog import LANGUAGES
from kiosk.errors import ConfigError
from kiosk.protocol import is_loopback, parse_broker_url  # noqa: F401 - part of this module's API

DEFAULT_BROKER = "mqtt://127.0.0.1:1883"
OUTBOX_FILE = "outbox.db"


def default_data_dir(env: Mapping[str, str] | None = None) -> Path:
    """$XDG_DATA_HOME/onetap, else ~/.local/share/onetap."""
    env = os.environ if env is None else env
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "onetap"


def _identifier(value: str) -> str:
    if not protocol.is_identifier(value):
        raise ValueError(f"is not an identifier (^{protocol.IDENT_PATTERN}$)")
    return value


def _broker(value: str) -> str:
    parse_broker_url(value)
    return value


def _hours(value: tuple[str, ...]) -> tuple[str, ...]:
    try:
        protocol.parse_hours("hours", value)
    except protocol.ProtocolError as exc:
        raise ValueError(f"{exc.field}: {exc.reason}") from None
    return value


Positive = Annotated[float, Meta(gt=0)]


def _gpio(pin: int) -> int:
    if not 0 <= pin <= 27:
        raise ValueError(f"GPIO {pin!r} is not 0..27")
    return pin


Gpio = Annotated[int, After(_gpio)]
Host = Annotated[str, checked(lambda v: re.fullmatch(r"[A-Za-z0-9.:-]{1,253}", v), "is not a host name or address")]


def _timing(key: str) -> Any:
    low, high = protocol.SURVEY_TIMINGS[key]
    return Annotated[float, Meta(ge=low, le=high)]


@dataclass(frozen=True)
class MqttConfig(Settings):
    """``[mqtt]``: the broker account and the uplink's timings."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: FilePath | None = None
    certfile: FilePath | None = None
    keyfile: FilePath | None = None
    allow_plain_remote: bool = False
    ack_timeout_s: Positive = 30.0
    status_interval_s: Positive = 60.0
    #: Fits in the 32 bits MQTT 5 gives it.
    session_expiry_s: Annotated[int, Meta(gt=0, le=0xFFFFFFFF)] = 7 * 24 * 3600
    mqtt_protocol: Literal["5", "3.1.1"] = "5"

    def check(self) -> None:
        if self.password is not None and self.username is None:
            raise KeyProblem("password", "is set but username is not")


@dataclass(frozen=True)
class OutboxConfig(Settings):
    """``[outbox]``: how long confirmed ratings stay on the kiosk."""

    retention_days: Annotated[int, Meta(ge=0)] = 30


@dataclass(frozen=True)
class AuditConfig(Settings):
    """``[audit]``: the terminal's signing key and chain seed (written by `onetap-server provision`)."""

    key_file: Path | None = None
    chain_seed: Annotated[str, checked(protocol.is_chain, "must be 64 lower-case hex digits")] | None = None


@dataclass(frozen=True)
class UiConfig(Settings):
    """``[ui]``: the touchscreen: languages, accessibility, timings, opening hours, staff PIN, window."""

    language: str = "ko"
    languages: Annotated[tuple[str, ...], checked(lambda v: v and set(v) <= set(LANGUAGES),
                                                    f"must name languages with a catalog ({', '.join(LANGUAGES)})")] \
        = LANGUAGES
    large_text: bool = False
    high_contrast: bool = False
    guard_ms: Annotated[int, Meta(ge=0, le=3000)] = 500
    cooldown_s: _timing("cooldown_s") = 3.0
    followup_timeout_s: _timing("followup_timeout_s") = 10.0
    thank_you_s: _timing("thank_you_s") = 2.5
    reason_threshold: Annotated[int, Meta(ge=0, le=5)] = 2
    age_group: bool = False
    sound: bool = False
    #: Voice guidance (kiosk/voice.py) on for every visit, its volume, the
    #: institution's own recordings (DIR/<lang>/<key>.wav) and the rendered cache.
    voice: bool = False
    voice_volume: Annotated[float, Meta(ge=0, le=1)] = 1.0
    voice_dir: str = ""
    voice_cache: str = ""
    low_screen: bool = False
    #: An on-screen staff-call control (Status help_requested, an alert on the board).
    help_button: bool = False
    hours: Annotated[tuple[str, ...], After(_hours)] = ()
    count_when_closed: bool = False
    #: 4 to 12 digits, or the hash provision writes.
    maintenance_pin: Annotated[str, checked(protocol.is_pin_setting,
                                             "must be 4 to 12 digits, or a hash from provision")] \
        = field(default="0000", repr=False)
    maintenance_hold_s: Annotated[float, Meta(ge=1, le=60)] = 5.0
    fullscreen: bool | None = None
    size: Annotated[tuple[int, int], checked(lambda v: min(v) >= 100,
                                              "must be [width, height] in pixels")] = (800, 480)
    fps: Annotated[int, Meta(ge=1, le=120)] = 30
    touch_input: Annotated[str, checked(str.strip, "must name one Kivy input provider")] \
        = "mouse,disable_multitouch"
    #: Wait for each frame to be rasterised before reading the next touch (kiosk/ui/rasteriser.py).
    finish_frames: Literal["auto", "always", "never"] = "auto"

    def check(self) -> None:
        if self.language not in self.languages:
            raise KeyProblem("language", "is not one of languages")


@dataclass(frozen=True)
class ButtonsConfig(Settings):
    """``[buttons]``: physical buttons (BCM GPIO numbers) and LEDs; no pins, no buttons."""

    pins: tuple[Gpio, ...] = ()
    scores: tuple[Annotated[int, Meta(ge=1, le=5)], ...] = ()
    leds: tuple[Gpio, ...] = ()
    led_connected: Gpio | None = None
    led_buffering: Gpio | None = None
    led_error: Gpio | None = None
    debounce_ms: Annotated[int, Meta(ge=1, le=2000)] = 50
    pull_up: bool = True
    # Keypad buttons ◀ ▶ 선택 (move the focus, choose): a blind citizen's way in.
    left: Gpio | None = None
    right: Gpio | None = None
    select: Gpio | None = None

    def check(self) -> None:
        if self.scores and len(self.scores) != len(self.pins):
            raise KeyProblem("scores", "needs one score per pin")
        if self.pins and not self.scores and len(self.pins) != 5:
            raise KeyProblem("pins", f"{len(self.pins)} pins need scores = [...], one per pin "
                                     "(exactly 5 pins mean scores 1..5)")
        if self.leds and len(self.leds) != len(self.pins):
            raise KeyProblem("leds", "needs one LED per pin (or none)")
        used: list[tuple[str, int]] = [("pins", p) for p in self.pins] + [("leds", p) for p in self.leds]
        used += [(key, getattr(self, key)) for key in ("led_connected", "led_buffering", "led_error",
                                                       "left", "right", "select")
                 if getattr(self, key) is not None]
        seen: set[int] = set()
        for key, pin in used:
            if pin in seen:
                raise KeyProblem(key, f"GPIO {pin} is used twice")
            seen.add(pin)

    @property
    def score_map(self) -> dict[int, int]:
        """GPIO pin -> score."""
        return dict(zip(self.pins, self.scores or protocol.SCORES))

    @property
    def key_map(self) -> dict[int, str]:
        """GPIO pin -> keypad action (kiosk.flow.LEFT, RIGHT, SELECT)."""
        return {pin: action for action in ("left", "right", "select")
                if (pin := getattr(self, action)) is not None}


@dataclass(frozen=True)
class KioskConfig(Settings):
    """Everything a kiosk needs, validated. Build it with :func:`load_config`.

    A key is one field (a table is a dataclass-typed field); its variable is
    ONETAP_<KEY> or ONETAP_<TABLE>_<KEY>, and deploy/kiosk.example.toml must
    describe it (tests/test_onetap_config.py fails otherwise).
    """

    site: Annotated[str, After(_identifier)] = "demo"
    terminal: Annotated[str, After(_identifier)] = "counter-01"
    broker: Annotated[str, After(_broker)] = DEFAULT_BROKER
    data_dir: FilePath = field(default_factory=default_data_dir)
    #: The institution's NTP servers; deploy/pi/setup.sh makes them timesyncd's.
    ntp: tuple[Host, ...] = ()
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    ui: UiConfig = field(default_factory=UiConfig)
    buttons: ButtonsConfig = field(default_factory=ButtonsConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    #: Where the file came from (None: defaults only); not a key.
    source: Path | None = field(default=None, compare=False)

    def check(self) -> None:
        mqtt = self.mqtt
        problem = protocol.broker_security_problem(
            self.broker, ca_file=mqtt.ca_file, certfile=mqtt.certfile, keyfile=mqtt.keyfile,
            allow_plain_remote=mqtt.allow_plain_remote, prefix="mqtt.")
        if problem is not None:
            key, reason = problem
            raise KeyProblem(key if key == "broker" else f"mqtt.{key}", reason)

    @property
    def outbox_path(self) -> Path:
        return self.data_dir / OUTBOX_FILE

    @property
    def key_path(self) -> Path | None:
        """[audit] key_file, a relative one read beside the config file (as provision writes it;
        on a Pi, systemd hands both over in the service's credentials directory)."""
        key = self.audit.key_file
        if key is None or key.is_absolute() or self.source is None:
            return key
        return self.source.parent / key

    @property
    def chain_seed(self) -> str:
        """The seed the outbox chains from: [audit] chain_seed, else the keyless default."""
        return self.audit.chain_seed or protocol.default_chain_seed(self.site, self.terminal)

    @property
    def tls(self) -> bool:
        return parse_broker_url(self.broker)[0] == "mqtts"

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict, password and PIN hidden (for --check-config and logs)."""
        out = _as_dict(self)
        if out["mqtt"].get("password") is not None:
            out["mqtt"]["password"] = "***"
        out["ui"]["maintenance_pin"] = "***"
        return out


def _as_dict(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        if f.name == "source":
            continue
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = _as_dict(value)
        elif isinstance(value, Path):
            out[f.name] = str(value)
        else:
            out[f.name] = value
    return out


def load_config(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> KioskConfig:
    """Defaults, then the TOML file, then ``ONETAP_*`` variables, then *overrides*.

    *overrides* maps keys (``"broker"``, ``"mqtt.username"``) to values, as the
    command line gives them; None values are ignored. Every problem is a
    ConfigError naming the key and where its value came from.
    """
    env = os.environ if env is None else env
    source = Path(path) if path is not None else None
    return onetap_config.load(KioskConfig, source, env=env, overrides=overrides, error=ConfigError,
                              defaults={"data_dir": default_data_dir(env), "source": source})
