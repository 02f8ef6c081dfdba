"""Queues of work, one per key (an address, or a name to resolve), drained by a bounded pool.

A key's jobs run one at a time and in order: its first job stays at the head of its queue until
it is finished, through every retry, so later events to that address never overtake it. A job
waiting for its retry holds no thread: it sleeps on a timer heap, and the workers meanwhile
serve the other keys. So a hung address costs one worker for one attempt's timeout at a time,
and delays no other address while the pool is larger than the number of hung ones; retries
(the attempts most likely to hang again) take at most half the pool, so even many hung
addresses leave the other half to first attempts.

Workers start when work arrives (up to the pool's size) and end after `idle` seconds without
any, so an MLflow server that changes nothing holds no delivery thread.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

Job = TypeVar("Job")

# Runs one attempt of a job (its number: 1, 2, ...) in a worker; returns None when the job is
# finished (done or given up), else the seconds to wait before its next attempt.
Attempt = Callable[[Job, int], "float | None"]


@dataclass
class _Queue(Generic[Job]):
    key: Hashable
    jobs: deque[Job] = field(default_factory=deque)
    attempts: int = 0  # attempts begun on the head job: > 0 means it is in flight

    @property
    def waiting(self) -> int:
        return len(self.jobs) - (1 if self.attempts else 0)


@dataclass(frozen=True)
class QueueState(Generic[Job]):
    key: Hashable
    head: Job  # the job in flight, or the next one to be
    waiting: int
    in_flight: bool


class Lanes(Generic[Job]):
    def __init__(self, attempt: Attempt[Job], *, workers: int, queue_size: int,
                 idle: float = 60.0, name: str = "hotswap-notify",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._attempt = attempt
        self._max_workers = workers
        self._queue_size = queue_size
        self._idle = idle
        self._name = name
        self._clock = clock
        self.reset()

    def reset(self) -> None:
        """Empty, with no worker: at construction, and in a child forked while workers ran
        (threads do not survive fork)."""
        self._cond = threading.Condition(threading.Lock())
        self._queues: dict[Hashable, _Queue[Job]] = {}  # keys with work only
        self._ready: deque[_Queue[Job]] = deque()  # queues whose next job is new
        self._retries: deque[_Queue[Job]] = deque()  # queues whose head's retry is due
        self._retrying = 0  # workers busy with a retry
        self._sleeping: list[tuple[float, int, _Queue[Job]]] = []  # (due, tiebreak, queue)
        self._tiebreak = itertools.count()
        self._jobs = 0
        self._workers = 0
        self._waiting_workers = 0

    def put(self, key: Hashable, job: Job) -> bool:
        """Queue `job` behind `key`'s others; False (and nothing queued) when that is full."""
        with self._cond:
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = _Queue(key)
            elif queue.waiting >= self._queue_size:
                return False
            queue.jobs.append(job)
            self._jobs += 1
            if len(queue.jobs) == 1:  # a queue with older jobs is already scheduled
                self._ready.append(queue)
                self._start_worker_if_needed()
                self._cond.notify()
            return True

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every job has finished; False if `timeout` ran out first."""
        with self._cond:
            return self._cond.wait_for(lambda: self._jobs == 0, timeout)

    def states(self) -> list[QueueState[Job]]:
        """Every key with work, and how much."""
        with self._cond:
            return [QueueState(q.key, q.jobs[0], q.waiting, q.attempts > 0)
                    for q in self._queues.values()]

    @property
    def workers(self) -> int:
        return self._workers

    def _start_worker_if_needed(self) -> None:
        if len(self._ready) > self._waiting_workers and self._workers < self._max_workers:
            self._workers += 1
            threading.Thread(target=self._work, name=f"{self._name}-{self._workers}",
                             daemon=True).start()

    def _work(self) -> None:
        while True:
            with self._cond:
                queue = self._next_ready()
                if queue is None:
                    self._workers -= 1
                    return
                queue.attempts += 1
                job, attempt = queue.jobs[0], queue.attempts
                self._retrying += attempt > 1
            try:
                retry_in = self._attempt(job, attempt)
            except Exception:  # the workers' boundary: log, finish the job, carry on
                logger.exception("mlflow-hotswap: a notification job for %s failed", queue.key)
                retry_in = None
            with self._cond:
                if attempt > 1:
                    self._retrying -= 1
                    self._cond.notify()  # a due retry may wait for this slot
                if retry_in is None:
                    self._finish(queue)
                else:
                    due = self._clock() + retry_in
                    heapq.heappush(self._sleeping, (due, next(self._tiebreak), queue))
                    self._cond.notify()  # a waiting worker may have to wake sooner now

    def _next_ready(self) -> _Queue[Job] | None:
        """The next queue to attempt, waiting for one; None after `idle` seconds of nothing."""
        idle_until = self._clock() + self._idle
        while True:
            now = self._clock()
            while self._sleeping and self._sleeping[0][0] <= now:
                self._retries.append(heapq.heappop(self._sleeping)[2])
            if self._ready:
                return self._ready.popleft()
            if self._retries and self._retrying < max(1, self._max_workers // 2):
                return self._retries.popleft()
            if not self._sleeping and not self._retries and now >= idle_until:
                return None
            until = self._sleeping[0][0] if self._sleeping else idle_until
            if self._retries:  # held back by the cap: woken when a retry slot frees
                until = min(until, now + self._idle)
            self._waiting_workers += 1
            self._cond.wait(max(0.0, until - now))
            self._waiting_workers -= 1

    def _finish(self, queue: _Queue[Job]) -> None:
        queue.jobs.popleft()
        queue.attempts = 0
        self._jobs -= 1
        if queue.jobs:
            self._ready.append(queue)
            self._cond.notify()
        else:
            del self._queues[queue.key]
        if self._jobs == 0:
            self._cond.notify_all()
