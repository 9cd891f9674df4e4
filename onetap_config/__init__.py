"""Settings for both sides: pydantic models filled from TOML, ONETAP_* environment and flags, errors naming key and origin.

A configuration is a frozen pydantic dataclass (``extra="forbid"``): each
field a key, each dataclass-typed field a ``[table]``, each
``dict[str, <dataclass>]`` field a set of ``[table.<name>]`` tables. Adding a
key is one annotated field with a default; its environment variable is
``ONETAP_<TABLE>_<KEY>`` unless ``Env("ONETAP_...")`` names another, and
deploy/*.example.toml must describe it (tests/test_onetap_config.py checks).

Why not pydantic-settings: its sources merge before validation, so an error
could no longer say whether the bad value came from the file, which variable,
or which flag; it reads lists from the environment as JSON where ONETAP_REASONS
and friends are comma-separated; and a model built in code (tests, the demo)
must not read os.environ.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from pathlib import Path
from urllib.parse import urlsplit
from typing import Annotated, Any, Callable, Iterator, Mapping, TypeVar

from pydantic import AfterValidator, BeforeValidator, ConfigDict, TypeAdapter, ValidationError

T = TypeVar("T")

#: Every settings dataclass (declared frozen=True too): unknown keys are errors.
STRICT = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


@dataclasses.dataclass(frozen=True)
class Env:
    """Field metadata: this key's environment variable when it is not
    ONETAP_<TABLE>_<KEY> (None: no variable)."""

    name: str | None


@dataclasses.dataclass(frozen=True)
class EnvOnly:
    """Field metadata: a secret taken from its variable only, refused in the file."""


class KeyProblem(ValueError):
    """A check across keys failed on *key* (raised inside a model validator)."""

    def __init__(self, key: str, reason: str):
        super().__init__(reason)
        self.key = key
        self.reason = reason


def _no_bool(value: Any) -> Any:
    # pydantic's lax mode reads true as 1; a flag where a number belongs is a mistake.
    if isinstance(value, bool):
        raise ValueError("must be a number, not true or false")
    return value


Int = Annotated[int, BeforeValidator(_no_bool)]
Float = Annotated[float, BeforeValidator(_no_bool)]


def checked(test: Callable[[Any], Any], reason: str) -> AfterValidator:
    """An AfterValidator: *test(value)* true, or the error *reason*."""
    def validate(value: Any) -> Any:
        if not test(value):
            raise ValueError(reason)
        return value

    return AfterValidator(validate)


def parsed_by(parse: Callable[[Any], Any]) -> AfterValidator:
    """Valid when *parse(value)* raises no ValueError; the value is kept."""
    def validate(value: Any) -> Any:
        parse(value)
        return value

    return AfterValidator(validate)


def expanded_path(value: Path) -> Path:
    """A path with ``~`` expanded; empty or ``.`` is no path."""
    if not str(value) or str(value) == ".":
        raise ValueError("must be a path")
    return value.expanduser()


FilePath = Annotated[Path, AfterValidator(expanded_path)]


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(the type without Optional/Annotated, whether None is allowed)."""
    optional = False
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            optional = optional or len(args) < len(typing.get_args(annotation))
            if len(args) != 1:
                return annotation, optional
            annotation = args[0]
        else:
            return annotation, optional


def _is_table(kind: Any) -> bool:
    return isinstance(kind, type) and dataclasses.is_dataclass(kind)


@dataclasses.dataclass(frozen=True)
class Key:
    """One settable key of a model: its path, type and environment variable."""

    path: tuple[str, ...]
    kind: Any
    optional: bool
    env: str | None
    env_only: bool
    #: The table holding it may be absent (an optional [mail]): its variables
    #: then apply only when the file has the table.
    table_optional: bool

    @property
    def dotted(self) -> str:
        return ".".join(self.path)

    @property
    def is_list(self) -> bool:
        return typing.get_origin(self.kind) in (tuple, list, frozenset, set)


def keys(model: type, prefix: tuple[str, ...] = (), table_optional: bool = False) -> Iterator[Key]:
    """Every key of *model* and of its tables (named tables excluded: they have no variables)."""
    for name, info in model.__pydantic_fields__.items():
        if name == "source":
            continue
        kind, optional = _unwrap(info.annotation)
        path = (*prefix, name)
        if _is_table(kind):
            yield from keys(kind, path, table_optional or optional)
            continue
        if _named_table(kind) is not None:
            continue
        env = "ONETAP_" + "_".join(path).upper()
        env_only = False
        for meta in info.metadata:
            if isinstance(meta, Env):
                env = meta.name
            elif isinstance(meta, EnvOnly):
                env_only = True
        yield Key(path, kind, optional, env, env_only, table_optional)


def tables(model: type, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], type, bool]]:
    """Every table of *model*: (path, its dataclass, named: a [path.<name>] family)."""
    for name, info in model.__pydantic_fields__.items():
        kind, _ = _unwrap(info.annotation)
        path = (*prefix, name)
        if _is_table(kind):
            yield path, kind, False
            yield from tables(kind, path)
        elif _named_table(kind) is not None:
            inner = _named_table(kind)
            yield path, inner, True
            yield from tables(inner, (*path, "<name>"))


def read_toml(path: Path, error: type[Exception], *, label: str | None = None,
              what: str = "config file") -> dict[str, Any]:
    """The TOML document at *path*, or *error* saying why not (named by *label*, else the path)."""
    where = label or path
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise error(f"{where}: no such {what}") from None
    except OSError as exc:
        raise error(f"{where}: cannot read ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{where}: not valid TOML ({exc})") from None


def flag_name(dotted: str) -> str:
    """The command-line flag that sets *dotted* (``data_dir`` -> ``--data-dir``)."""
    return "--" + dotted.replace(".", "-").replace("_", "-")


def load(model: type[T], path: str | Path | None, *, env: Mapping[str, str],
         overrides: Mapping[str, Any] | None, error: type[Exception],
         defaults: Mapping[str, Any] | None = None,
         prepare: Callable[[dict[str, Any]], None] | None = None) -> T:
    """*model* from *defaults*, then the TOML file, then ``ONETAP_*`` variables of
    *env*, then *overrides* (``{"broker": ..., "mqtt.username": ...}``, None
    ignored). Every problem is an *error* naming the key and where its value
    came from (the file, ``environment ONETAP_X`` or ``--flag``)."""
    data: dict[str, Any] = {}
    origins: dict[str, str] = {}
    known = {key.dotted: key for key in keys(model)}
    for dotted, value in (defaults or {}).items():
        _put(data, tuple(dotted.split(".")), value)
    if path is not None:
        document = read_toml(Path(path), error)
        if "source" in document:
            raise error(f"{path}: unknown key source")
        for key in known.values():
            if key.env_only and _get(document, key.path) is not _MISSING:
                raise error(f"{path}: unknown key {key.dotted} (it comes from {key.env} only)")
        _merge(data, document)
        _mark(document, (), str(path), origins)
    for key in known.values():
        if key.env is None or key.env not in env:
            continue
        if key.table_optional and _get(data, key.path[:-1]) is _MISSING:
            continue
        value: Any = env[key.env]
        if key.is_list:
            value = [part.strip() for part in value.split(",") if part.strip()]
        _put(data, key.path, value)
        origins[key.dotted] = f"environment {key.env}"
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        if dotted not in known:
            raise error(f"{flag_name(dotted)}: unknown key {dotted}")
        _put(data, known[dotted].path, value)
        origins[dotted] = flag_name(dotted)
    for key in known.values():
        if key.optional and _get(data, key.path) == "":
            _put(data, key.path, None)  # an empty value (file, variable or flag) clears the setting
    if prepare is not None:
        prepare(data)
    try:
        return TypeAdapter(model).validate_python(data)
    except ValidationError as exc:
        # An unknown key first: a misspelt key is why a value seems missing or wrong.
        problems = sorted(exc.errors(), key=lambda p: p["type"] not in _UNKNOWN)
        raise error(describe(problems[0], model, data, origins, path)) from None


_MISSING = object()
_UNKNOWN = ("unexpected_keyword_argument", "extra_forbidden")


def _get(data: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(data, dict) or part not in data:
            return _MISSING
        data = data[part]
    return data


def _put(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for part in path[:-1]:
        inner = data.get(part)
        if not isinstance(inner, dict):
            inner = data[part] = {}
        data = inner
    data[path[-1]] = value


def _merge(into: dict[str, Any], document: Mapping[str, Any]) -> None:
    for name, value in document.items():
        if isinstance(value, dict) and isinstance(into.get(name), dict):
            _merge(into[name], value)
        else:
            into[name] = value


def _mark(document: Any, prefix: tuple[str, ...], origin: str, origins: dict[str, str]) -> None:
    if isinstance(document, dict):
        for name, value in document.items():
            path = (*prefix, str(name))
            origins[".".join(path)] = origin
            _mark(value, path, origin, origins)


#: pydantic's error types, said the way this project's messages say them.
_REASONS = {
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "tuple_type": "must be a list",
    "list_type": "must be a list",
    "frozen_set_type": "must be a list",
    "dict_type": "must be a table",
    "path_type": "must be a path",
}


def _reason(problem: Mapping[str, Any]) -> str:
    kind = problem["type"]
    if kind in _REASONS:
        return _REASONS[kind]
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        sign = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<",
                "less_than_equal": "<="}[kind]
        bound = next(iter(problem["ctx"].values()))
        return f"must be {sign} {bound}"
    message = str(problem["msg"])
    return message.removeprefix("Value error, ")


def describe(problem: Mapping[str, Any], model: type, data: Mapping[str, Any],
             origins: Mapping[str, str], path: str | Path | None) -> str:
    """One line: where the value came from, the key, the value and what is wrong."""
    loc = [str(part) for part in problem["loc"] if not isinstance(part, int) and part != "[key]"]
    cause = (problem.get("ctx") or {}).get("error")
    if isinstance(cause, KeyProblem):
        loc.append(cause.key)
    dotted = ".".join(loc)
    origin = None
    for end in range(len(loc), 0, -1):
        origin = origins.get(".".join(loc[:end]))
        if origin is not None:
            break
    if origin is None:
        origin = str(path) if path is not None else "defaults"
    kind = problem["type"]
    if kind in _UNKNOWN:
        return f"{origin}: unknown key {dotted}{_known(model, loc[:-1])}"
    if kind == "missing":
        return f"{origin}: {dotted} is missing"
    if kind in ("dataclass_type", "dataclass_exact_type", "model_type"):
        return f"{origin}: {dotted}: must be a table [{dotted}]"
    value = _shown(model, loc, _get(data, tuple(loc)))
    reason = cause.reason if isinstance(cause, KeyProblem) else _reason(problem)
    # "broker = 'x' is plain MQTT...", "keyfile is missing: ...", "ui.fps = 0: must be >= 1"
    joint = " " if reason.startswith("is ") else ": "
    if value is _MISSING:
        return f"{origin}: {dotted}{joint}{reason}"
    return f"{origin}: {dotted} = {value!r}{joint}{reason}"


def _field(model: type, loc: list[str]) -> Any:
    """The pydantic FieldInfo of the key at *loc*, or None."""
    current: Any = model
    info = None
    parts = iter(loc)
    for part in parts:
        fields = getattr(current, "__pydantic_fields__", None)
        if not fields or part not in fields:
            return None
        info = fields[part]
        kind, _ = _unwrap(info.annotation)
        inner = _named_table(kind)
        if inner is not None:
            if next(parts, None) is None:
                return info
            kind = inner
        current = kind
    return info


def _shown(model: type, loc: list[str], value: Any) -> Any:
    """*value* as an error message may show it: secrets hidden, URL passwords too."""
    info = _field(model, loc)
    if value is _MISSING:
        return value
    if info is not None and info.repr is False:
        return "***"
    if isinstance(value, str) and "://" in value:
        parts = urlsplit(value)
        if parts.password:
            return value.replace(f":{parts.password}@", ":***@", 1)
    return value


def _named_table(kind: Any) -> type | None:
    """The dataclass of a ``dict[str, <dataclass>]`` field, else None."""
    if typing.get_origin(kind) in (dict, Mapping, typing.Mapping) and _is_table(typing.get_args(kind)[-1]):
        return typing.get_args(kind)[-1]
    return None


def _known(model: type, loc: list[str]) -> str:
    """" (known in [table]: a, b)" for the table at *loc*, or ""."""
    current: Any = model
    parts = iter(loc)
    for part in parts:
        fields = getattr(current, "__pydantic_fields__", None)
        if not fields or part not in fields:
            return ""
        kind, _ = _unwrap(fields[part].annotation)
        inner = _named_table(kind)
        if inner is not None:
            if next(parts, None) is None:
                return ""
            kind = inner
        current = kind
    names = sorted(n for n in getattr(current, "__pydantic_fields__", {}) if n != "source")
    if not names:
        return ""
    where = f"[{'.'.join(loc)}]" if loc else "the file"
    return f" (known in {where}: {', '.join(names)})"
