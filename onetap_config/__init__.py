"""Settings for both sides: frozen dataclasses checked with msgspec, filled from TOML, ONETAP_* environment and flags, errors naming key and origin.

A configuration is a frozen dataclass deriving from :class:`Settings`: each
field a key, each Settings-typed field a ``[table]``, each
``dict[str, <Settings>]`` field a set of ``[table.<name>]`` tables. A field's
type says what it takes: ``msgspec.convert`` checks the type and any
``msgspec.Meta`` bounds in its ``Annotated`` metadata, then :class:`After`
rules (:func:`checked`, :func:`parsed_by`) check what msgspec cannot express;
:meth:`Settings.check` holds the rules across keys. Every Settings object is
checked when it is made, in code too (tests, the demo), and a key the model
does not have is an error naming it. Adding a key is one annotated field with a
default; its environment variable is ``ONETAP_<TABLE>_<KEY>`` unless
``Env("ONETAP_...")`` names another, and deploy/*.example.toml must describe it
(tests/test_onetap_config.py checks).

Why msgspec and not pydantic: the kiosk runs on a Raspberry Pi beside Kivy,
and pydantic and its compiled core took some 11 MB of the kiosk's memory
(docs/benchmarks.md); msgspec is a small C extension.

Why dataclasses and not msgspec.Struct: a Struct's constructor checks nothing,
so a model built in code would go unchecked, and msgspec names a dict's entry
``[...]`` in its errors where ours must say which ``[sites.<name>]``; so each
field is converted on its own, tables by this module, and dataclasses.replace,
``field(repr=False)`` for secrets and ``field(compare=False)`` keep working.

Why not pydantic-settings (when the config was on pydantic): its sources merge
before validation, so an error could no longer say whether the bad value came
from the file, which variable, or which flag; it reads lists from the
environment as JSON where ONETAP_REASONS and friends are comma-separated; and a
model built in code (tests, the demo) must not read os.environ.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import sys
import tomllib
import types
import typing
from pathlib import Path, PurePath
from urllib.parse import urlsplit
from typing import Annotated, Any, Callable, Iterator, Mapping, TypeVar

import msgspec

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Env:
    """Field metadata: this key's environment variable when it is not
    ONETAP_<TABLE>_<KEY> (None: no variable)."""

    name: str | None


@dataclasses.dataclass(frozen=True)
class EnvOnly:
    """Field metadata: a secret taken from its variable only, refused in the file."""


@dataclasses.dataclass(frozen=True)
class Before:
    """Field metadata: *convert(value)* before msgspec sees it (a ValueError is the error)."""

    convert: Callable[[Any], Any]


@dataclasses.dataclass(frozen=True)
class Plain:
    """Field metadata: *convert(value)* instead of msgspec (a ValueError is the error)."""

    convert: Callable[[Any], Any]


@dataclasses.dataclass(frozen=True)
class After:
    """Field metadata: *convert(value)* after msgspec (a ValueError is the error); also
    inside a list's items or a dict's keys and values."""

    convert: Callable[[Any], Any]


class KeyProblem(ValueError):
    """What is wrong with the key at *key* (dotted, or a tuple of parts: a
    ``[users.<name>]`` may hold dots), relative to the model raising it.

    *kind* is "value", "unknown" (no such key), "missing", "table" (not a
    table) or "name" (a ``[table.<name>]`` name)."""

    def __init__(self, key: str | tuple[str, ...], reason: str, kind: str = "value"):
        super().__init__(reason)
        self.path: tuple[str, ...] = key if isinstance(key, tuple) else tuple(key.split(".")) if key else ()
        self.reason = reason
        self.kind = kind

    @property
    def key(self) -> str:
        return ".".join(self.path)

    def within(self, *parts: str) -> KeyProblem:
        """The same problem seen from the table holding *parts*."""
        return KeyProblem((*parts, *self.path), self.reason, self.kind)

    def __str__(self) -> str:
        return f"{self.key}: {self.reason}" if self.path else self.reason


def checked(test: Callable[[Any], Any], reason: str) -> After:
    """An After rule: *test(value)* true, or the error *reason*."""
    def validate(value: Any) -> Any:
        if not test(value):
            raise ValueError(reason)
        return value

    return After(validate)


def parsed_by(parse: Callable[[Any], Any]) -> After:
    """Valid when *parse(value)* raises no ValueError; the value is kept."""
    def validate(value: Any) -> Any:
        parse(value)
        return value

    return After(validate)


def expanded_path(value: Path) -> Path:
    """A path with ``~`` expanded; empty or ``.`` is no path."""
    if not str(value) or str(value) == ".":
        raise ValueError("must be a path")
    return value.expanduser()


FilePath = Annotated[Path, After(expanded_path)]


class Settings:
    """Base of every settings model, each declared ``@dataclass(frozen=True)``:
    its fields are converted and checked as it is made, then :meth:`check`."""

    def __post_init__(self) -> None:
        defaults = _defaults(type(self))
        for name, kind in _hints(type(self)).items():
            if name in defaults and getattr(self, name) is defaults[name]:
                continue  # a default is as the model declares it (UserConfig's sites: none given)
            try:
                value = conform(kind, getattr(self, name))
            except KeyProblem as problem:
                raise problem.within(name) from None
            object.__setattr__(self, name, value)  # the converted value (a tuple for a list, ~ expanded)
        self.check()

    def check(self) -> None:
        """Rules across keys: raise KeyProblem naming the key."""


@functools.cache
def _hints(model: type) -> dict[str, Any]:
    """Field name -> its annotated type, read once per model."""
    # The module's names, not the class's: a lambda in an annotation (checked(lambda v: ...))
    # must see the module's globals when it runs.
    module = vars(sys.modules[model.__module__])
    hints = typing.get_type_hints(model, globalns=module, localns=module, include_extras=True)
    return {f.name: hints[f.name] for f in dataclasses.fields(model)}


@functools.cache
def _defaults(model: type) -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(model) if f.default is not dataclasses.MISSING}


def _from_text(kind: type, value: Any) -> Any:
    # msgspec's hook for types it does not know: paths are all this config has.
    if kind is Path and isinstance(value, (str, PurePath)):
        return Path(value)
    raise NotImplementedError


def conform(kind: Any, value: Any) -> Any:
    """*value* as a field of type *kind* takes it, or KeyProblem saying what is wrong:
    a table is built from a mapping, anything else converted by msgspec (lax: the
    environment gives text) and checked by the type's rules."""
    rules = typing.get_args(kind)[1:] if typing.get_origin(kind) is Annotated else ()
    base = typing.get_args(kind)[0] if rules else kind
    try:
        for rule in rules:
            if isinstance(rule, Before):
                value = rule.convert(value)
        plain = next((rule for rule in rules if isinstance(rule, Plain)), None)
        if plain is not None:
            value = plain.convert(value)
        else:
            value = _typed(kind, base, value)
        for rule in rules:
            if isinstance(rule, After):
                value = rule.convert(value)
        return value
    except KeyProblem:
        raise
    except ValueError as exc:
        raise KeyProblem((), str(exc)) from None


def _typed(kind: Any, base: Any, value: Any) -> Any:
    table, optional = _unwrap(base)
    if value is None and optional:
        return None
    if _is_table(table):
        if isinstance(value, table):
            return value
        if not isinstance(value, Mapping):
            raise KeyProblem((), "must be a table", "table")
        return build(table, value)
    inner = _named_table(table)
    if inner is not None:
        if not isinstance(value, Mapping):
            raise KeyProblem((), "must be a table", "table")
        name_kind = typing.get_args(table)[0]
        out = {}
        for name, entry in value.items():
            try:
                name = conform(name_kind, name)
            except KeyProblem as problem:
                raise KeyProblem((str(name),), problem.reason, "name") from None
            try:
                out[name] = conform(inner, entry)
            except KeyProblem as problem:
                raise problem.within(str(name)) from None
        return out
    try:
        value = msgspec.convert(value, kind, strict=False, dec_hook=_from_text)
    except msgspec.ValidationError as exc:
        raise KeyProblem((), _reason(str(exc), base)) from None
    return _inner_rules(base, value)


def _inner_rules(kind: Any, value: Any) -> Any:
    """*value* through the After rules of the types inside *kind* (a list's
    items, a dict's keys and values), once msgspec has converted it."""
    origin = typing.get_origin(kind)
    if origin is Annotated:
        value = _inner_rules(typing.get_args(kind)[0], value)
        for rule in typing.get_args(kind)[1:]:
            if isinstance(rule, After):
                value = rule.convert(value)
        return value
    args = typing.get_args(kind)
    if value is None or not args:
        return value
    if origin in (typing.Union, types.UnionType):
        rest = [arg for arg in args if arg is not type(None)]
        return _inner_rules(rest[0], value) if len(rest) == 1 else value
    if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
        return tuple(_inner_rules(arg, item) for arg, item in zip(args, value))
    if origin in (tuple, list, frozenset, set):
        return type(value)(_inner_rules(args[0], item) for item in value)
    if origin in (dict, Mapping, typing.Mapping):
        return {_inner_rules(args[0], key): _inner_rules(args[1], item) for key, item in value.items()}
    return value


def build(model: type[T], table: Mapping[str, Any]) -> T:
    """*model* from the mapping of a TOML table; KeyProblem names a key it lacks or does not have."""
    fields = _hints(model)
    for name in table:
        if name not in fields:
            raise KeyProblem((str(name),), "unknown key", "unknown")
    for f in dataclasses.fields(model):
        if f.name not in table and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise KeyProblem((f.name,), "is missing", "missing")
    return model(**table)


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(the type without Optional/Annotated, whether None is allowed)."""
    kind, optional, _ = _unwrapped(annotation)
    return kind, optional


def _unwrapped(annotation: Any) -> tuple[Any, bool, list[Any]]:
    """(the type without Optional/Annotated, whether None is allowed, the metadata on the way)."""
    optional = False
    metadata: list[Any] = []
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            metadata.extend(typing.get_args(annotation)[1:])
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            optional = optional or len(args) < len(typing.get_args(annotation))
            if len(args) != 1:
                return annotation, optional, metadata
            annotation = args[0]
        else:
            return annotation, optional, metadata


def _is_table(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, Settings) and dataclasses.is_dataclass(kind)


def _named_table(kind: Any) -> type | None:
    """The Settings model of a ``dict[str, <model>]`` field, else None."""
    if typing.get_origin(kind) in (dict, Mapping, typing.Mapping) and _is_table(typing.get_args(kind)[-1]):
        return typing.get_args(kind)[-1]
    return None


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
    for name, annotation in _hints(model).items():
        if name == "source":
            continue
        kind, optional, metadata = _unwrapped(annotation)
        path = (*prefix, name)
        if _is_table(kind):
            yield from keys(kind, path, table_optional or optional)
            continue
        if _named_table(kind) is not None:
            continue
        env = "ONETAP_" + "_".join(path).upper()
        env_only = False
        for meta in metadata:
            if isinstance(meta, Env):
                env = meta.name
            elif isinstance(meta, EnvOnly):
                env_only = True
        yield Key(path, kind, optional, env, env_only, table_optional)


def tables(model: type, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], type, bool]]:
    """Every table of *model*: (path, its model, named: a [path.<name>] family)."""
    for name, annotation in _hints(model).items():
        kind, _ = _unwrap(annotation)
        path = (*prefix, name)
        if _is_table(kind):
            yield path, kind, False
            yield from tables(kind, path)
        elif _named_table(kind) is not None:
            inner = _named_table(kind)
            yield path, inner, True
            yield from tables(inner, (*path, "<name>"))


def key_names(model: type) -> tuple[str, ...]:
    """The keys of *model*'s own table, in the order it declares them."""
    return tuple(name for name in _hints(model) if name != "source")


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
         defaults: Mapping[str, Any] | None = None) -> T:
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
    # An unknown key first, wherever it is: a misspelt key is why a value seems missing or wrong.
    unknown = _unknown(model, data)
    try:
        if unknown is not None:
            raise KeyProblem(unknown, "unknown key", "unknown")
        return build(model, data)
    except KeyProblem as problem:
        raise error(describe(problem, model, data, origins, path)) from None


def _unknown(model: type, table: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> tuple[str, ...] | None:
    """The path of the first key in *table* (its tables too) that *model* does not have."""
    fields = _hints(model)
    for name, value in table.items():
        if name not in fields:
            return (*prefix, str(name))
        kind, _ = _unwrap(fields[name])
        inner = _named_table(kind)
        if _is_table(kind) and isinstance(value, Mapping):
            found = _unknown(kind, value, (*prefix, name))
        elif inner is not None and isinstance(value, Mapping):
            found = next((hit for entry, body in value.items() if isinstance(body, Mapping)
                          if (hit := _unknown(inner, body, (*prefix, name, str(entry)))) is not None), None)
        else:
            found = None
        if found is not None:
            return found
    return None


_MISSING = object()


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


#: msgspec's names of the types it expected, said the way this project's messages say them.
_EXPECTED = {
    "str": "must be a string",
    "int": "must be an integer",
    "float": "must be a number",
    "bool": "must be true or false",
    "array": "must be a list",
    "object": "must be a table",
}
_WHERE = re.compile(r" - at `[^`]*`(?: in `[^`]*`)?\Z")
_BOUND = re.compile(r"Expected `\w+` (>=|<=|>|<) (\S+)")
_LENGTH = re.compile(r"Expected `(str|array)` of length (>=|<=)? ?(\d+)(?:, got \d+)?")
_TYPE = re.compile(r"Expected `([^`]+)`, got `(\w+)`")


def _reason(message: str, kind: Any) -> str:
    """msgspec's *message* about a value of type *kind*, said the way this project's messages say them."""
    message = _WHERE.sub("", message)
    if match := _TYPE.fullmatch(message):
        expected = [name for name in match[1].split(" | ") if name != "null"]
        if match[2] == "bool" and expected and expected[0] in ("int", "float"):
            return "must be a number, not true or false"
        if expected == ["int"] and match[2] == "float":
            return "must be a whole number"
        if expected and expected[0] in _EXPECTED:
            return _EXPECTED[expected[0]]
    if match := _BOUND.fullmatch(message):
        bound = match[2][:-2] if re.fullmatch(r"-?\d+\.0", match[2]) else match[2]
        return f"must be {match[1]} {bound}"
    if match := _LENGTH.fullmatch(message):
        what = "character" if match[1] == "str" else "item"
        count = int(match[3])
        amount = {">=": "at least ", "<=": "at most ", None: ""}[match[2]]
        return f"must have {amount}{count} {what}{'' if count == 1 else 's'}"
    if message.startswith("Invalid enum value"):
        literal, _ = _unwrap(kind)
        if typing.get_origin(literal) is typing.Literal:
            return f"must be one of {', '.join(str(arg) for arg in typing.get_args(literal))}"
    return message


def describe(problem: KeyProblem, model: type, data: Mapping[str, Any],
             origins: Mapping[str, str], path: str | Path | None) -> str:
    """One line: where the value came from, the key, the value and what is wrong."""
    loc = list(problem.path)
    dotted = ".".join(loc)
    origin = None
    for end in range(len(loc), 0, -1):
        origin = origins.get(".".join(loc[:end]))
        if origin is not None:
            break
    if origin is None:
        origin = str(path) if path is not None else "defaults"
    if problem.kind == "unknown":
        return f"{origin}: unknown key {dotted}{_known(model, loc[:-1])}"
    if problem.kind == "missing":
        return f"{origin}: {dotted} is missing"
    if problem.kind == "table":
        return f"{origin}: {dotted}: must be a table [{dotted}]"
    if problem.kind == "name":
        return f"{origin}: [{dotted}]: {loc[-1]!r} {problem.reason}"
    value = _shown(model, loc, _get(data, tuple(loc)))
    reason = problem.reason
    # "broker = 'x' is plain MQTT...", "keyfile is missing: ...", "ui.fps = 0: must be >= 1"
    joint = " " if reason.startswith("is ") else ": "
    if value is _MISSING:
        return f"{origin}: {dotted}{joint}{reason}"
    return f"{origin}: {dotted} = {value!r}{joint}{reason}"


def _table_at(model: type, loc: list[str]) -> type | None:
    """The model of the table at *loc* (``[sites.<name>]`` included), or None."""
    current: Any = model
    parts = iter(loc)
    for part in parts:
        fields = _hints(current) if _is_table(current) else {}
        if part not in fields:
            return None
        kind, _ = _unwrap(fields[part])
        inner = _named_table(kind)
        if inner is not None:
            if next(parts, None) is None:
                return None
            kind = inner
        current = kind
    return current if _is_table(current) else None


def _field(model: type, loc: list[str]) -> dataclasses.Field | None:
    """The dataclass field of the key at *loc*, or None."""
    table = _table_at(model, loc[:-1]) if loc else None
    if table is None:
        return None
    return next((f for f in dataclasses.fields(table) if f.name == loc[-1]), None)


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


def _known(model: type, loc: list[str]) -> str:
    """" (known in [table]: a, b)" for the table at *loc*, or ""."""
    table = _table_at(model, loc)
    names = sorted(key_names(table)) if table is not None else []
    if not names:
        return ""
    where = f"[{'.'.join(loc)}]" if loc else "the file"
    return f" (known in {where}: {', '.join(names)})"
