"""Pinned-version requests (`/models/{name}/versions/{version}/invocations`): any caller may
name any version, so what they can make the receiver load is bounded here.

- A version has one spelling, `1`: `01` or an Arabic-Indic `1` is not found, and loads
  nothing, so no caller can fill the cache with copies of one version.
- At most PINNED_LOADS versions load at once for pinned requests; beyond that, 503 at once.
- A version that failed to load is answered from a negative cache for FAILED_TTL seconds,
  instead of being downloaded again for every request that names it.

A cached version is answered on the event loop; a miss loads in a model_work thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import anyio
from cachetools import TTLCache
from mlflow.exceptions import MlflowException

from receiver import threads
from receiver.metrics import Metrics
from receiver.registry import LoadedModel, ModelLoadFailed, ModelNotFound, RegistryUnavailable
from receiver.retryable import Retryable

PINNED_LOADS = 2
FAILED_TTL = 30.0
# Versions are counters: 18 digits is far beyond any registry, and well inside an int64.
_MAX_DIGITS = 18


class PinnedLoadsBusy(Retryable):
    """Too many pinned versions are loading at once; retry shortly."""


def canonical_version(version: str) -> bool:
    """True for `1`, `42`; False for `0`, `01`, `+1`, `1.0`, other scripts' digits..."""
    return (0 < len(version) <= _MAX_DIGITS and version.isascii() and version.isdigit()
            and version[0] != "0")


class VersionCache(Protocol):
    """What pinned requests need of receiver.models.Models."""

    def cached(self, name: str, version: str) -> LoadedModel | None: ...

    def get(self, name: str, version: str) -> LoadedModel: ...


class PinnedModels:
    def __init__(self, models: VersionCache, limiter: anyio.CapacityLimiter, metrics: Metrics,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._models = models
        self._limiter = limiter
        self._metrics = metrics
        self._loads = anyio.CapacityLimiter(PINNED_LOADS)
        self._failed: TTLCache[tuple[str, str], Exception] = TTLCache(
            maxsize=1024, ttl=FAILED_TTL, timer=clock)

    async def get(self, name: str, version: str) -> LoadedModel:
        """The version, cached or loaded now. `name` must already be one this receiver serves.

        Raises ModelNotFound, ModelLoadFailed (fresh or remembered), RegistryUnavailable, or
        PinnedLoadsBusy.
        """
        if not canonical_version(version):
            raise ModelNotFound(f"Model {name!r} has no version {version!r}: a version is "
                                f"written as a plain number, such as '1'.")
        key = (name, version)
        cached = self._models.cached(name, version)
        if cached is not None:  # no thread, no wait behind loads: the common case
            return cached
        remembered = self._failed.get(key)
        if remembered is not None:
            self._metrics.pinned_refused.labels(reason="failed_recently").inc()
            raise type(remembered)(f"{remembered} (remembered for {FAILED_TTL:g}s)")
        try:
            self._loads.acquire_nowait()
        except anyio.WouldBlock:
            self._metrics.pinned_refused.labels(reason="busy").inc()
            raise PinnedLoadsBusy(f"{PINNED_LOADS} pinned versions are loading already; "
                                  f"retry shortly.") from None
        try:
            return await self._load(name, version)
        except (ModelNotFound, ModelLoadFailed) as exc:
            self._failed[key] = exc
            raise
        finally:
            self._loads.release()

    async def _load(self, name: str, version: str) -> LoadedModel:
        """Load into the cache in a model_work thread; every failure as a domain error."""
        try:
            return await threads.run(self._limiter, self._models.get, name, version)
        except (ModelNotFound, ModelLoadFailed):
            raise
        except MlflowException as exc:
            raise RegistryUnavailable(f"Could not fetch {name} version {version} from MLflow: "
                                      f"{exc.message}") from None
        except Exception as exc:  # noqa: BLE001 - a broken version must not break the server
            raise ModelLoadFailed(f"{name} version {version} failed to load: "
                                  f"{type(exc).__name__}: {exc}") from None
