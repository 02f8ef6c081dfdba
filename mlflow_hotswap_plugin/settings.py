"""The plugin's settings: the one place that reads HOTSWAP_* from the environment.

Read once when the store is built (at `mlflow server` start), so a bad value stops the server
with a message naming the variable, not a stack trace on the first stage transition.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

TARGETS = "HOTSWAP_TARGETS"
SECRET = "HOTSWAP_WEBHOOK_SECRET"
TIMEOUT = "HOTSWAP_TIMEOUT"
MAX_RETRIES = "HOTSWAP_MAX_RETRIES"


class ConfigError(ValueError):
    """A HOTSWAP_* variable holds a value the plugin cannot use."""


@dataclass(frozen=True)
class Settings:
    targets: tuple[str, ...] = ()
    secret: str | None = None
    timeout: float = 5.0
    max_retries: int = 3
    # Not environment settings: limits that keep the notifier bounded.
    queue_size: int = 1000
    workers: int = 4

    def __post_init__(self) -> None:
        for target in self.targets:
            check_target(target)
        if not (self.timeout > 0 and math.isfinite(self.timeout)):
            raise ConfigError(f"{TIMEOUT} must be a positive number of seconds, got {self.timeout!r}")
        if self.max_retries < 0:
            raise ConfigError(f"{MAX_RETRIES} must be 0 or more, got {self.max_retries!r}")

    def __repr__(self) -> str:
        # Never show the secret, nor credentials a target URL may carry.
        return (f"Settings(targets={[redact(t) for t in self.targets]!r}, "
                f"secret={'<set>' if self.secret else None}, timeout={self.timeout!r}, "
                f"max_retries={self.max_retries!r})")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        targets = tuple(t.strip() for t in env.get(TARGETS, "").split(",") if t.strip())
        return cls(targets=targets,
                   secret=env.get(SECRET) or None,
                   timeout=_number(env, TIMEOUT, 5.0, float),
                   max_retries=_number(env, MAX_RETRIES, 3, int))


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


def _number(env: Mapping[str, str], name: str, default: float, kind: type) -> float | int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        noun = "an integer" if kind is int else "a number"
        raise ConfigError(f"{name} must be {noun}, got {raw!r}") from None
    return value
