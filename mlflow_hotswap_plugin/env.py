"""Settings from the environment: each declared once, beside its dataclass field, read by one loop.

Shared by the plugin (it runs inside an MLflow server, so standard library only) and the
receiver. A field declared with `declare(...)` names its variable, how its text is read, what a
good value is and what it means. `read(cls, environ)` builds the dataclass from the
environment; `check(instance)`, called from `__post_init__`, holds every value to its bounds
however the instance was made; `rows(cls)` is the help that `--help` and the README show. A bad
value raises `SettingError`, naming the variable and the value (a secret's masked).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T")
D = TypeVar("D", bound="DataclassInstance")

MASK = "***"
_KEY = "hotswap.env"  # where a field's declaration sits in its metadata
_SHOWN = 60  # characters of a bad value a message repeats


class SettingError(ValueError):
    """A setting is missing or holds a value that cannot be used."""

    def __init__(self, variable: str, shown: str | None, expected: str,
                 reason: str | None = None) -> None:
        if shown is None:
            message = f"{variable} is missing, and has no default: it must be {expected}."
        else:
            message = f"{variable} must be {expected}, got {shown!r}"
            message += f": {reason}" if reason else "."
        super().__init__(message)
        self.variable = variable


class Invalid(ValueError):
    """A kind's verdict on a value: what a good one is, and optionally which part is bad and
    why. Plain ValueErrors from a parser are taken as the reason."""

    def __init__(self, expected: str, part: object = None, reason: str | None = None) -> None:
        super().__init__(expected)
        self.expected, self.part, self.reason = expected, part, reason


def _anything(value: Any) -> None:
    del value


@dataclass(frozen=True)
class Kind(Generic[T]):
    """How a variable's text becomes a value (`parse`), and which values are good (`validate`,
    which raises Invalid). `expected` says what text `parse` takes."""

    parse: Callable[[str], T]
    expected: str
    validate: Callable[[T], None] = _anything


@dataclass(frozen=True)
class Setting:
    """One declared variable: its name, kind, meaning, and how its value may be shown."""

    variable: str
    kind: Kind[Any]
    help: str
    default_text: str | None
    secret: bool
    redact: Callable[[str], str]

    def show(self, value: object) -> str:
        if self.secret:
            return MASK
        if isinstance(value, tuple):
            text = ",".join(self.redact(_text(item)) for item in value)
        else:
            text = self.redact(_text(value))
        return text if len(text) <= _SHOWN else f"{text[:_SHOWN]}..."

    def error(self, value: object, expected: str, reason: str | None = None) -> SettingError:
        return SettingError(self.variable, self.show(value), expected, reason)

    def parse(self, raw: str) -> Any:
        try:
            return self.kind.parse(raw)
        except Invalid as exc:
            raise self.error(raw if exc.part is None else exc.part, exc.expected,
                             exc.reason) from None
        except ValueError as exc:
            raise self.error(raw, self.kind.expected, str(exc)) from None

    def validate(self, value: Any) -> None:
        try:
            self.kind.validate(value)
        except Invalid as exc:
            raise self.error(value if exc.part is None else exc.part, exc.expected,
                             exc.reason) from None


def declare(variable: str, kind: Kind[Any], help: str, *, default_text: str | None = None,
            secret: bool = False, redact: Callable[[str], str] | None = None
            ) -> dict[str, Setting]:
    """A field's metadata declaring it read from `variable`:
    `field(default=5, metadata=declare("MODEL_CACHE_SIZE", integer(low=1), "..."))`.
    `default_text` says what an unset variable means where the default alone does not."""
    return {_KEY: Setting(variable, kind, help, default_text, secret, redact or scrub)}


def declared(cls: type[DataclassInstance] | DataclassInstance, name: str) -> Setting:
    """The declaration of field `name`: for checks that span fields and messages that name
    the variable."""
    for item in dataclasses.fields(cls):
        if item.name == name and _KEY in item.metadata:
            setting: Setting = item.metadata[_KEY]
            return setting
    raise KeyError(name)


def read(cls: type[D], environ: Mapping[str, str] | None = None) -> D:
    """An instance of `cls` from the environment: each declared variable that is set, parsed;
    the rest take their field's default. Raises SettingError."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for item in dataclasses.fields(cls):
        setting: Setting | None = item.metadata.get(_KEY)
        if setting is None:
            continue
        raw = (env.get(setting.variable) or "").strip()
        if raw:
            values[item.name] = setting.parse(raw)
        elif item.default is dataclasses.MISSING:
            raise SettingError(setting.variable, None, setting.kind.expected)
    return cls(**values)


def check(instance: DataclassInstance) -> None:
    """Every declared value of `instance` within its bounds, else SettingError."""
    for item in dataclasses.fields(instance):
        setting: Setting | None = item.metadata.get(_KEY)
        value = getattr(instance, item.name)
        if setting is not None and value is not None:
            setting.validate(value)


def represent(instance: DataclassInstance) -> str:
    """A repr with no secret in it, and URLs redacted as their declarations say."""
    shown = []
    for item in dataclasses.fields(instance):
        value = getattr(instance, item.name)
        setting: Setting | None = item.metadata.get(_KEY)
        text = repr(value)
        if setting is not None and value:
            if setting.secret:
                text = f"<{len(value)} set>" if isinstance(value, tuple) else repr(MASK)
            elif isinstance(value, str):
                text = repr(setting.redact(value))
            elif isinstance(value, tuple) and all(isinstance(v, str) for v in value):
                text = repr(tuple(setting.redact(v) for v in value))
        shown.append(f"{item.name}={text}")
    return f"{type(instance).__name__}({', '.join(shown)})"


@dataclass(frozen=True)
class Row:
    """A declared variable as `--help` and the README's settings tables show it."""

    variable: str
    help: str
    default: str


def rows(cls: type[DataclassInstance]) -> list[Row]:
    found = []
    for item in dataclasses.fields(cls):
        setting: Setting | None = item.metadata.get(_KEY)
        if setting is None:
            continue
        if setting.default_text is not None:
            default = setting.default_text
        elif item.default is dataclasses.MISSING:
            default = "required"
        elif item.default is None or item.default == ():
            default = "none"
        elif isinstance(item.default, str):
            default = f"`{item.default}`"
        else:
            default = _text(item.default)
        found.append(Row(setting.variable, setting.help, default))
    return found


# --- kinds --------------------------------------------------------------------------------------

# ASCII digits only: int() and float() would also take "nan", "inf", "1_0" and non-ASCII digits.
# A sign is let through so that "-1" gets the bounds' message, which says more.
_INTEGER = re.compile(r"-?[0-9]{1,18}")
_DECIMAL = re.compile(r"-?([0-9]{1,18}(\.[0-9]{0,18})?|\.[0-9]{1,18})")


def integer(low: int | None = None, high: int | None = None) -> Kind[int]:
    """A whole number, within `low` and `high` when given."""
    def parse(raw: str) -> int:
        if not _INTEGER.fullmatch(raw):
            raise Invalid("an integer")
        return int(raw)

    def validate(value: int) -> None:
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = [f"{low} or more"] if low is not None else []
            bounds += [f"at most {high}"] if high is not None else []
            raise Invalid(", ".join(bounds))

    return Kind(parse, "an integer", validate)


def seconds(most: float | None = None) -> Kind[float]:
    """A duration: a positive number of seconds, at most `most` when given."""
    def parse(raw: str) -> float:
        if not _DECIMAL.fullmatch(raw):
            raise Invalid("a number")
        return float(raw)

    def validate(value: float) -> None:
        # `not 0 < value` also refuses NaN, which a caller building Settings may pass.
        if not 0 < value < float("inf") or (most is not None and value > most):
            limit = f", at most {most:g}" if most is not None else ""
            raise Invalid(f"a positive number of seconds{limit}")

    return Kind(parse, "a number of seconds", validate)


def text(expected: str = "text") -> Kind[str]:
    return Kind(str, expected)


def choice(*options: str) -> Kind[str]:
    """One of `options`, in any case."""
    expected = f"one of {', '.join(options)}"

    def validate(value: str) -> None:
        if value not in options:
            raise Invalid(expected)

    return Kind(str.lower, expected, validate)


def items(expected: str, check_item: Callable[[str], None] = _anything, *,
          at_least: int = 0) -> Kind[tuple[str, ...]]:
    """A comma-separated list, blanks dropped; each item passes `check_item` (which raises
    ValueError saying why not), and there are `at_least` of them."""
    def parse(raw: str) -> tuple[str, ...]:
        return tuple(part.strip() for part in raw.split(",") if part.strip())

    def validate(value: tuple[str, ...]) -> None:
        if len(value) < at_least:
            raise Invalid(expected)
        for item in value:
            try:
                check_item(item)
            except ValueError as exc:
                raise Invalid(expected, item, str(exc)) from None

    return Kind(parse, expected, validate)


def parsed(parse: Callable[[str], T], expected: str) -> Kind[T]:
    """Text read by `parse`, which raises ValueError saying what is wrong."""
    return Kind(parse, expected)


# --- redaction ----------------------------------------------------------------------------------

# `scheme://userinfo@`: whatever sits between `://` and the first `@` of the authority.
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#@\s]*)@")


def scrub(text: str) -> str:
    """`text` with the userinfo of every URL in it masked (user kept, password hidden)."""
    return _USERINFO.sub(_mask_userinfo, text)


def _mask_userinfo(match: re.Match[str]) -> str:
    user = match.group("userinfo").partition(":")[0]
    return f"{match.group('scheme')}{user}:{MASK}@"


def uri(value: str) -> str:
    """One URI with the password of its userinfo masked: `http://user:***@host/`."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return scrub(value)
    if parts.password is None and parts.username is None:
        return scrub(value)
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))


def bare_url(target: str) -> str:
    """The URL without user info, query or fragment (where tokens hide): safe to log."""
    try:
        parts = urlsplit(target)
    except ValueError:
        return "<unparseable URL>"
    if not parts.netloc:  # not a URL at all: show it as given, unless it may hold a password
        return target if "@" not in target else "<URL with credentials>"
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


def _text(value: object) -> str:
    """A value as its variable would spell it."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)
