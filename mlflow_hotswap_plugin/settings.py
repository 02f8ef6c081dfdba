"""The plugin's settings: the one place that reads HOTSWAP_* from the environment.

Read once when the store is built (at `mlflow server` start), so a bad value stops the server
with a message naming the variable, not a stack trace on the first stage transition.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from mlflow_hotswap_plugin.signing import parse_secrets

TARGETS = "HOTSWAP_TARGETS"
SECRET = "HOTSWAP_WEBHOOK_SECRET"
TIMEOUT = "HOTSWAP_TIMEOUT"
MAX_RETRIES = "HOTSWAP_MAX_RETRIES"
MAX_ADDRESSES = "HOTSWAP_MAX_ADDRESSES"
# Upper bounds keep a dead receiver from holding its delivery lane for hours.
MAX_TIMEOUT = 300.0
MAX_RETRIES_LIMIT = 20


class ConfigError(ValueError):
    """A HOTSWAP_* variable holds a value the plugin cannot use."""


@dataclass(frozen=True)
class Settings:
    targets: tuple[str, ...] = ()
    # Every configured secret; the first signs. Never shown (see __repr__).
    secrets: tuple[str, ...] = field(default=(), repr=False)
    timeout: float = 5.0
    max_retries: int = 3
    max_addresses: int = 10000  # addresses notified per target (replicas behind one name)
    # Not an environment setting: keeps the notifier's memory bounded.
    queue_size: int = 1000  # deliveries waiting, per target and per address

    def __post_init__(self) -> None:
        if isinstance(self.secrets, str):
            raise TypeError("secrets is a tuple of secrets; see signing.parse_secrets")
        for target in self.targets:
            check_target(target)
        if not (0 < self.timeout <= MAX_TIMEOUT and math.isfinite(self.timeout)):
            raise ConfigError(f"{TIMEOUT} must be a positive number of seconds, at most "
                              f"{MAX_TIMEOUT:g}, got {self.timeout!r}")
        if not 0 <= self.max_retries <= MAX_RETRIES_LIMIT:
            raise ConfigError(f"{MAX_RETRIES} must be 0 or more, at most {MAX_RETRIES_LIMIT}, "
                              f"got {self.max_retries!r}")
        if self.max_addresses < 1:
            raise ConfigError(f"{MAX_ADDRESSES} must be at least 1, got {self.max_addresses!r}")
        if self.queue_size < 1:
            raise ConfigError(f"queue_size must be at least 1, got {self.queue_size!r}")

    @property
    def secret(self) -> str | None:
        """The secret deliveries are signed with: the first configured, if any."""
        return self.secrets[0] if self.secrets else None

    def __repr__(self) -> str:
        # Never show a secret, nor credentials a target URL may carry.
        return (f"Settings(targets={[redact(t) for t in self.targets]!r}, "
                f"secrets=<{len(self.secrets)} set>, timeout={self.timeout!r}, "
                f"max_retries={self.max_retries!r}, max_addresses={self.max_addresses!r})")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        targets = tuple(t.strip() for t in env.get(TARGETS, "").split(",") if t.strip())
        return cls(targets=targets,
                   secrets=parse_secrets(env.get(SECRET)),
                   timeout=_float(env, TIMEOUT, 5.0),
                   max_retries=_int(env, MAX_RETRIES, 3),
                   max_addresses=_int(env, MAX_ADDRESSES, 10000))


def check_target(target: str) -> None:
    try:
        parts = urlsplit(target)
        port = parts.port  # raises ValueError on a bad port
    except ValueError as exc:
        raise ConfigError(f"{TARGETS}: {redact(target)!r} is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{TARGETS}: {redact(target)!r} is not an http(s) URL "
                          "such as http://receiver:8000/webhooks/mlflow")
    del port


def redact(target: str) -> str:
    """The URL without user info, query or fragment: safe to log."""
    try:
        parts = urlsplit(target)
        if not parts.netloc:  # not a URL at all: show it as given, unless it may hold a password
            return target if "@" not in target else "<URL with credentials>"
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparseable URL>"
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    # ASCII decimals only: float() would also take "nan", "1_0" and non-ASCII digits.
    if not _DECIMAL.fullmatch(raw):
        raise ConfigError(f"{name} must be a number, got {raw[:40]!r}")
    return float(raw)


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not _DIGITS.fullmatch(raw):
        raise ConfigError(f"{name} must be an integer, got {raw[:40]!r}")
    return int(raw)


# A sign is let through so that "-1" gets the range message, which says more than "bad number".
_DIGITS = re.compile(r"-?[0-9]{1,9}")
_DECIMAL = re.compile(r"-?([0-9]{1,9}(\.[0-9]*)?|\.[0-9]+)")
