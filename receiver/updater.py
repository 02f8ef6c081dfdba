"""ModelUpdater: the loop that keeps the served models following the registry.

One background task owns every refresh, so refreshes never overlap: it wakes on a trigger
(notification, manual reload) or when the poll interval runs out, and runs the blocking
`Models.refresh_all` in a model_work thread. Triggers that arrive while a refresh runs are
coalesced into one more refresh, which is what they all wait for. After a failed refresh the
next comes sooner (5, 10, 30, 60 s); the poll interval is jittered by +-10 %, so replicas
started together do not ask the registry in step. Under a supervisor (workers.py) the host
times the poll for all its workers, so a worker's own updater is built with `polls=False`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable

import anyio

from receiver import threads
from receiver.models import Models, RefreshResult, Trigger
from receiver.settings import Settings

logger = logging.getLogger(__name__)

RefreshListener = Callable[[RefreshResult], None]

# A burst of notifications is settled before the registry is asked: the refresh waits until
# none has come for QUIET seconds, at most SETTLE_MAX. A storm of any size costs one resolve,
# plus one for those that arrive while it runs. One notification costs QUIET, and is worth it:
# the other events of the same registry call (a transition's archived versions) come within
# it, and the registry has finished answering that call when it is asked (asked at once, it
# answered the call later, as the bench's registry measurements show).
QUIET, SETTLE_MAX = 0.02, 1.0
# The poll interval varies by this fraction either way.
JITTER = 0.1


class ModelUpdater:
    def __init__(self, settings: Settings, models: Models, limiter: anyio.CapacityLimiter,
                 clock: Callable[[], float] = time.monotonic,
                 draw: Callable[[], float] = random.random, polls: bool = True) -> None:
        self._settings = settings
        self._polls = polls
        self._listeners: list[RefreshListener] = []
        self._models = models
        self._limiter = limiter
        self._clock = clock
        self._draw = draw
        self._consecutive_failures = 0
        self.next_attempt_at: float | None = None
        self._wakeup: asyncio.Event | None = None
        self._pending: asyncio.Future[RefreshResult] | None = None
        self._pending_trigger: Trigger = "startup"
        self._task: asyncio.Task[None] | None = None
        self._last_webhook = 0.0

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

    def on_refresh(self, listener: RefreshListener) -> None:
        """Call `listener` on the event loop after every refresh, whatever triggered it."""
        self._listeners.append(listener)

    def retry_after(self) -> int:
        """Seconds a client should wait before the next attempt to load a model."""
        if self.next_attempt_at is None:
            return 1
        return max(1, round(self.next_attempt_at - self._clock()))

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            delay = self._delay()
            self.next_attempt_at = None if delay is None else self._clock() + delay
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=delay)
            if self._pending is not None and self._pending_trigger == "webhook":
                await self._settle()
            self._wakeup.clear()
            waiters, self._pending = self._pending, None
            trigger: Trigger = self._pending_trigger if waiters is not None else "poll"
            try:
                result = await threads.run(self._limiter, self._models.refresh_all, trigger)
            except Exception as exc:  # the updater must outlive any failure
                logger.exception("Model refresh crashed")
                result = RefreshResult(crash=repr(exc))
            self._consecutive_failures = self._consecutive_failures + 1 if result.failed else 0
            if waiters is not None and not waiters.done():
                waiters.set_result(result)
            for listener in self._listeners:
                listener(result)

    async def _settle(self) -> None:
        first = self._clock()
        while True:
            now = self._clock()
            quiet_for = now - self._last_webhook
            if quiet_for >= QUIET or now - first >= SETTLE_MAX:
                return
            await asyncio.sleep(min(QUIET - quiet_for, SETTLE_MAX - (now - first)))

    def _delay(self) -> float | None:
        interval = self._settings.update_interval
        if not self._consecutive_failures:
            if not self._polls:
                return None  # woken only by a trigger
            return interval * (1 + JITTER * (2 * self._draw() - 1))
        delays = self._settings.retry_delays
        retry = delays[min(self._consecutive_failures, len(delays)) - 1]
        delay = min(retry, interval)
        logger.info("Retrying the model update in %.0fs", delay)
        return delay
