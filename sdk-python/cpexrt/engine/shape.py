"""A small declarative validator of plain data (what YAML loads), for the config's classes
(cpexrt.engine.config): fields with a type, a default and constraints, unknown keys
refused, and every problem reported with the path of its field.

Not a library: pydantic's import was about half of a cold start's Python instructions,
and msgspec, the light candidate, reports only the first problem, where a config's
error lists every one (up to ten) with its path.

A class declares its fields as class attributes made by `field`; its keyword
constructor validates (ConfigError listing the problems), as does `build`, which adds
its problems to a list instead, under a path. Checks are functions
`check(value, path, problems) -> value or BAD`: BAD when the value is refused, the
problem then appended to problems as "path: message".
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Callable
from enum import Enum
from typing import Any, ClassVar

from cpexrt.errors import ConfigError

# A bad value is shown, but briefly: YAML aliases can make a small file hold a value
# whose full repr is exponentially large.
_SHOWN = reprlib.Repr()
_SHOWN.maxstring = _SHOWN.maxother = 60
_SHOWN.maxlist = _SHOWN.maxdict = _SHOWN.maxtuple = _SHOWN.maxset = 4
_SHOWN.maxlevel = 2
shown = _SHOWN.repr

# At most this many problems are listed in one error; the rest are counted.
MAX_PROBLEMS = 10


class _Bad:
    def __repr__(self) -> str:
        return "BAD"


BAD: Any = _Bad()  # a refused value (its problem is in the list)

Check = Callable[[Any, str, list[str]], Any]


def at(path: str, key: str) -> str:
    """The path of a mapping's key under path."""
    return f"{path}.{key}" if path else key


def problem(problems: list[str], path: str, message: str) -> Any:
    problems.append(f"{path or 'config'}: {message}")
    return BAD


def error(problems: list[str]) -> ConfigError:
    """The error listing problems: the first MAX_PROBLEMS, then how many more."""
    listed = problems[:MAX_PROBLEMS]
    if len(problems) > MAX_PROBLEMS:
        listed.append(f"and {len(problems) - MAX_PROBLEMS} more problems")
    return ConfigError("invalid config: " + "; ".join(listed))


# -- checks --------------------------------------------------------------------------


def string(min_length: int = 0, then: Callable[[str], str] | None = None) -> Check:
    """A str (not bytes, not a number YAML read from an unquoted scalar), at least
    min_length characters; then, if given, may refuse it with ValueError (its message)."""

    def check(value: Any, path: str, problems: list[str]) -> Any:
        if type(value) is not str:
            return problem(problems, path, f"expected a string, got {shown(value)}")
        if len(value) < min_length:
            wanted = "a non-empty string" if min_length == 1 else f"a string of at least {min_length} characters"
            return problem(problems, path, f"expected {wanted}, got {shown(value)}")
        if then is not None:
            try:
                return then(value)
            except ValueError as exc:
                return problem(problems, path, str(exc))
        return value

    return check


def _bounds(
    value: float, given: Any, path: str, problems: list[str], gt: float | None, ge: float | None, le: float | None
) -> Any:
    """value within the bounds, else BAD naming the bound and the value as given."""
    # Written so that nan fails each bound, as it compares false with everything.
    if gt is not None and not value > gt:
        return problem(problems, path, f"expected a number greater than {gt}, got {shown(given)}")
    if ge is not None and not value >= ge:
        return problem(problems, path, f"expected at least {ge}, got {shown(given)}")
    if le is not None and not value <= le:
        return problem(problems, path, f"expected at most {le}, got {shown(given)}")
    return value


def integer(ge: int | None = None, le: int | None = None) -> Check:
    """An int, or a float with no fractional part (YAML's 2.0); not a bool, not a string."""

    def check(value: Any, path: str, problems: list[str]) -> Any:
        kind = type(value)
        if kind is int:
            whole = value
        elif kind is float and math.isfinite(value) and value.is_integer():
            whole = int(value)
        else:
            return problem(problems, path, f"expected an integer, got {shown(value)}")
        return _bounds(whole, value, path, problems, None, ge, le)

    return check


def number(gt: float | None = None) -> Check:
    """A float, or an int (made a float); not a bool, not a string."""

    def check(value: Any, path: str, problems: list[str]) -> Any:
        kind = type(value)
        if kind is float:
            real = value
        elif kind is int:
            try:
                real = float(value)
            except OverflowError:
                return problem(problems, path, f"expected a number, got an integer too large for one: {shown(value)}")
        else:
            return problem(problems, path, f"expected a number, got {shown(value)}")
        return _bounds(real, value, path, problems, gt, None, None)

    return check


def boolean(value: Any, path: str, problems: list[str]) -> Any:
    """true or false: YAML's booleans, not 1, 0 or strings."""
    if type(value) is not bool:
        return problem(problems, path, f"expected true or false, got {shown(value)}")
    return value


def anything(value: Any, path: str, problems: list[str]) -> Any:
    return value


def choice(enum: type[Enum]) -> Check:
    """One of enum's values (a str), made the enum's member."""
    members = {m.value: m for m in enum}
    names = [repr(v) for v in members]
    expected = ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]

    def check(value: Any, path: str, problems: list[str]) -> Any:
        if isinstance(value, enum):
            return value
        member = members.get(value) if type(value) is str else None
        if member is None:
            return problem(problems, path, f"expected one of {expected}, got {shown(value)}")
        return member

    return check


def optional(inner: Check) -> Check:
    """None, or what inner takes."""

    def check(value: Any, path: str, problems: list[str]) -> Any:
        return None if value is None else inner(value, path, problems)

    return check


def list_of(item: Check) -> Check:
    """A list (a new one) of what item takes; each problem names the item's index."""

    def check(value: Any, path: str, problems: list[str]) -> Any:
        if type(value) is not list:
            return problem(problems, path, f"expected a list, got {shown(value)}")
        before = len(problems)  # an item refused has added one
        items = [item(v, f"{path}[{i}]", problems) for i, v in enumerate(value)]
        return BAD if len(problems) > before else items

    return check


def dict_of(item: Check) -> Check:
    """A mapping (a new dict) from strings to what item takes."""

    def check(value: Any, path: str, problems: list[str]) -> Any:
        if type(value) is not dict:
            return problem(problems, path, f"expected a mapping, got {shown(value)}")
        before = len(problems)  # a key or an item refused has added one
        out: dict[str, Any] = {}
        for k, v in value.items():
            if type(k) is str:
                out[k] = item(v, f"{path}.{k}" if path else k, problems)
            else:
                problem(problems, f"{path}[{shown(k)}]", f"expected a string key, got {shown(k)}")
        return BAD if len(problems) > before else out

    return check


def model(cls: type[Shape]) -> Check:
    """A mapping validated as cls (or an instance of cls, taken as it is)."""

    def check(value: Any, path: str, problems: list[str]) -> Any:
        return cls.build(value, path, problems)

    return check


# -- fields and classes ----------------------------------------------------------------


_REQUIRED: Any = object()


class Field:
    """One field: its attribute name, its key in the data (the attribute's name unless
    aliased, e.g. `global`), its check and its default (a value, or a factory called
    for each instance so that no two share a list or a mapping; neither: required)."""

    __slots__ = ("name", "key", "check", "default", "factory")

    def __init__(self, check: Check, default: Any, factory: Callable[[], Any] | None, alias: str | None) -> None:
        self.name = ""
        self.key = alias or ""
        self.check = check
        self.default = default
        self.factory = factory

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED and self.factory is None

    def initial(self) -> Any:
        return self.default if self.factory is None else self.factory()


def field(check: Check, default: Any = _REQUIRED, *, factory: Callable[[], Any] | None = None, alias: str | None = None) -> Any:
    """A field of a Shape class (`name: str = field(string(1))`); see Field."""
    if factory is not None and default is not _REQUIRED:
        raise TypeError("field: a default or a factory, not both")
    return Field(check, default, factory, alias)


class Shape:
    """Base of the validated classes. `Cls(**data)` validates data (ConfigError listing
    every problem); `Cls.build(data, path, problems)` is the same below a path, adding
    problems to a list. Subclasses may override `prepare` (data before its fields are
    checked) and `verify` (the instance once its fields are valid)."""

    fields: ClassVar[tuple[Field, ...]] = ()
    _by_key: ClassVar[dict[str, Field]] = {}
    _defaults: ClassVar[dict[str, Any]] = {}  # the fields' plain defaults by name
    _factories: ClassVar[tuple[tuple[str, str, Callable[[], Any]], ...]] = ()  # name, key, factory
    _required: ClassVar[tuple[Field, ...]] = ()
    fields_set: frozenset[str]  # the names of the fields the data gave

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = []
        for name, value in list(vars(cls).items()):
            if isinstance(value, Field):
                value.name = name
                value.key = value.key or name
                own.append(value)
                delattr(cls, name)  # the instance's attribute, always set, is the value
        cls.fields = fields = (*cls.fields, *own)
        cls._by_key = {f.key: f for f in fields}
        cls._defaults = {f.name: f.default for f in fields if f.factory is None and not f.required}
        cls._factories = tuple((f.name, f.key, f.factory) for f in fields if f.factory is not None)
        cls._required = tuple(f for f in fields if f.required)

    def __init__(self, **data: Any) -> None:
        problems: list[str] = []
        self._fill(data, "", problems)
        if problems:
            raise error(problems)

    @classmethod
    def build(cls, data: Any, path: str, problems: list[str]) -> Any:
        """data validated as cls under path: the instance, or BAD with its problems added."""
        if isinstance(data, cls):
            return data
        if type(data) is not dict:
            return problem(problems, path, f"expected a mapping, got {shown(data)}")
        self = cls.__new__(cls)
        return self if self._fill(data, path, problems) else BAD

    def _fill(self, data: dict[Any, Any], path: str, problems: list[str]) -> bool:
        """Sets the fields from data (the defaults where it has none); problems in the
        order of data's keys, then the required fields missing."""
        before = len(problems)
        data = self.prepare(data)
        values = self.__dict__
        values.update(self._defaults)
        for name, key, factory in self._factories:
            if key not in data:
                values[name] = factory()
        by_key = self._by_key
        for key, value in data.items():
            f = by_key.get(key)
            if f is None:
                problem(problems, f"{path}.{key}" if path else str(key), "unknown field")
            else:
                values[f.name] = f.check(value, f"{path}.{key}" if path else key, problems)
        for f in self._required:
            if f.key not in data:
                problem(problems, at(path, f.key), "required field missing")
        self.fields_set = frozenset(by_key[k].name for k in data if k in by_key)
        if len(problems) > before:
            return False
        self.verify(path, problems)
        return len(problems) == before

    def prepare(self, data: dict[Any, Any]) -> dict[Any, Any]:
        """data as the fields are to see it (a new dict when changed)."""
        return data

    def verify(self, path: str, problems: list[str]) -> None:
        """Checks across fields, their values valid; problems added under path."""

    def replace(self, **changes: Any) -> Any:
        """A shallow copy with the named fields set to changes' values (not validated)."""
        copy = self.__class__.__new__(self.__class__)
        copy.__dict__.update(self.__dict__)
        for name, value in changes.items():
            if name not in {f.name for f in self.fields}:
                raise TypeError(f"{type(self).__name__} has no field {name!r}")
            copy.__dict__[name] = value
        return copy

    def as_data(self, *, defaults: bool = True) -> dict[str, Any]:
        """The fields as plain data by their keys (YAML's names): nested classes as
        mappings, enum members as their values, fields holding None left out, and with
        defaults=False fields equal to their default too."""
        out: dict[str, Any] = {}
        for f in self.fields:
            value = getattr(self, f.name)
            if value is None or (not defaults and not f.required and value == f.initial()):
                continue
            out[f.key] = _plain(value, defaults)
        return out

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, f.name) == getattr(other, f.name) for f in self.fields)

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def __repr__(self) -> str:
        inner = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in self.fields)
        return f"{type(self).__name__}({inner})"


def _plain(value: Any, defaults: bool) -> Any:
    """A field's value as plain data: a list or mapping of nested classes or enum
    members made one of mappings or values; other values (a plugin's own config among
    them) as they are, not walked into (YAML aliases can make them large)."""
    if isinstance(value, Shape):
        return value.as_data(defaults=defaults)
    if isinstance(value, Enum):
        return value.value
    if type(value) is list:
        return [_member(v, defaults) for v in value]
    if type(value) is dict:
        return {k: _member(v, defaults) for k, v in value.items()}
    return value


def _member(value: Any, defaults: bool) -> Any:
    if isinstance(value, Shape):
        return value.as_data(defaults=defaults)
    return value.value if isinstance(value, Enum) else value
