"""The kiosk's configuration: one frozen dataclass from TOML, ONETAP_* environment and flags."""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from kiosk import protocol
from kiosk.protocol import is_loopback, parse_broker_url  # noqa: F401 - part of this module's API
from kiosk.errors import ConfigError

DEFAULT_BROKER = "mqtt://127.0.0.1:1883"
OUTBOX_FILE = "outbox.db"


def default_data_dir(env: Mapping[str, str] | None = None) -> Path:
    """$XDG_DATA_HOME/onetap, else ~/.local/share/onetap."""
    env = os.environ if env is None else env
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "onetap"


class _Invalid(ValueError):
    """A section's own check failed on *key*; the loader adds where the value came from."""

    def __init__(self, key: str, reason: str):
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


def _positive(key: str, value: float) -> None:
    if value <= 0:
        raise _Invalid(key, f"{value!r} must be > 0")


@dataclass(frozen=True)
class MqttConfig:
    """``[mqtt]``: the broker account and the uplink's timings."""

    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    certfile: Path | None = None
    keyfile: Path | None = None
    allow_plain_remote: bool = False
    ack_timeout_s: float = 30.0
    status_interval_s: float = 60.0
    session_expiry_s: int = 7 * 24 * 3600
    mqtt_protocol: str = "5"

    def __post_init__(self) -> None:
        if self.mqtt_protocol not in ("5", "3.1.1"):
            raise _Invalid("mqtt_protocol", f"{self.mqtt_protocol!r} must be \"5\" or \"3.1.1\"")
        _positive("ack_timeout_s", self.ack_timeout_s)
        _positive("status_interval_s", self.status_interval_s)
        _positive("session_expiry_s", self.session_expiry_s)
        if self.session_expiry_s > 0xFFFFFFFF:
            raise _Invalid("session_expiry_s", "must fit in 32 bits (MQTT 5)")
        if self.password is not None and self.username is None:
            raise _Invalid("password", "is set but username is not")
        if (self.certfile is None) != (self.keyfile is None):
            raise _Invalid("certfile" if self.keyfile is not None else "keyfile",
                           "a client certificate needs both certfile and keyfile")


@dataclass(frozen=True)
class OutboxConfig:
    """``[outbox]``: how long confirmed ratings stay on the kiosk."""

    retention_days: int = 30

    def __post_init__(self) -> None:
        if self.retention_days < 0:
            raise _Invalid("retention_days", f"{self.retention_days!r} must be >= 0")


def _range(key: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise _Invalid(key, f"{value!r} must be between {low:g} and {high:g}")


@dataclass(frozen=True)
class UiConfig:
    """``[ui]``: the touchscreen: languages, accessibility, timings, opening hours, staff PIN, window."""

    language: str = "ko"
    languages: tuple[str, ...] = ("ko", "en", "zh", "vi", "ja")
    large_text: bool = False
    high_contrast: bool = False
    guard_ms: int = 500
    cooldown_s: float = 3.0
    followup_timeout_s: float = 10.0
    thank_you_s: float = 2.5
    reason_threshold: int = 2
    age_group: bool = False
    sound: bool = False
    # Voice guidance (kiosk/voice.py): on for every visit, its volume, the
    # institution's own recordings (DIR/<lang>/<key>.wav) and the rendered cache.
    voice: bool = False
    voice_volume: float = 1.0
    voice_dir: str = ""
    voice_cache: str = ""
    low_screen: bool = False
    # An on-screen staff-call control (Status help_requested, an alert on the board).
    help_button: bool = False
    hours: tuple[str, ...] = ()
    count_when_closed: bool = False
    maintenance_pin: str = "0000"
    maintenance_hold_s: float = 5.0
    fullscreen: bool | None = None
    size: tuple[int, ...] = (800, 480)
    fps: int = 30
    touch_input: str = "mouse,disable_multitouch"

    def __post_init__(self) -> None:
        from kiosk.catalog import LANGUAGES

        for lang in self.languages:
            if lang not in LANGUAGES:
                raise _Invalid("languages", f"{lang!r} has no catalog (known: {', '.join(LANGUAGES)})")
        if not self.languages:
            raise _Invalid("languages", "must name at least one language")
        if self.language not in self.languages:
            raise _Invalid("language", f"{self.language!r} is not one of languages")
        for key, (low, high) in protocol.SURVEY_TIMINGS.items():
            _range(key, getattr(self, key), low, high)
        _range("reason_threshold", self.reason_threshold, 0, 5)
        _range("guard_ms", self.guard_ms, 0, 3000)
        _range("maintenance_hold_s", self.maintenance_hold_s, 1, 60)
        _range("fps", self.fps, 1, 120)
        _range("voice_volume", self.voice_volume, 0, 1)
        try:
            protocol.parse_hours("hours", self.hours)
        except protocol.ProtocolError as exc:
            raise _Invalid("hours", f"{exc.field}: {exc.reason}") from None
        if not (self.maintenance_pin.isdigit() and 4 <= len(self.maintenance_pin) <= 12):
            raise _Invalid("maintenance_pin", "must be 4 to 12 digits")
        if len(self.size) != 2 or min(self.size) < 100:
            raise _Invalid("size", f"{list(self.size)!r} must be [width, height] in pixels")
        if not self.touch_input.strip():
            raise _Invalid("touch_input", "must name one Kivy input provider")


_GPIO = range(0, 28)


@dataclass(frozen=True)
class ButtonsConfig:
    """``[buttons]``: physical buttons (BCM GPIO numbers) and LEDs; no pins, no buttons."""

    pins: tuple[int, ...] = ()
    scores: tuple[int, ...] = ()
    leds: tuple[int, ...] = ()
    led_connected: int | None = None
    led_buffering: int | None = None
    led_error: int | None = None
    debounce_ms: int = 50
    pull_up: bool = True
    # Keypad buttons ◀ ▶ 선택 (move the focus, choose): a blind citizen's way in.
    left: int | None = None
    right: int | None = None
    select: int | None = None

    def __post_init__(self) -> None:
        if self.scores and len(self.scores) != len(self.pins):
            raise _Invalid("scores", "needs one score per pin")
        if self.pins and not self.scores and len(self.pins) != 5:
            raise _Invalid("pins", f"{len(self.pins)} pins need scores = [...], one per pin "
                                   "(exactly 5 pins mean scores 1..5)")
        for score in self.scores:
            if score not in protocol.SCORES:
                raise _Invalid("scores", f"{score!r} is not 1..5")
        if self.leds and len(self.leds) != len(self.pins):
            raise _Invalid("leds", "needs one LED per pin (or none)")
        used: list[tuple[str, int]] = [("pins", p) for p in self.pins] + [("leds", p) for p in self.leds]
        used += [(key, getattr(self, key)) for key in ("led_connected", "led_buffering", "led_error",
                                                       "left", "right", "select")
                 if getattr(self, key) is not None]
        seen: set[int] = set()
        for key, pin in used:
            if pin not in _GPIO:
                raise _Invalid(key, f"GPIO {pin!r} is not 0..27")
            if pin in seen:
                raise _Invalid(key, f"GPIO {pin} is used twice")
            seen.add(pin)
        _range("debounce_ms", self.debounce_ms, 1, 2000)

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
class KioskConfig:
    """Everything a kiosk needs, validated. Build it with :func:`load_config`.

    Top-level keys are also command-line flags; each dataclass-typed field is
    a TOML table (``[mqtt]``, ``[outbox]``): to add a section, add a frozen
    dataclass field here with a default, and describe its keys in
    deploy/kiosk.example.toml. Environment overrides follow the shape:
    ``ONETAP_<KEY>`` and ``ONETAP_<SECTION>_<KEY>``.
    """

    site: str = "demo"
    terminal: str = "counter-01"
    broker: str = DEFAULT_BROKER
    data_dir: Path = field(default_factory=default_data_dir)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    ui: UiConfig = field(default_factory=UiConfig)
    buttons: ButtonsConfig = field(default_factory=ButtonsConfig)
    #: Where the file came from (None: defaults only); not a key.
    source: Path | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for key in ("site", "terminal"):
            value = getattr(self, key)
            if not protocol.is_identifier(value):
                raise _Invalid(key, f"{value!r} is not an identifier (^{protocol.IDENT_PATTERN}$)")
        try:
            scheme, host, _ = parse_broker_url(self.broker)
        except ValueError as exc:
            raise _Invalid("broker", str(exc)) from None
        if scheme == "mqtt" and not is_loopback(host) and not self.mqtt.allow_plain_remote:
            raise _Invalid("broker", f"{self.broker!r} is plain MQTT to another machine: the "
                           "password and ratings would cross the network unencrypted; use "
                           "mqtts:// with mqtt.ca_file, or set mqtt.allow_plain_remote = true")
        if scheme == "mqtt" and (self.mqtt.ca_file or self.mqtt.certfile):
            raise _Invalid("mqtt.ca_file", "TLS files are set but the broker URL is mqtt://, not mqtts://")

    @property
    def outbox_path(self) -> Path:
        return self.data_dir / OUTBOX_FILE

    @property
    def tls(self) -> bool:
        return parse_broker_url(self.broker)[0] == "mqtts"

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict, password hidden (for --check-config and logs)."""
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


# Aliases kept short for the most used overrides (the brief's ONETAP_BROKER etc.
# are simply top-level keys); section keys use ONETAP_<SECTION>_<KEY>.
ENV_PREFIX = "ONETAP_"


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _sections(cls: type = KioskConfig) -> dict[str, type]:
    """Section name -> dataclass, read from KioskConfig's fields."""
    hints = _hints(cls)
    return {
        f.name: hints[f.name]
        for f in dataclasses.fields(cls)
        if isinstance(hints[f.name], type) and dataclasses.is_dataclass(hints[f.name])
    }


def _keys(cls: type) -> dict[str, Any]:
    """Plain (non-section) keys of a dataclass -> their type."""
    hints = _hints(cls)
    return {
        f.name: hints[f.name]
        for f in dataclasses.fields(cls)
        if f.name != "source"
        and not (isinstance(hints[f.name], type) and dataclasses.is_dataclass(hints[f.name]))
    }


def _coerce(key: str, kind: Any, value: Any, from_text: bool) -> Any:
    """Check *value* against the field type; from_text: it came from env/flags as a string."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(kind) if a is not type(None)]
        if value is None or (from_text and value == ""):
            return None
        if len(options) == 1:
            return _coerce(key, options[0], value, from_text)
        raise _Invalid(key, "unsupported union type")
    if origin in (tuple, list):
        (item,) = [a for a in typing.get_args(kind) if a is not Ellipsis][:1] or [str]
        if from_text and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise _Invalid(key, f"{value!r} must be a list")
        return tuple(_coerce(key, item, v, from_text) for v in value)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if from_text and isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
        raise _Invalid(key, f"{value!r} must be true or false")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if from_text and isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise _Invalid(key, f"{value!r} must be an integer")
    if kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if from_text and isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise _Invalid(key, f"{value!r} must be a number")
    if kind is Path:
        if isinstance(value, (str, Path)) and str(value):
            return Path(value).expanduser()
        raise _Invalid(key, f"{value!r} must be a path")
    if kind is str:
        if isinstance(value, str):
            return value
        raise _Invalid(key, f"{value!r} must be a string")
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        raise _Invalid(key, "is a table; write it as [" + key + "]")
    return value


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
    sections = _sections()
    # values[section or ""][key] = (value, origin, from_text)
    values: dict[str, dict[str, tuple[Any, str, bool]]] = {"": {}, **{s: {} for s in sections}}

    if source is not None:
        try:
            with open(source, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"{source}: no such config file") from None
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read ({exc.strerror})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: not valid TOML ({exc})") from None
        top_keys = _keys(KioskConfig)
        for key, value in data.items():
            if key in sections:
                if not isinstance(value, dict):
                    raise ConfigError(f"{source}: {key}: must be a table [{key}]")
                allowed = _keys(sections[key])
                for sub, subvalue in value.items():
                    if sub not in allowed:
                        raise ConfigError(
                            f"{source}: unknown key {key}.{sub} "
                            f"(known in [{key}]: {', '.join(sorted(allowed))})"
                        )
                    values[key][sub] = (subvalue, str(source), False)
            elif key in top_keys:
                values[""][key] = (value, str(source), False)
            else:
                known = sorted([*top_keys, *(f"[{s}]" for s in sections)])
                raise ConfigError(f"{source}: unknown key {key} (known: {', '.join(known)})")

    for section, keys in [("", _keys(KioskConfig)), *((s, _keys(c)) for s, c in sections.items())]:
        for key in keys:
            name = ENV_PREFIX + (f"{section}_{key}" if section else key).upper()
            if name in env:
                values[section][key] = (env[name], f"environment {name}", True)

    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        section, _, key = dotted.rpartition(".")
        if section not in values or key not in (_keys(sections[section]) if section else _keys(KioskConfig)):
            raise ConfigError(f"command line: unknown key {dotted}")
        values[section][key] = (value, "command line", isinstance(value, str))

    def where(section: str, key: str) -> str:
        found = values[section].get(key)
        return found[1] if found else "defaults"

    def build(cls: type, section: str, extra: dict[str, Any]) -> Any:
        kinds = _keys(cls)
        kwargs: dict[str, Any] = dict(extra)
        for key, (value, origin, from_text) in values[section].items():
            dotted = f"{section}.{key}" if section else key
            try:
                kwargs[key] = _coerce(dotted, kinds[key], value, from_text)
            except _Invalid as exc:
                raise ConfigError(f"{origin}: {dotted} = {value!r}: {exc.reason}") from None
        try:
            return cls(**kwargs)
        except _Invalid as exc:
            dotted = f"{section}.{exc.key}" if section else exc.key
            value = values[section].get(exc.key, (getattr(cls, exc.key, None),))[0]
            raise ConfigError(f"{where(section, exc.key)}: {dotted} = {value!r}: {exc.reason}") from None

    built = {name: build(cls, name, {}) for name, cls in sections.items()}
    if "data_dir" not in values[""]:
        built["data_dir"] = default_data_dir(env)
    return build(KioskConfig, "", {**built, "source": source})
