"""ScoringLane: a request body in, its answer out; fair to every client, bounded.

A request goes: admission (admission.py: while the backlog's expected wait fits HOTSWAP_MAX_WAIT
and its count HOTSWAP_MAX_QUEUE, else Overloaded; decided before the body is read) ->
parse, shape check first (batching.parse; a large body in a parse thread) -> the queue of its
model version -> one `predict` in a predict thread -> its own rows, encoded by its codec.

This module is the event-loop side: admission, a queue per model version and the task that
drains it, deadlines. batching.py is the thread side: merging, predicting, slicing.

Batching: while a `predict` runs, requests for the same version with the same columns, dtypes
and params wait in that version's queue, and the next call takes them together (up to
HOTSWAP_BATCH_MAX_ROWS rows). Nothing waits on a timer: an idle lane scores a lone request at
once. A version that is not batched has its requests taken from the queue at once, each its own
call, as many at a time as there are predict threads.

Every request has a deadline (HOTSWAP_REQUEST_TIMEOUT), kept by one timer on the event loop:
past it the client gets DeadlineExceeded, and a request not yet taken into a `predict` is
dropped, never scored for nobody. So is one whose client went away while it waited (ClientGone).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from receiver import batching, scoring, threads
from receiver.admission import Admission, Overloaded, Ticket
from receiver.codec import Codec
from receiver.metrics import Metrics
from receiver.registry import LoadedModel
from receiver.settings import Settings
from receiver.threads import Limiters

__all__ = ["ClientGone", "DeadlineExceeded", "Overloaded", "ScoringLane"]

# Bodies up to this size are parsed on the event loop: such a body parses faster than a round
# trip to a worker thread would take. Larger ones go to the parse threads.
INLINE_PARSE_BYTES = 16 * 1024


class DeadlineExceeded(TimeoutError):
    """The request could not be scored within HOTSWAP_REQUEST_TIMEOUT; its work was dropped."""


class ClientGone(ConnectionError):
    """The client disconnected while its request waited; its work was dropped."""


@dataclass(eq=False)
class _Request:
    """A parsed body waiting in the lane; its future is done once its client has an answer
    (or went away), and then nothing scores it any more."""

    parsed: batching.Parsed
    future: asyncio.Future[bytes]
    ticket: Ticket


@dataclass(eq=False)
class _Queue:
    """The requests waiting for one model version's next `predict` call."""

    model: LoadedModel
    batched: bool
    requests: list[_Request] = field(default_factory=list)
    drain: asyncio.Task[None] | None = None

    def take(self, max_rows: int) -> list[list[_Request]]:
        """The calls to start now, out of the queue: for a batched version the one holding the
        oldest request (batching.group), for an unbatched one every call."""
        waiting = [request for request in self.requests if not request.future.done()]
        calls = batching.group([request.parsed for request in waiting], max_rows)
        taken = calls[:1] if self.batched else calls
        chosen = {position for positions in taken for position in positions}
        self.requests = [request for position, request in enumerate(waiting)
                         if position not in chosen]
        return [[waiting[position] for position in positions] for positions in taken]


class ScoringLane:
    def __init__(self, settings: Settings, limiters: Limiters, metrics: Metrics) -> None:
        self._mode = settings.batching
        self._max_rows = settings.batch_max_rows
        self._admission = Admission(settings.max_wait, settings.max_queue, metrics,
                                    horizon=settings.request_timeout)
        self._timeout = settings.request_timeout
        self._limiters = limiters
        self._metrics = metrics
        # Keyed by the model object, not (name, version): a version loaded again is a new model.
        self._queues: dict[int, _Queue] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # running, so never garbage-collected
        self._calls = 0  # taken from a queue, not finished: in a predict thread or waiting
        self._last_finish = 0.0  # perf_counter() when the last predict call ended

    # -- what others may ask ------------------------------------------------------------------

    def depth(self) -> int:
        """Requests admitted and not yet answered (bounded by HOTSWAP_MAX_QUEUE)."""
        return self._admission.depth

    def admit(self) -> Ticket:
        """A place for one request, for `score`, or Overloaded; cheap, before the body is read."""
        return self._admission.admit()

    def rows_per_second(self) -> float | None:
        """The lane's measured throughput, at which admission prices a backlog; None until a
        call has been measured."""
        return self._admission.throughput.rows_per_second()

    def queued(self) -> int:
        """Parsed requests waiting behind a running `predict` (a call not holding a predict
        thread waits for one: the lane alone uses them)."""
        waiting_calls = self._calls - self._limiters.predictions.statistics().borrowed_tokens
        return sum(len(queue.requests) for queue in self._queues.values()) + waiting_calls

    def busy(self) -> bool:
        """True while requests wait behind a running `predict`: optional work (a shadow
        prediction) should yield."""
        return self.queued() > 0

    def score_all(self, model: LoadedModel, bodies: Sequence[tuple[bytes, Codec]],
                  ) -> list[bytes | scoring.BadInput]:
        """Blocking: each `(body, codec)`'s answer from `model`, or its BadInput, merged as the
        lane would merge them; for work outside the lane (the shadow): no admission, no
        deadline, no predict thread. Runs in the caller's thread, so the caller chooses which."""
        batchable = batching.batchable(model, self._mode)
        return batching.score_all(model, bodies, batchable, self._max_rows)

    # -- one request --------------------------------------------------------------------------

    async def score(self, model: LoadedModel, body: bytes, codec: Codec,
                    ticket: Ticket | None = None,
                    gone: asyncio.Future[None] | None = None) -> bytes:
        """The answer of `model` to one request body, encoded by `codec`. `ticket`: the
        request's place from `admit` (released here); without one, it is admitted here. `gone`:
        done when the client disconnects; its request is then dropped unless being scored.

        Raises scoring.BadInput when the body is malformed or the model cannot score it,
        Overloaded when the lane is full, DeadlineExceeded when the deadline passed,
        ClientGone when `gone` completed first.
        """
        with ticket or self.admit() as place:
            try:
                return await self._score_admitted(model, body, codec, place, gone)
            except (DeadlineExceeded, ClientGone) as dropped:
                self._metrics.shed_requests.labels(reason=_SHED_REASONS[type(dropped)]).inc()
                raise

    async def _score_admitted(self, model: LoadedModel, body: bytes, codec: Codec,
                              ticket: Ticket, gone: asyncio.Future[None] | None) -> bytes:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[bytes] = loop.create_future()
        # The deadline: the one timer that answers a request late. Whatever waits (a parse
        # thread, the queue, a predict thread) skips a request whose answer is done.
        deadline = loop.call_later(self._timeout, _expire, answer, self._timeout)
        if gone is not None:
            gone.add_done_callback(lambda _: _settle(answer, _client_gone()))
        batchable = batching.batchable(model, self._mode)
        try:
            # A small body is parsed right here (a thread hop costs more than its parse); a
            # larger one in a parse thread, so it delays only its own answer.
            if len(body) <= INLINE_PARSE_BYTES:
                parsed = batching.parse(model, body, codec, batchable)
                self._enqueue(model, batchable, _Request(parsed, answer, ticket))
            else:
                self._start(self._parse_in_thread(model, body, codec, batchable, answer,
                                                  ticket))
            return await answer
        finally:
            deadline.cancel()
            answer.cancel()  # nothing when answered; else any work still waiting skips it

    async def _parse_in_thread(self, model: LoadedModel, body: bytes, codec: Codec,
                               batchable: bool, answer: asyncio.Future[bytes],
                               ticket: Ticket) -> None:
        try:
            parsed = await threads.run(self._limiters.parsing, _parse_unless_answered,
                                       answer, model, body, codec, batchable)
        except Exception as exc:  # noqa: BLE001 - BadInput above all: the request's answer
            _settle(answer, exc)
            return
        if parsed is not None and not answer.done():
            self._enqueue(model, batchable, _Request(parsed, answer, ticket))

    def _start(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- a model version's queue --------------------------------------------------------------

    def _enqueue(self, model: LoadedModel, batchable: bool, request: _Request) -> None:
        queue = self._queues.get(id(model))
        if queue is None:
            queue = self._queues[id(model)] = _Queue(model, batchable)
        request.ticket.parsed(request.parsed.rows)
        queue.requests.append(request)
        if queue.drain is None:
            queue.drain = asyncio.get_running_loop().create_task(self._drain(queue))

    async def _drain(self, queue: _Queue) -> None:
        """Score the queue's requests until it is empty. A batched version makes one call at a
        time, so requests arriving meanwhile merge into the next; an unbatched one starts
        every call at once, and the predict threads bound how many run."""
        try:
            while queue.requests:
                calls = queue.take(self._max_rows)
                self._calls += len(calls)
                for call in calls:
                    if queue.batched:
                        await self._predict(queue.model, call)
                    else:
                        self._start(self._predict(queue.model, call))
        finally:
            queue.drain = None
            if not queue.requests:
                self._queues.pop(id(queue.model), None)

    async def _predict(self, model: LoadedModel, call: list[_Request]) -> None:
        """One `predict` for `call` in a predict thread; each request gets its own answer."""
        self._metrics.batch_rows.observe(sum(request.parsed.rows for request in call))
        self._metrics.batch_requests.observe(len(call))
        answers: Sequence[bytes | Exception | None]
        started = time.perf_counter()
        try:
            answers = await threads.run(self._limiters.predictions, _predict_unanswered,
                                        model, call)
        except Exception as exc:  # noqa: BLE001 - delivered to each waiting request
            answers = [exc] * len(call)
        finally:
            self._calls -= 1
        # The time this call adds to the lane's busy time, not its own duration: calls side by
        # side (unbatched versions, or several versions) overlap, and admission must price a
        # backlog at what they score together.
        finished = time.perf_counter()
        _measure(self._admission, call, answers, finished - max(started, self._last_finish))
        self._last_finish = finished
        for request, answer in zip(call, answers, strict=True):
            if answer is not None:
                _settle(request.future, answer)


_SHED_REASONS = {DeadlineExceeded: "timeout", ClientGone: "disconnected"}


def _expire(answer: asyncio.Future[bytes], timeout: float) -> None:
    _settle(answer, DeadlineExceeded(
        f"The request was not scored within {timeout:g} s (HOTSWAP_REQUEST_TIMEOUT); its "
        "work was dropped."))


def _client_gone() -> ClientGone:
    return ClientGone("The client disconnected before its request was scored.")


def _measure(admission: Admission, call: list[_Request],
             answers: Sequence[bytes | Exception | None], seconds: float) -> None:
    """Feed the throughput estimate with the rows of `call` that were scored."""
    scored = [request for request, answer in zip(call, answers, strict=True)
              if isinstance(answer, bytes)]
    admission.throughput.record(sum(request.parsed.rows for request in scored), len(scored),
                                seconds)


def _parse_unless_answered(answer: asyncio.Future[bytes], model: LoadedModel, body: bytes,
                           codec: Codec, batchable: bool) -> batching.Parsed | None:
    """Blocking: the parsed body; None, unparsed, when the request was answered (its deadline
    passed) while it waited for the thread."""
    if answer.done():
        return None
    return batching.parse(model, body, codec, batchable)


def _predict_unanswered(model: LoadedModel, call: list[_Request],
                        ) -> list[bytes | scoring.BadInput | None]:
    """Blocking: the answers of the requests in `call` not answered yet (their deadline may
    have passed while the call waited for its thread); None for the others."""
    waiting = [not request.future.done() for request in call]
    answers = iter(batching.predict(
        model, [request.parsed for request, wait in zip(call, waiting, strict=True) if wait]))
    return [next(answers) if wait else None for wait in waiting]


def _settle(answer: asyncio.Future[bytes], outcome: bytes | BaseException) -> None:
    """Answer a request, unless it has its answer already (or its client went away)."""
    if answer.done():
        return
    if isinstance(outcome, BaseException):
        answer.set_exception(outcome)
    else:
        answer.set_result(outcome)
