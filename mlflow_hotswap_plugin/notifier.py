"""Deliver events to every receiver without ever holding up the registry call.

`Notifier.emit()` only queues one job per target. A worker of a bounded pool (lanes.py) then
resolves the target's name (targets.py) and queues one delivery per address it resolves to (the
replicas behind a Kubernetes headless Service), each on that address's own queue, which the
pool drains one attempt at a time (delivery.py). So a receiver that hangs, or a name that does
not resolve, only ever delays its own queue, and a thousand replicas cost a fixed number of
threads. A full queue drops the delivery and logs it; so does `close()`, for what is left.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from mlflow_hotswap_plugin import targets
from mlflow_hotswap_plugin.delivery import Backoff, Outcome, Sender
from mlflow_hotswap_plugin.events import Event
from mlflow_hotswap_plugin.lanes import Lanes
from mlflow_hotswap_plugin.settings import Settings
from mlflow_hotswap_plugin.targets import Resolver, Target

logger = logging.getLogger(__name__)

WORKERS = 16  # delivery threads at most: more than a few hung receivers can hold at once
IDLE = 60.0  # seconds a worker waits for work before it ends


@dataclass(frozen=True)
class _Job:
    event: Event
    target: Target
    address: str | None = None  # None: resolve the target's name, then fan out
    body: bytes = b""
    delivery_id: str = ""


class Notifier:
    def __init__(self, settings: Settings, resolver: Resolver = targets.resolve,
                 backoff: Backoff | None = None, workers: int = WORKERS, idle: float = IDLE,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.targets = [Target.parse(url) for url in settings.targets]
        self.emitted = False  # only a notifier that has emitted has anything to report
        self._resolve = resolver
        self._backoff = backoff or Backoff()
        self._new_sender: Callable[[], Sender] = functools.partial(
            Sender, settings.secret, settings.timeout, pools=4 * workers, clock=clock)
        self._sender = self._new_sender()
        self._lanes: Lanes[_Job] = Lanes(self._attempt, workers=workers,
                                         queue_size=settings.queue_size, idle=idle)
        self._closed = False

    # -- the registry side: never blocks ------------------------------------------------------

    def emit(self, event: Event) -> None:
        """Queue `event` for every target; returns at once, whatever the receivers do."""
        if not self.targets:
            return
        self.emitted = True
        for target in self.targets:
            self._put(_Job(event, target))

    def flush(self, timeout: float) -> bool:
        """Wait until every queued delivery has finished; False if `timeout` ran out first."""
        return self._lanes.wait_idle(timeout)

    def pending(self) -> dict[str, int]:
        """Deliveries queued or in flight, per target (its safe URL)."""
        counts: Counter[str] = Counter()
        for state in self._lanes.states():
            counts[state.head.target.safe_url] += state.waiting + state.in_flight
        return dict(counts)

    def close(self, timeout: float) -> dict[str, tuple[int, int]]:
        """Give deliveries `timeout` seconds to finish, then log, per target, what is dropped.

        Returns {safe target URL: (queued, in flight)} for the targets that still had work.
        Only the first call waits and logs (exit may call it from SIGTERM, then atexit).
        """
        if self._closed:
            return {}
        self._closed = True
        self.flush(timeout)
        left: dict[str, tuple[int, int]] = {}
        for state in self._lanes.states():
            url = state.head.target.safe_url
            queued, flying = left.get(url, (0, 0))
            left[url] = (queued + state.waiting, flying + state.in_flight)
        for url, (queued, flying) in left.items():
            logger.warning("mlflow-hotswap: exiting with %d notification(s) for %s not "
                           "delivered (%d queued, %d in flight)", queued + flying, url, queued,
                           flying)
        return left

    def after_fork(self) -> None:
        """In a child forked while workers ran: start with no work, no worker and no
        connection (the parent's sockets are the parent's)."""
        self._lanes.reset()
        self._sender = self._new_sender()

    @property
    def workers(self) -> int:
        """Delivery threads running now."""
        return self._lanes.workers

    def _put(self, job: _Job) -> None:
        if self._lanes.put((job.target, job.address), job):
            return
        where = job.target.safe_url + (f" ({job.address})" if job.address else "")
        logger.warning("Notification queue for %s full (%d): dropped %s", where,
                       self.settings.queue_size, job.event.name)

    # -- the workers' side ----------------------------------------------------------------------

    def _attempt(self, job: _Job, attempt: int) -> float | None:
        if job.address is None:
            return self._fan_out(job, attempt)
        result = self._sender.attempt(job.target, job.address, job.body, job.delivery_id)
        if result.retryable and attempt <= self.settings.max_retries:
            return self._backoff.delay(attempt, result.retry_after)
        _log(job.event, Outcome(job.target, job.address, result.status, result.error, attempt))
        return None

    def _fan_out(self, job: _Job, attempt: int) -> float | None:
        """Resolve the target's name, retried like a connection error, and queue a delivery on
        each address's own queue."""
        try:
            found = targets.addresses(job.target, self._resolve, self.settings.max_addresses)
        except (OSError, UnicodeError) as exc:  # UnicodeError: a name IDNA cannot encode
            if attempt <= self.settings.max_retries:
                return self._backoff.delay(attempt)
            logger.warning("Cannot resolve %s after %d attempt(s): %s not sent (%s)",
                           job.target.host, attempt, job.event.name, exc)
            return None
        body = job.event.to_json()  # once for every address
        for address in found:
            self._put(_Job(job.event, job.target, address, body, str(uuid.uuid4())))
        return None


def _log(event: Event, outcome: Outcome) -> None:
    where = f"{outcome.target.safe_url} ({outcome.address})"
    if outcome.accepted:
        logger.debug("Notified %s of %s", where, event.name)
    elif outcome.status == 401:
        logger.warning("%s rejected %s with 401: is HOTSWAP_WEBHOOK_SECRET the same on both "
                       "sides?", where, event.name)
    else:
        reason = f"HTTP {outcome.status}" if outcome.status is not None else outcome.error
        logger.warning("Notifying %s of %s failed after %d attempt(s): %s", where, event.name,
                       outcome.attempts, reason)
