"""ModelUpdater: follow a stage or alias in the registry and hot-swap the served model.

One background task owns every refresh, so refreshes never overlap: it wakes on a trigger
(notification, manual reload) or when the poll interval runs out. Triggers that arrive while
a refresh runs are coalesced into one more refresh, which is what they all wait for.

The updater owns the model cache: it loads through it, and its eviction hook frees a model's
files unless that model is still served or held for the rollout.

Staged rollout: the rollout references (MODEL_PREWARM, MODEL_CANARY, MODEL_SHADOW) are
resolved by the same refreshes, after the followed one so a promotion never waits for them, and
their versions loaded into the same cache: a pre-warmed version's promotion is a cache hit.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import anyio
from mlflow.exceptions import MlflowException

from receiver import threads
from receiver.guard import LoadGuard
from receiver.loader import FastModelLoader
from receiver.metrics import Metrics
from receiver.references import Reference
from receiver.registry import (
    LoadedModel,
    ModelLoadFailed,
    ModelNotFound,
    Registry,
    RegistryUnavailable,
)
from receiver.settings import Settings

logger = logging.getLogger(__name__)

Trigger = Literal["webhook", "poll", "manual", "startup"]


class RefreshStatus(str, enum.Enum):
    """What a refresh did to one model."""

    RELOADED = "reloaded"    # swapped to another version
    UNCHANGED = "unchanged"  # the reference still points to the served version
    FAILED = "failed"        # resolve, load or warm-up failed; the served version stays
    ABSENT = "absent"        # nothing is at the stage or alias; the served version stays


# A burst of notifications is settled before the registry is asked: the refresh waits until
# none has come for QUIET seconds, at most SETTLE_MAX. A storm of any size costs one resolve,
# plus one for those that arrive while it runs. One notification costs QUIET, and is worth it:
# the other events of the same registry call (a transition's archived versions) come within
# it, and the registry has finished answering that call when it is asked (asked at once, it
# answered the call later: bench/ part 5).
QUIET, SETTLE_MAX = 0.02, 1.0


@dataclass
class RefreshResult:
    """What one refresh did, per model name: a status and, when it failed, why."""

    status: dict[str, RefreshStatus] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    # The refresh as a whole crashed before it could say anything per model.
    crash: str | None = None

    @property
    def failed(self) -> bool:
        return bool(self.errors) or self.crash is not None


class ModelUpdater:
    def __init__(self, settings: Settings, registry: Registry, metrics: Metrics,
                 limiter: anyio.CapacityLimiter,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._registry = registry
        self._metrics = metrics
        self._limiter = limiter
        self._clock = clock
        self.guard = LoadGuard(registry, settings.load_timeout, metrics)
        self._cache: FastModelLoader[tuple[str, str], LoadedModel] = FastModelLoader(
            self._load, settings.cache_size, metrics, on_evict=self._evicted)
        # The served models. Handlers read an entry once per request, so a swap is a single
        # reference assignment and a request in flight keeps the model it started with.
        self._served: dict[str, LoadedModel] = {}
        # The versions the rollout references point to, per name; None when nothing is there
        # or it failed to load. Replaced as a whole on change, like `_served` entries.
        self._held: dict[str, dict[Reference, LoadedModel | None]] = {}
        self._consecutive_failures = 0
        self.last_error: str | None = None
        self.next_attempt_at: float | None = None
        self._wakeup: asyncio.Event | None = None
        self._pending: asyncio.Future[RefreshResult] | None = None
        self._pending_trigger: Trigger = "startup"
        self._task: asyncio.Task[None] | None = None
        self._last_webhook = 0.0

    def served(self, name: str) -> LoadedModel | None:
        return self._served.get(name)

    def cached(self, name: str, version: str) -> LoadedModel | None:
        """A version already in the cache (counted as a hit), or None; never loads or waits."""
        return self._cache.cached((name, version))

    def is_served(self, model: LoadedModel) -> bool:
        return self._served.get(model.name) is model

    def held(self, name: str, reference: Reference) -> LoadedModel | None:
        """The loaded version a rollout reference points to, if any."""
        return self._held.get(name, {}).get(reference)

    def _in_use(self, model: LoadedModel) -> bool:
        return self.is_served(model) or any(
            held is model for held in self._held.get(model.name, {}).values())

    def _drop(self, model: LoadedModel | None) -> None:
        """Free a model no longer served or held, unless the cache still keeps it."""
        if model is not None and model.key not in self._cache and not self._in_use(model):
            self._registry.release(model)

    async def pinned(self, name: str, version: str) -> LoadedModel:
        """One version of `name`, from the cache or loaded into it, whatever is served.

        Raises ModelNotFound, RegistryUnavailable when MLflow cannot be asked, and
        ModelLoadFailed when the version cannot be loaded or warmed up.
        """
        try:
            return await threads.run(self._limiter, self._cache.get, (name, version))
        except (ModelNotFound, ModelLoadFailed):
            raise
        except MlflowException as exc:
            raise RegistryUnavailable(f"Could not fetch {name} version {version} from MLflow: "
                                      f"{exc.message}") from None
        except Exception as exc:  # noqa: BLE001 - a broken version must not break the server
            raise ModelLoadFailed(f"{name} version {version} failed to load: "
                                  f"{type(exc).__name__}: {exc}") from None

    async def start(self) -> None:
        self._wakeup = asyncio.Event()
        self.trigger("startup")
        self._task = asyncio.create_task(self._run(), name="hotswap-model-updater")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def trigger(self, reason: Trigger) -> asyncio.Future[RefreshResult]:
        """Ask for a refresh now; the returned future completes when that refresh has run.

        Every trigger that arrives before the refresh starts shares one future and one run.
        """
        assert self._wakeup is not None, "start() the updater first"
        if reason == "webhook":
            self._last_webhook = self._clock()
        if self._pending is None:
            self._pending = asyncio.get_running_loop().create_future()
            self._pending_trigger = reason
        self._wakeup.set()
        return self._pending

    def retry_after(self) -> int:
        """Seconds a client should wait before the next attempt to load a model."""
        if self.next_attempt_at is None:
            return 1
        return max(1, round(self.next_attempt_at - self._clock()))

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            delay = self._delay()
            self.next_attempt_at = self._clock() + delay
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=delay)
            if self._pending is not None and self._pending_trigger == "webhook":
                await self._settle()
            self._wakeup.clear()
            waiters, self._pending = self._pending, None
            trigger: Trigger = self._pending_trigger if waiters is not None else "poll"
            try:
                result = await threads.run(self._limiter, self.refresh_all, trigger)
            except Exception as exc:  # the updater must outlive any failure
                logger.exception("Model refresh crashed")
                result = RefreshResult(crash=repr(exc))
            self._consecutive_failures = self._consecutive_failures + 1 if result.failed else 0
            if waiters is not None and not waiters.done():
                waiters.set_result(result)

    async def _settle(self) -> None:
        first = self._clock()
        while True:
            now = self._clock()
            quiet_for = now - self._last_webhook
            if quiet_for >= QUIET or now - first >= SETTLE_MAX:
                return
            await asyncio.sleep(min(QUIET - quiet_for, SETTLE_MAX - (now - first)))

    def _delay(self) -> float:
        if not self._consecutive_failures:
            return self._settings.update_interval
        delays = self._settings.retry_delays
        retry = delays[min(self._consecutive_failures, len(delays)) - 1]
        delay = min(retry, self._settings.update_interval)
        logger.info("Retrying the model update in %.0fs", delay)
        return delay

    def refresh_all(self, trigger: Trigger) -> RefreshResult:
        """Re-resolve every followed model and swap those that changed. Blocking."""
        result = RefreshResult()
        for name in self._settings.model_names:
            try:
                result.status[name] = self._refresh(name, trigger)
            except Exception as exc:  # keep serving what we have
                self._metrics.update_errors.inc()
                result.status[name] = RefreshStatus.FAILED
                result.errors[name] = f"{type(exc).__name__}: {exc}"
                logger.error("Model update for %s failed; still serving version %s: %s",
                             name, self._served_version(name), exc,
                             exc_info=not isinstance(exc, ConnectionError))
            for reference in self._settings.rollout_references:
                try:
                    self._refresh_held(name, reference, trigger)
                except Exception as exc:  # the served model is never affected
                    self._metrics.update_errors.inc()
                    result.errors[f"{name} {reference}"] = f"{type(exc).__name__}: {exc}"
                    logger.error("Could not load %s of %s for the rollout: %s", reference,
                                 name, exc, exc_info=not isinstance(exc, ConnectionError))
        self.last_error = "; ".join(f"{n}: {e}" for n, e in result.errors.items()) or None
        return result

    def _refresh(self, name: str, trigger: Trigger) -> RefreshStatus:
        self._metrics.registry_resolves.inc()
        version = self._registry.resolve(name)
        if version is None:
            logger.warning("No version of %s is at %s in MLflow; still serving version %s",
                           name, self._settings.reference, self._served_version(name))
            return RefreshStatus.ABSENT
        current = self._served.get(name)
        if current is not None and current.version == version:
            return RefreshStatus.UNCHANGED
        model = self._cache.get((name, version))
        self._served[name] = model
        self._metrics.model_version.labels(model=name).set(float(version))
        self._metrics.reloads.labels(trigger=trigger).inc()
        logger.info("Swapped to model version %s of %s (was %s, trigger %s)",
                    version, name, current.version if current else "none", trigger)
        self._drop(current)  # evicted while served: now nothing may hold it
        return RefreshStatus.RELOADED

    def _refresh_held(self, name: str, reference: Reference, trigger: Trigger) -> None:
        self._metrics.registry_resolves.inc()
        version = self._registry.resolve(name, reference)
        current = self.held(name, reference)
        if current is not None and current.version == version:
            return
        # The registry no longer points at `current`: let it go before loading, so a version
        # that fails to load leaves nothing stale behind (principle 1).
        self._hold(name, reference, None)
        self._drop(current)
        if version is None:
            if current is not None:
                logger.info("No version of %s is at %s any more (was %s)", name, reference,
                            current.version)
            return
        model = self._cache.get((name, version))
        self._hold(name, reference, model)
        logger.info("Holding model version %s of %s for %s, loaded and warmed up "
                    "(trigger %s)", version, name, reference, trigger)

    def _hold(self, name: str, reference: Reference, model: LoadedModel | None) -> None:
        self._held[name] = {**self._held.get(name, {}), reference: model}

    def _served_version(self, name: str) -> str:
        model = self._served.get(name)
        return model.version if model else "none"

    def _load(self, key: tuple[str, str]) -> LoadedModel:
        model = self.guard.load(*key)
        self._metrics.load_duration.observe(model.load_seconds)
        # What is loaded by now (MLflow, the model's libraries, the model) lives on: take it out
        # of the cyclic collector's walks. A full collection walks every tracked object while
        # holding the GIL, a stall of every request in flight (bench/ part 3's tail). Collect
        # first, so the load's own cyclic garbage is not frozen with it; that walk is a long
        # one only the first time. Frozen objects are still freed by reference counting when
        # the cache lets a model go.
        gc.collect()
        gc.freeze()
        return model

    def _evicted(self, key: tuple[str, str], model: LoadedModel) -> None:
        """Free an evicted model's files unless it is still served or held (then the swap or
        the rollout refresh frees them)."""
        if not self._in_use(model):
            self._registry.release(model)
