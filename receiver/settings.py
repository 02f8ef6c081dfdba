"""The one place that reads the receiver's environment variables (DESIGN.md, "The receiver")."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from receiver.references import Reference, Share, parse_references, parse_share

N = TypeVar("N", int, float)
T = TypeVar("T")


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
    # Predictions scored at once; the rest wait their turn. Scoring is mostly Python holding
    # the GIL, so more threads only contend: at 32 clients on 2 cores, 1 thread served 212
    # requests/s, 2 threads 169, unlimited 139 (bench/). Raise it for models that release the GIL.
    predict_threads: int = 1
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
        if self.update_interval <= 0:
            raise SettingsError(
                f"MODEL_UPDATE_INTERVAL must be a positive number of seconds, "
                f"got {self.update_interval}.")
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
    try:
        return kind(raw)
    except ValueError:
        raise SettingsError(f"{key} must be a number ({kind.__name__}), got {raw!r}.") from None
