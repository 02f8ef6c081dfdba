"""The shared environment reader: kinds, bounds, redaction, and the one error for a bad setting."""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mlflow_hotswap_plugin import env


def _no_odd(item: str) -> None:
    if item == "odd":
        raise ValueError("odd is not allowed")


@dataclass(frozen=True)
class Example:
    url: str = field(metadata=env.declare("X_URL", env.text("a URL"), "where", redact=env.uri))
    count: int = field(default=2, metadata=env.declare(
        "X_COUNT", env.integer(low=1, high=9), "how many"))
    wait: float = field(default=1.5, metadata=env.declare("X_WAIT", env.seconds(most=60), "s"))
    mode: str = field(default="fast", metadata=env.declare(
        "X_MODE", env.choice("fast", "slow"), "how"))
    names: tuple[str, ...] = field(default=(), metadata=env.declare(
        "X_NAMES", env.items("names, comma-separated", _no_odd), "who",
        default_text="nobody"))
    token: str | None = field(default=None, metadata=env.declare(
        "X_TOKEN", env.text("a token"), "secret", secret=True))
    not_read: int = 7

    def __post_init__(self) -> None:
        env.check(self)


BASE = {"X_URL": "http://h"}


def test_unset_and_blank_variables_take_the_field_default() -> None:
    read = env.read(Example, {**BASE, "X_COUNT": "  ", "X_MODE": ""})
    assert read == Example(url="http://h")
    assert (read.count, read.wait, read.mode, read.names, read.token) == (2, 1.5, "fast", (), None)


def test_values_are_read_stripped_and_typed() -> None:
    read = env.read(Example, {**BASE, "X_COUNT": " 9 ", "X_WAIT": ".5", "X_MODE": " SLOW",
                              "X_NAMES": " a, ,b ,", "X_TOKEN": "t0k"})
    assert (read.count, read.wait, read.mode, read.names, read.token) == (
        9, 0.5, "slow", ("a", "b"), "t0k")


@pytest.mark.parametrize(("key", "raw", "message"), [
    ("X_COUNT", "two", "X_COUNT must be an integer, got 'two'."),
    ("X_COUNT", "2.0", "X_COUNT must be an integer, got '2.0'."),
    ("X_COUNT", "\u0663", "X_COUNT must be an integer"),
    ("X_COUNT", "1_0", "X_COUNT must be an integer"),
    ("X_COUNT", "0", "X_COUNT must be 1 or more, at most 9, got '0'."),
    ("X_COUNT", "10", "X_COUNT must be 1 or more, at most 9, got '10'."),
    ("X_WAIT", "nan", "X_WAIT must be a number, got 'nan'."),
    ("X_WAIT", "1e3", "X_WAIT must be a number, got '1e3'."),
    ("X_WAIT", "0", "X_WAIT must be a positive number of seconds, at most 60, got '0'."),
    ("X_WAIT", "61", "X_WAIT must be a positive number of seconds, at most 60, got '61'."),
    ("X_MODE", "medium", "X_MODE must be one of fast, slow, got 'medium'."),
    ("X_NAMES", "a,odd", "X_NAMES must be names, comma-separated, got 'odd': odd is not"),
])
def test_a_bad_value_names_the_variable_the_value_and_what_it_must_be(
        key: str, raw: str, message: str) -> None:
    with pytest.raises(env.SettingError) as info:
        env.read(Example, {**BASE, key: raw})
    assert message in str(info.value)
    assert info.value.variable == key


def test_a_missing_required_variable_says_so() -> None:
    with pytest.raises(env.SettingError, match=r"^X_URL is missing, and has no default: it "
                                               r"must be a URL\.$"):
        env.read(Example, {})


def test_bounds_hold_however_the_instance_is_made() -> None:
    with pytest.raises(env.SettingError, match="X_WAIT must be a positive number"):
        Example(url="u", wait=float("nan"))
    with pytest.raises(env.SettingError, match=r"X_NAMES .* got 'odd'"):
        Example(url="u", names=("a", "odd"))


def test_a_shown_value_is_redacted_and_clipped() -> None:
    with pytest.raises(env.SettingError) as info:
        env.read(Example, {**BASE, "X_NAMES": "http://user:pa55@h/odd,odd"})
    assert "pa55" not in str(info.value)
    with pytest.raises(env.SettingError) as info:
        env.read(Example, {**BASE, "X_COUNT": "9" * 5000})
    assert len(str(info.value)) < 120
    secret = env.declared(Example, "token")
    assert str(secret.error("hunter2", "short")) == "X_TOKEN must be short, got '***'."


def test_repr_masks_secrets_and_passwords() -> None:
    text = env.represent(Example(url="http://u:pw@h/x", token="t0k"))
    assert "pw" not in text and "t0k" not in text
    assert "url='http://u:***@h/x'" in text and "token='***'" in text and "not_read=7" in text
    assert "token=None" in env.represent(Example(url="u"))


def test_rows_give_each_variable_its_help_and_default() -> None:
    assert [(row.variable, row.default) for row in env.rows(Example)] == [
        ("X_URL", "required"), ("X_COUNT", "2"), ("X_WAIT", "1.5"), ("X_MODE", "`fast`"),
        ("X_NAMES", "nobody"), ("X_TOKEN", "none")]
    assert env.rows(Example)[1].help == "how many"


@pytest.mark.parametrize(("given", "shown"), [
    ("http://alice:pw@h:5000/api?x=1", "http://alice:***@h:5000/api?x=1"),
    ("https://tok@host/path", "https://tok:***@host/path"),
    ("http://host:5000", "http://host:5000"),
    ("databricks", "databricks"),
])
def test_uri_masks_the_password(given: str, shown: str) -> None:
    assert env.uri(given) == shown


@pytest.mark.parametrize(("given", "shown"), [
    ("https://u:p@[::1]:8443/h?q=1#f", "https://[::1]:8443/h"),
    ("http://a:port/x", "http://a:port/x"),
    ("u:p@host", "<URL with credentials>"),
    ("receiver:8000", "receiver:8000"),
    ("http://[::1/x", "<unparseable URL>"),
])
def test_bare_url_drops_user_info_query_and_fragment(given: str, shown: str) -> None:
    assert env.bare_url(given) == shown


def test_scrub_masks_every_url_in_a_text() -> None:
    text = env.scrub("from http://a:one@h1/x and https://b:two@h2 failed")
    assert text == "from http://a:***@h1/x and https://b:***@h2 failed"


def test_the_reader_needs_only_the_standard_library() -> None:
    # The plugin imports it inside an MLflow server, whose environment is not ours to extend.
    tree = ast.parse(Path(env.__file__).read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    roots = {name.split(".")[0] for name in imported} - {"__future__", "_typeshed"}
    assert roots <= sys.stdlib_module_names
