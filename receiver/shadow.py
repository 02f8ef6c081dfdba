"""ShadowScorer: score answered requests again with the shadow version, and compare.

A request is handed over once its answer has been sent (the response's background task), so
the shadow can neither delay nor change the answer. Shadows are evidence, not answers, so they
can wait: they gather in a queue of their own for LINGER_SECONDS, start only while no request
waits in the lane, and run in a thread of their own (threads.Limiters.shadow), merged into as
few `predict` calls as the lane would make (ScoringLane.score_all). A primary never waits for a
slot behind a shadow, and a stream of shadows costs one call per linger, not one each.
Shadows beyond the queue's bound, or not started within MAX_WAIT_SECONDS because the lane
stayed busy, are dropped and counted as shed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import anyio

from receiver import rollout, scoring, threads
from receiver.codec import Codec
from receiver.metrics import Metrics
from receiver.registry import LoadedModel

logger = logging.getLogger(__name__)

# Shadows taken into one `score_all` call; it cuts them into calls of at most
# HOTSWAP_BATCH_MAX_ROWS rows.
MAX_SHADOWS_PER_CALL = 256
# How long shadows gather before a call: a merged call costs about what a lone one does, so
# this divides the shadow's share of the CPU by the requests per linger (bench/rollout.py
# measures what a shadow costs the primary).
LINGER_SECONDS = 0.05
# While requests wait in the lane, look again this soon: the lane empties between its calls.
BUSY_RECHECK_SECONDS = 0.002
MAX_WAIT_SECONDS = 2.0


class ShadowLane(Protocol):
    """What the shadow needs of the lane (receiver.lane.ScoringLane): whether requests wait,
    and scoring outside it."""

    def busy(self) -> bool: ...

    def score_all(self, model: LoadedModel, bodies: Sequence[tuple[bytes, Codec]],
                  ) -> Sequence[bytes | scoring.BadInput]: ...


@dataclass(frozen=True)
class _Shadow:
    model: LoadedModel
    body: bytes
    codec: Codec
    primary_answer: bytes
    queued_at: float


class ShadowScorer:
    def __init__(self, lane: ShadowLane, limiter: anyio.CapacityLimiter, metrics: Metrics,
                 max_pending: int, linger: float = LINGER_SECONDS,
                 max_wait: float = MAX_WAIT_SECONDS,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self._lane = lane
        self._limiter = limiter
        self._metrics = metrics
        self._max_pending = max_pending
        self._linger = linger
        self._max_wait = max_wait
        self._clock = clock
        self._pending: deque[_Shadow] = deque()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    def pending(self) -> int:
        return len(self._pending)

    async def join(self) -> None:
        """Wait until every shadow handed over so far is scored or shed."""
        while self._task is not None:
            await asyncio.shield(self._task)

    async def stop(self) -> None:
        """At shutdown: drop what waits and what comes after (shadows are optional), and end
        the drain."""
        self._stopped = True
        self._pending.clear()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __call__(self, shadow: LoadedModel, body: bytes, codec: Codec,
                       primary_answer: bytes) -> None:
        job = _Shadow(shadow, body, codec, primary_answer, self._clock())
        if self._stopped or len(self._pending) >= self._max_pending:
            self._shed(job)
            return
        self._pending.append(job)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        try:
            pause = self._linger  # gather first: see LINGER_SECONDS
            while self._pending:
                await asyncio.sleep(pause)
                too_old = self._clock() - self._max_wait
                while self._pending and self._pending[0].queued_at <= too_old:
                    self._shed(self._pending.popleft())
                if not self._pending:
                    break
                if self._lane.busy():
                    pause = min(self._linger, BUSY_RECHECK_SECONDS)
                    continue
                pause = self._linger
                calls = self._take()
                answers: Sequence[bytes | Exception]
                try:
                    answers = await threads.run(
                        self._limiter, self._lane.score_all, calls[0].model,
                        [(job.body, job.codec) for job in calls])
                except Exception as exc:  # noqa: BLE001 - a failing shadow is counted, never raised
                    answers = [exc] * len(calls)
                for job, answer in zip(calls, answers, strict=True):
                    self._record(job, answer)
        finally:
            self._task = None

    def _take(self) -> list[_Shadow]:
        """The oldest shadow and every later one for the same model version, in order."""
        first = self._pending.popleft()
        taken, kept = [first], deque[_Shadow]()
        while self._pending and len(taken) < MAX_SHADOWS_PER_CALL:
            job = self._pending.popleft()
            (taken if job.model is first.model else kept).append(job)
        kept.extend(self._pending)
        self._pending = kept
        return taken

    def _shed(self, job: _Shadow) -> None:
        self._metrics.shadow_shed.labels(model=job.model.name, version=job.model.version).inc()

    def _record(self, job: _Shadow, answer: bytes | Exception) -> None:
        labels = {"model": job.model.name, "version": job.model.version}
        counted = {**labels, "role": "shadow", "protocol": job.codec.protocol}
        if isinstance(answer, Exception):
            self._metrics.prediction_errors.labels(**counted).inc()
            logger.warning("Shadow version %s of %s failed on a request the primary answered: "
                           "%s", job.model.version, job.model.name, type(answer).__name__)
            return
        self._metrics.prediction_duration.labels(role="shadow").observe(
            self._clock() - job.queued_at)
        self._metrics.predictions.labels(**counted).inc()
        self._metrics.shadow_comparisons.labels(**labels).inc()
        if not rollout.agree(job.primary_answer, answer):
            self._metrics.shadow_disagreements.labels(**labels).inc()
