"""The one place that reads the receiver's environment variables (DESIGN.md, "The receiver")."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Literal, TypeVar, cast

from receiver import redact
from receiver.references import Reference, Share, parse_references, parse_share

N = TypeVar("N", int, float)
T = TypeVar("T")

Batching = Literal["auto", "on", "off"]
BATCHING_MODES: tuple[Batching, ...] = ("auto", "on", "off")


class SettingsError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    tracking_uri: str
    model_names: tuple[str, ...]
    registry_uri: str | None = None
    stage: str = "Production"
    alias: str | None = None
    cache_size: int = 5
    update_interval: float = 60.0
    webhook_secret: str | None = None
    admin_token: str | None = None
    max_body_bytes: int = 10 * 1024 * 1024
    # How long a signed notification stays acceptable, and how long delivery ids are remembered.
    webhook_max_age: float = 300.0
    # Back-off after a failed update: 5, 10, 30, then every 60 s (DESIGN.md).
    retry_delays: tuple[float, ...] = (5.0, 10.0, 30.0, 60.0)
    model_dir: str | None = None
    # Predict calls run at once, over all models and versions. A batched version makes one
    # merged call at a time, so more threads add parallelism only across versions or for
    # unbatched models; scoring mostly holds the GIL, so they pay only for models that free it.
    predict_threads: int = 1
    # A download + load + warm-up taking longer is abandoned and counted as failed.
    load_timeout: float = 600.0
    # The scoring lane (lane.py): merge concurrent requests into one predict call, bound the
    # requests admitted, and give each a deadline. Defaults chosen from bench/ part 3.
    batching: Batching = "auto"
    batch_max_rows: int = 1024
    max_queue: int = 4096
    max_wait: float = 1.0
    request_timeout: float = 60.0
    # Staged rollout (issue 11): references loaded ahead, and who takes a share of the traffic.
    prewarm: tuple[Reference, ...] = ()
    canary: Share | None = None
    shadow: Share | None = None

    def __post_init__(self) -> None:
        if not self.model_names:
            raise SettingsError("MODEL_NAME is empty: name at least one registered model.")
        if self.cache_size < 1:
            raise SettingsError(f"MODEL_CACHE_SIZE must be at least 1, got {self.cache_size}.")
        if self.predict_threads < 1:
            raise SettingsError(
                f"HOTSWAP_PREDICT_THREADS must be at least 1, got {self.predict_threads}.")
        if self.batching not in BATCHING_MODES:
            raise SettingsError(f"HOTSWAP_BATCHING must be one of {', '.join(BATCHING_MODES)}, "
                                f"got {self.batching!r}.")
        if self.batch_max_rows < 1:
            raise SettingsError(
                f"HOTSWAP_BATCH_MAX_ROWS must be at least 1, got {self.batch_max_rows}.")
        if self.max_queue < 1:
            raise SettingsError(f"HOTSWAP_MAX_QUEUE must be at least 1, got {self.max_queue}.")
        if not self.max_wait > 0:
            raise SettingsError(
                f"HOTSWAP_MAX_WAIT must be a positive number of seconds, got {self.max_wait}.")
        if not self.request_timeout > 0:
            raise SettingsError(
                f"HOTSWAP_REQUEST_TIMEOUT must be a positive number of seconds, "
                f"got {self.request_timeout}.")
        if self.update_interval <= 0:
            raise SettingsError(
                f"MODEL_UPDATE_INTERVAL must be a positive number of seconds, "
                f"got {self.update_interval}.")
        if not self.load_timeout > 0:
            raise SettingsError(
                f"HOTSWAP_LOAD_TIMEOUT must be a positive number of seconds, "
                f"got {self.load_timeout}.")

        for variable, share in (("MODEL_CANARY", self.canary), ("MODEL_SHADOW", self.shadow)):
            if share is not None and share.reference == self.followed:
                raise SettingsError(
                    f"{variable}={share} names the followed reference itself "
                    f"({self.reference}): it would never differ from the served version.")
        # Each served name holds its version and one per rollout reference in the cache; fewer
        # slots and every refresh would evict what the next one loads again.
        needed = len(self.model_names) * (1 + len(self.rollout_references))
        if self.rollout_references and self.cache_size < needed:
            raise SettingsError(
                f"MODEL_CACHE_SIZE={self.cache_size} cannot hold the served version and the "
                f"{len(self.rollout_references)} rollout reference(s) "
                f"({', '.join(map(str, self.rollout_references))}) of "
                f"{len(self.model_names)} model(s); set it to at least {needed}.")

    def __repr__(self) -> str:
        # A repr ends up in logs and tracebacks: no secret, no password in a URI.
        hidden = {"webhook_secret", "admin_token"}
        shown = []
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name in hidden and value is not None:
                value = redact.MASK
            elif item.name in ("tracking_uri", "registry_uri"):
                value = redact.uri(value)
            shown.append(f"{item.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    @property
    def followed(self) -> Reference:
        return Reference("alias", self.alias) if self.alias else Reference("stage", self.stage)

    @property
    def rollout_references(self) -> tuple[Reference, ...]:
        """Every reference loaded besides the followed one: pre-warmed, canary, shadow."""
        found = list(self.prewarm)
        for share in (self.canary, self.shadow):
            if share is not None and share.reference not in found:
                found.append(share.reference)
        return tuple(ref for ref in found if ref != self.followed)

    @property
    def default_model(self) -> str:
        return self.model_names[0]

    @property
    def reference(self) -> str:
        """What is followed, as MLflow's URI syntax writes it: `@champion` or `/Production`."""
        return f"@{self.alias}" if self.alias else f"/{self.stage}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        names = tuple(n.strip() for n in _required(env, "MODEL_NAME").split(",") if n.strip())
        return cls(
            tracking_uri=_required(env, "MLFLOW_TRACKING_URI"),
            registry_uri=env.get("MLFLOW_REGISTRY_URI") or None,
            model_names=names,
            stage=env.get("MODEL_STAGE") or "Production",
            alias=env.get("MODEL_ALIAS") or None,
            cache_size=_number(env, "MODEL_CACHE_SIZE", 5, int),
            update_interval=_number(env, "MODEL_UPDATE_INTERVAL", 60.0, float),
            webhook_secret=env.get("HOTSWAP_WEBHOOK_SECRET") or None,
            admin_token=env.get("HOTSWAP_ADMIN_TOKEN") or None,
            max_body_bytes=_number(env, "HOTSWAP_MAX_BODY_BYTES", 10 * 1024 * 1024, int),
            model_dir=env.get("HOTSWAP_MODEL_DIR") or None,
            predict_threads=_number(env, "HOTSWAP_PREDICT_THREADS", 1, int),
            load_timeout=_number(env, "HOTSWAP_LOAD_TIMEOUT", 600.0, float),
            # Validated in __post_init__, which names the variable.
            batching=cast(Batching, (env.get("HOTSWAP_BATCHING") or "auto").strip().lower()),
            batch_max_rows=_number(env, "HOTSWAP_BATCH_MAX_ROWS", 1024, int),
            max_queue=_number(env, "HOTSWAP_MAX_QUEUE", 4096, int),
            max_wait=_number(env, "HOTSWAP_MAX_WAIT", 1.0, float),
            request_timeout=_number(env, "HOTSWAP_REQUEST_TIMEOUT", 60.0, float),
            prewarm=_parsed(env, "MODEL_PREWARM", parse_references) or (),
            canary=_parsed(env, "MODEL_CANARY", parse_share),
            shadow=_parsed(env, "MODEL_SHADOW", lambda text: parse_share(text, 100.0)),
        )


def _required(env: Mapping[str, str], key: str) -> str:
    value = env.get(key, "").strip()
    if not value:
        raise SettingsError(f"{key} is missing, and has no default.")
    return value


def _parsed(env: Mapping[str, str], key: str, parse: Callable[[str], T]) -> T | None:
    raw = env.get(key, "").strip()
    if not raw:
        return None
    try:
        return parse(raw)
    except ValueError as exc:
        raise SettingsError(f"{key}={raw!r}: {exc}") from None


def _number(env: Mapping[str, str], key: str, default: N, kind: type[N]) -> N:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    # int() and float() also take "٣", "1_0", "nan" and "inf": a setting is plain ASCII digits.
    try:
        if not raw.isascii():
            raise ValueError(raw)
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{key} must be a number ({kind.__name__}), got {raw!r}.") from None
    if not math.isfinite(value):
        raise SettingsError(f"{key} must be a finite number, got {raw!r}.")
    return value
