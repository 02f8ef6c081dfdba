"""The plugin's settings: the one place that reads HOTSWAP_* from the environment.

Read once when the store is built (at `mlflow server` start), so a bad value stops the server
with a message naming the variable, not a stack trace on the first stage transition.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from mlflow_hotswap_plugin import env
from mlflow_hotswap_plugin.signing import parse_secrets

TARGETS = "HOTSWAP_TARGETS"
# One error type for a bad setting, in both packages; the plugin's older name stays importable.
ConfigError = env.SettingError
# A target URL as logs may show it: no user info, query or fragment.
redact = env.bare_url


def check_target(target: str) -> None:
    """Raises ValueError, saying why, unless `target` is an http(s) URL naming a host."""
    parts = urlsplit(target)
    _ = parts.port  # raises ValueError on a bad port, saying so
    if parts.scheme not in ("http", "https"):
        raise ValueError("it does not start with http:// or https://")
    if not parts.hostname:
        raise ValueError("it names no host")


@dataclass(frozen=True)
class Settings:
    targets: tuple[str, ...] = field(default=(), metadata=env.declare(
        TARGETS, env.items("comma-separated http(s) URLs such as "
                           "http://receiver:8000/webhooks/mlflow", check_target),
        "comma-separated receiver webhook URLs; a hostname that resolves to several addresses "
        "is notified at each (one receiver replica per address)",
        default_text="none: pass-through, logged once", redact=env.bare_url))
    # Every configured secret; the first signs.
    secrets: tuple[str, ...] = field(default=(), metadata=env.declare(
        "HOTSWAP_WEBHOOK_SECRET", env.parsed(parse_secrets, "comma-separated secrets"),
        "HMAC secret shared with the receivers; several comma-separated (rotation): the first "
        "signs", default_text="none: unsigned", secret=True))
    # Upper bounds keep a dead receiver from holding its delivery lane for hours.
    timeout: float = field(default=5.0, metadata=env.declare(
        "HOTSWAP_TIMEOUT", env.seconds(most=300), "seconds per delivery attempt"))
    max_retries: int = field(default=3, metadata=env.declare(
        "HOTSWAP_MAX_RETRIES", env.integer(low=0, high=20),
        "retries on connection errors, 429 and 5xx, with exponential backoff and jitter"))
    max_addresses: int = field(default=10000, metadata=env.declare(
        "HOTSWAP_MAX_ADDRESSES", env.integer(low=1),
        "most addresses notified per target hostname (replicas behind one name); beyond it a "
        "warning names the count"))
    # Not an environment setting: deliveries waiting, per target and per address.
    queue_size: int = 1000

    def __post_init__(self) -> None:
        if isinstance(self.secrets, str):
            raise TypeError("secrets is a tuple of secrets; see signing.parse_secrets")
        env.check(self)
        if self.queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, got {self.queue_size}")

    @property
    def secret(self) -> str | None:
        """The secret deliveries are signed with: the first configured, if any."""
        return self.secrets[0] if self.secrets else None

    def __repr__(self) -> str:
        # Never show a secret, nor credentials a target URL may carry.
        return env.represent(self)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        return env.read(cls, environ)
