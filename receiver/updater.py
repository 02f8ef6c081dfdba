"""ModelUpdater: follow a stage or alias in the registry and hot-swap the served model.

One background task owns every refresh, so refreshes never overlap: it wakes on a trigger
(notification, manual reload) or when the poll interval runs out. Triggers that arrive while
a refresh runs are coalesced into one more refresh, which is what they all wait for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from receiver.loader import FastModelLoader
from receiver.metrics import Metrics
from receiver.registry import LoadedModel, Registry
from receiver.settings import Settings

logger = logging.getLogger(__name__)

RELOADED, UNCHANGED, FAILED, ABSENT = "reloaded", "unchanged", "failed", "absent"
# A burst of notifications is settled before the registry is asked: the refresh waits until
# none has come for QUIET seconds, at most SETTLE_MAX. One notification costs QUIET; a storm
# of any size costs one resolve, plus one for those that arrive while it runs.
QUIET, SETTLE_MAX = 0.05, 1.0


@dataclass
class RefreshResult:
    """What one refresh did, per model name: a status and, when it failed, why."""
    status: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return bool(self.errors)


class ModelUpdater:
    def __init__(self, settings: Settings, registry: Registry,
                 loader: FastModelLoader[tuple[str, str], LoadedModel], metrics: Metrics) -> None:
        self._settings = settings
        self._registry = registry
        self._loader = loader
        self._metrics = metrics
        # The served models. Handlers read an entry once per request, so a swap is a single
        # reference assignment and a request in flight keeps the model it started with.
        self._served: dict[str, LoadedModel] = {}
        self._consecutive_failures = 0
        self.last_error: str | None = None
        self.next_attempt_at: float | None = None
        self._wakeup: asyncio.Event | None = None
        self._pending: asyncio.Future[RefreshResult] | None = None
        self._pending_trigger = "startup"
        self._task: asyncio.Task[None] | None = None
        self._last_webhook = 0.0

    def served(self, name: str) -> LoadedModel | None:
        return self._served.get(name)

    def is_served(self, model: LoadedModel) -> bool:
        return self._served.get(model.name) is model

    async def start(self) -> None:
        self._wakeup = asyncio.Event()
        self.trigger("startup")
        self._task = asyncio.create_task(self._run(), name="hotswap-model-updater")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def trigger(self, reason: str) -> asyncio.Future[RefreshResult]:
        """Ask for a refresh now; the returned future completes when that refresh has run.

        Every trigger that arrives before the refresh starts shares one future and one run.
        """
        assert self._wakeup is not None, "start() the updater first"
        if reason == "webhook":
            self._last_webhook = time.monotonic()
        if self._pending is None:
            self._pending = asyncio.get_running_loop().create_future()
            self._pending_trigger = reason
        self._wakeup.set()
        return self._pending

    def retry_after(self) -> int:
        """Seconds a client should wait before the next attempt to load a model."""
        if self.next_attempt_at is None:
            return 1
        return max(1, round(self.next_attempt_at - time.monotonic()))

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            delay = self._delay()
            self.next_attempt_at = time.monotonic() + delay
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=delay)
            except asyncio.TimeoutError:
                pass
            if self._pending is not None and self._pending_trigger == "webhook":
                await self._settle()
            self._wakeup.clear()
            waiters, self._pending = self._pending, None
            trigger = self._pending_trigger if waiters is not None else "poll"
            try:
                result = await asyncio.to_thread(self.refresh_all, trigger)
            except Exception as exc:  # noqa: BLE001 - the updater must outlive any failure
                logger.exception("Model refresh crashed")
                result = RefreshResult(errors={"*": repr(exc)})
            self._consecutive_failures = self._consecutive_failures + 1 if result.failed else 0
            if waiters is not None and not waiters.done():
                waiters.set_result(result)

    async def _settle(self) -> None:
        first = time.monotonic()
        while True:
            now = time.monotonic()
            quiet_for = now - self._last_webhook
            if quiet_for >= QUIET or now - first >= SETTLE_MAX:
                return
            await asyncio.sleep(min(QUIET - quiet_for, SETTLE_MAX - (now - first)))

    def _delay(self) -> float:
        if not self._consecutive_failures:
            return self._settings.update_interval
        delays = self._settings.retry_delays
        retry = delays[min(self._consecutive_failures, len(delays)) - 1]
        logger.info("Retrying the model update in %.0fs", min(retry, self._settings.update_interval))
        return min(retry, self._settings.update_interval)

    def refresh_all(self, trigger: str) -> RefreshResult:
        """Re-resolve every followed model and swap those that changed. Blocking."""
        result = RefreshResult()
        for name in self._settings.model_names:
            try:
                result.status[name] = self._refresh(name, trigger)
            except Exception as exc:  # noqa: BLE001 - keep serving what we have
                self._metrics.update_errors.inc()
                result.status[name] = FAILED
                result.errors[name] = f"{type(exc).__name__}: {exc}"
                logger.error("Model update for %s failed; still serving version %s: %s",
                             name, self._served_version(name), exc,
                             exc_info=not isinstance(exc, ConnectionError))
        self.last_error = "; ".join(f"{n}: {e}" for n, e in result.errors.items()) or None
        return result

    def _refresh(self, name: str, trigger: str) -> str:
        self._metrics.registry_resolves.inc()
        version = self._registry.resolve(name)
        if version is None:
            logger.warning("No version of %s is at %s in MLflow; still serving version %s",
                           name, self._settings.reference, self._served_version(name))
            return ABSENT
        current = self._served.get(name)
        if current is not None and current.version == version:
            return UNCHANGED
        model = self._loader.get((name, version))
        self._served[name] = model
        self._metrics.model_version.labels(model=name).set(float(version))
        self._metrics.reloads.labels(trigger=trigger).inc()
        logger.info("Swapped to model version %s of %s (was %s, trigger %s)",
                    version, name, current.version if current else "none", trigger)
        if current is not None and current.key not in self._loader:
            self._registry.release(current)  # evicted while served: now nothing holds it
        return RELOADED

    def _served_version(self, name: str) -> str:
        model = self._served.get(name)
        return model.version if model else "none"

    def on_evict(self, key: tuple[str, str], model: LoadedModel) -> None:
        """Cache eviction hook: free the files unless the model is still being served."""
        if not self.is_served(model):
            self._registry.release(model)
