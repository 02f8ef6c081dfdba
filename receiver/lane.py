"""ScoringLane: a request body in, its predictions' JSON out; fair to every client, bounded.

A request goes: shape check (shape.py, on the raw bytes) -> admission (at most
HOTSWAP_MAX_QUEUE requests in the lane, else Overloaded) -> parse, in a parse thread -> the
batcher of its model version -> one `predict` in the predict slot -> its own rows, as JSON.

Batching: while a `predict` runs, requests for the same version with the same columns, dtypes
and params wait in that version's batcher, and the next call takes them together (up to
HOTSWAP_BATCH_MAX_ROWS rows). Nothing waits on a timer: an idle lane scores a lone request at
once. A merged call that fails, or answers with another number of rows than it was given, is
retried request by request, so only a bad request gets its 400.

Every request has a deadline (HOTSWAP_REQUEST_TIMEOUT): past it the client gets DeadlineExceeded,
and a request not yet taken into a `predict` is dropped, never scored for nobody.

`score_all` is the same parse, merge and predict for work that runs outside the lane in a
thread of its own (the shadow): no admission, no deadline, no predict slot.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from receiver import scoring, threads
from receiver.codec import Codec
from receiver.metrics import Metrics
from receiver.registry import LoadedModel
from receiver.settings import Settings
from receiver.threads import Limiters

logger = logging.getLogger(__name__)

T = TypeVar("T")

# pyfunc loader modules whose `predict` scores each row on its own, so merging requests cannot
# change an answer. A custom python_function model may look across rows: never merged under auto.
ROW_INDEPENDENT_LOADERS = frozenset(
    {"mlflow.sklearn", "mlflow.xgboost", "mlflow.lightgbm", "mlflow.catboost"})

RETRY_AFTER_SECONDS = 1
# Bodies up to this size are parsed on the event loop: such a body parses faster than a round
# trip to a worker thread would take. Larger ones go to the parse threads.
INLINE_PARSE_BYTES = 16 * 1024


class Overloaded(RuntimeError):
    """The lane holds HOTSWAP_MAX_QUEUE requests already; this one was not admitted."""

    retry_after = RETRY_AFTER_SECONDS


class DeadlineExceeded(TimeoutError):
    """The request could not be scored within HOTSWAP_REQUEST_TIMEOUT; its work was dropped."""


class _Dropped(Exception):
    """A request's work skipped: its client was answered already."""


@dataclass(eq=False)
class _Parsed:
    """What a `predict` call needs of one request body."""

    data: Any
    params: dict[str, Any] | None
    rows: int
    key: Hashable | None  # requests merge only with an equal key; None: never merged
    # This request's own predictions -> its answer's body (its codec's encode).
    encode: Callable[[Any], bytes] = field(default=scoring.predictions_json, kw_only=True)


@dataclass(eq=False)
class _Request(_Parsed):
    """A parsed body waiting in the lane for its answer."""

    deadline: float
    future: asyncio.Future[bytes]
    dropped: bool = False


@dataclass(eq=False)
class _Batcher:
    """The requests waiting for one model version's next `predict` call."""

    model: LoadedModel
    batchable: bool
    queue: deque[_Request] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None


class ScoringLane:
    def __init__(self, settings: Settings, limiters: Limiters, metrics: Metrics,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._mode = settings.batching
        self._max_rows = settings.batch_max_rows
        self._max_queue = settings.max_queue
        self._timeout = settings.request_timeout
        self._limiters = limiters
        self._metrics = metrics
        self._clock = clock
        self._depth = 0
        # Keyed by the model object, not (name, version): a version loaded again is a new model.
        self._batchers: dict[int, _Batcher] = {}

    # -- what others may ask ------------------------------------------------------------------

    def depth(self) -> int:
        """Requests admitted and not yet answered (bounded by HOTSWAP_MAX_QUEUE)."""
        return self._depth

    def queued(self) -> int:
        """Parsed requests waiting behind a running `predict`."""
        return (sum(len(batcher.queue) for batcher in self._batchers.values())
                + self._limiters.predictions.statistics().tasks_waiting)

    def busy(self) -> bool:
        """True while requests wait behind a running `predict`: optional work (a shadow
        prediction) should yield."""
        return self.queued() > 0

    def batchable(self, model: LoadedModel) -> bool:
        if self._mode != "auto":
            return self._mode == "on"
        try:
            loader = model.pyfunc.metadata.flavors["python_function"].get("loader_module")
        except (AttributeError, KeyError, TypeError):
            return False
        return loader in ROW_INDEPENDENT_LOADERS

    # -- scoring ------------------------------------------------------------------------------

    async def score(self, model: LoadedModel, body: bytes, codec: Codec) -> bytes:
        """The predictions of `model` for one request body, as JSON bytes.

        Raises scoring.BadInput when the body is malformed or the model cannot score it,
        Overloaded when the lane is full, DeadlineExceeded when the deadline passed.
        """
        codec.check(body, model.input_schema)
        if self._depth >= self._max_queue:
            self._metrics.shed_requests.labels(reason="overloaded").inc()
            raise Overloaded(f"The server holds {self._max_queue} requests already "
                             f"(HOTSWAP_MAX_QUEUE); retry in {RETRY_AFTER_SECONDS} s.")
        started = self._clock()
        self._admit(1)
        try:
            content = await self._score_admitted(model, body, codec, started + self._timeout)
        except DeadlineExceeded:
            self._metrics.shed_requests.labels(reason="timeout").inc()
            raise
        finally:
            self._admit(-1)
        return content

    def _admit(self, change: int) -> None:
        self._depth += change
        self._metrics.queue_depth.set(self._depth)

    async def _score_admitted(self, model: LoadedModel, body: bytes, codec: Codec,
                              deadline: float) -> bytes:
        batchable = self.batchable(model)
        request = _Request(None, None, 0, None, deadline,
                           asyncio.get_running_loop().create_future(), encode=codec.encode)
        try:
            # Parsing holds no predict slot. A small body is parsed right here (a thread hop
            # costs more than its parse); a larger one in a parse thread, so it delays only
            # its own answer.
            if len(body) <= INLINE_PARSE_BYTES:
                parsed = self._parse(model, body, codec, batchable)
            else:
                parsed = await self._in_thread(request, self._limiters.parsing, self._parse,
                                               model, body, codec, batchable)
            request.data, request.params, request.rows, request.key = parsed
            if not batchable:
                self._observe_call([request])
                answer = await self._in_thread(request, self._limiters.predictions,
                                               self._alone, model, request)
                if isinstance(answer, scoring.BadInput):
                    raise answer
                return answer
            self._enqueue(model, request)
            timer = asyncio.get_running_loop().call_later(self._remaining(request),
                                                          self._expire, request)
            try:
                return await request.future
            finally:
                timer.cancel()
        finally:
            request.dropped = True  # answered, timed out or cancelled: never score it again

    async def _in_thread(self, request: _Request, limiter: anyio.CapacityLimiter,
                         func: Callable[..., T], *args: Any) -> T:
        """`func(*args)` in a worker thread of `limiter`, unless the request's deadline passes
        first. The thread is not cancelled (that would free its token while it still runs):
        it skips `func` if the request was dropped while it waited for a token."""
        def unless_dropped() -> T:
            if request.dropped:
                raise _Dropped
            return func(*args)

        work = asyncio.ensure_future(threads.run(unless_dropped, limiter=limiter))
        done, _ = await asyncio.wait((work,), timeout=self._remaining(request))
        if not done:
            request.dropped = True
            work.add_done_callback(_ignore_outcome)
            raise self._timed_out()
        return work.result()

    def _expire(self, request: _Request) -> None:
        if not request.future.done():
            request.dropped = True
            request.future.set_exception(self._timed_out())

    def _remaining(self, request: _Request) -> float:
        return max(0.0, request.deadline - self._clock())

    def _timed_out(self) -> DeadlineExceeded:
        return DeadlineExceeded(f"The request was not scored within {self._timeout:g} s "
                                "(HOTSWAP_REQUEST_TIMEOUT); its work was dropped.")

    @staticmethod
    def _parse(model: LoadedModel, body: bytes, codec: Codec, batchable: bool,
               ) -> tuple[Any, dict[str, Any] | None, int, Hashable | None]:
        # Batched, the common case stays a bare array: one frame is built per merged call.
        data, params = codec.parse(body, model.input_schema, batchable)
        rows = len(data) if isinstance(data, (pd.DataFrame, np.ndarray)) else 0
        key = _merge_key(data, params) if batchable and rows else None
        return data, params, rows, key

    def _observe_call(self, batch: Sequence[_Parsed]) -> None:
        self._metrics.batch_rows.observe(sum(request.rows for request in batch))
        self._metrics.batch_requests.observe(len(batch))

    # -- outside the lane ---------------------------------------------------------------------

    def score_all(self, model: LoadedModel, bodies: Sequence[tuple[bytes, Codec]],
                  ) -> list[bytes | scoring.BadInput]:
        """Blocking: each `(body, codec)`'s predictions from `model`, encoded, or its BadInput,
        merged into as few `predict` calls as the lane would make. Runs in the caller's thread,
        so the caller chooses which."""
        batchable = self.batchable(model)
        answers: list[bytes | scoring.BadInput] = [b""] * len(bodies)
        groups: dict[Hashable, list[tuple[int, _Parsed]]] = {}
        for index, (body, codec) in enumerate(bodies):
            try:
                codec.check(body, model.input_schema)
                parsed = _Parsed(*self._parse(model, body, codec, batchable),
                                 encode=codec.encode)
            except scoring.BadInput as exc:
                answers[index] = exc
                continue
            group = parsed.key if parsed.key is not None else ("alone", index)
            groups.setdefault(group, []).append((index, parsed))
        for members in groups.values():
            for call in _by_rows(members, self._max_rows):
                scored = self._predict(model, [parsed for _, parsed in call])
                for (index, _), answer in zip(call, scored, strict=True):
                    answers[index] = answer
        return answers

    # -- the batcher --------------------------------------------------------------------------

    def _enqueue(self, model: LoadedModel, request: _Request) -> None:
        batcher = self._batchers.get(id(model))
        if batcher is None:
            batcher = self._batchers[id(model)] = _Batcher(model, batchable=True)
        batcher.queue.append(request)
        if batcher.task is None:
            batcher.task = asyncio.get_running_loop().create_task(self._drain(batcher))

    async def _drain(self, batcher: _Batcher) -> None:
        """Score the batcher's queue, one merged call at a time, until it is empty."""
        try:
            while batcher.queue:
                batch = self._take(batcher.queue)
                if not batch:
                    continue
                answers: list[bytes | Exception]
                self._observe_call(batch)
                try:
                    answers = [*await threads.run(self._predict, batcher.model, batch,
                                                  limiter=self._limiters.predictions)]
                except Exception as exc:  # noqa: BLE001 - delivered to each waiting request
                    answers = [exc] * len(batch)
                for request, answer in zip(batch, answers, strict=True):
                    if request.dropped or request.future.done():
                        continue  # its client was answered already, or went away
                    if isinstance(answer, BaseException):
                        request.future.set_exception(answer)
                    else:
                        request.future.set_result(answer)
        finally:
            batcher.task = None
            if not batcher.queue:
                self._batchers.pop(id(batcher.model), None)

    def _take(self, queue: deque[_Request]) -> list[_Request]:
        """The next call's requests: the oldest live one, and every later one that merges with
        it, in order, up to HOTSWAP_BATCH_MAX_ROWS rows. Expired requests are dropped here."""
        now = self._clock()
        batch: list[_Request] = []
        rows = 0
        kept: deque[_Request] = deque()
        while queue:
            request = queue.popleft()
            if request.dropped or request.future.done():
                continue
            if request.deadline <= now:
                request.dropped = True
                request.future.set_exception(self._timed_out())
                continue
            if not batch:
                batch, rows = [request], request.rows
                if request.key is None:
                    break
            elif request.key == batch[0].key and rows + request.rows <= self._max_rows:
                batch.append(request)
                rows += request.rows
            else:
                kept.append(request)
        kept.extend(queue)
        queue.clear()
        queue.extend(kept)
        return batch

    # -- in the predict slot ------------------------------------------------------------------

    def _predict(self, model: LoadedModel, batch: Sequence[_Parsed],
                 ) -> list[bytes | scoring.BadInput]:
        """Each request's predictions as JSON, or its BadInput; runs in the predict slot."""
        if len(batch) == 1:
            return [self._alone(model, batch[0])]
        total = sum(request.rows for request in batch)
        try:
            raw = self._call(model, _merge([r.data for r in batch], model), batch[0].params)
            if _length(raw) != total:
                raise ValueError(f"{_length(raw)} predictions for {total} rows")
            answers: list[bytes | scoring.BadInput] = []
            offset = 0
            for request in batch:
                answers.append(request.encode(_slice(raw, offset, offset + request.rows)))
                offset += request.rows
            return answers
        except Exception as exc:  # noqa: BLE001 - any failure: each request on its own
            logger.debug("Merged call of %d requests failed (%s); scoring each alone",
                         len(batch), exc)
            return [self._alone(model, request) for request in batch]

    def _alone(self, model: LoadedModel, request: _Parsed) -> bytes | scoring.BadInput:
        try:
            data = request.data
            if isinstance(data, np.ndarray):
                data = scoring.rows_frame(data, model.input_schema)
            return request.encode(self._call(model, data, request.params))
        except scoring.BadInput as exc:
            return exc

    @staticmethod
    def _call(model: LoadedModel, data: Any, params: dict[str, Any] | None) -> Any:
        try:
            return model.pyfunc.predict(data, params=params)
        except MlflowException as exc:  # schema enforcement speaks through MlflowException
            raise scoring.BadInput(exc.message) from None
        except Exception as exc:  # noqa: BLE001 - bad input can make any model raise
            raise scoring.BadInput(
                "The model could not score this input; check that it matches the model's "
                f"signature. {type(exc).__name__}: {exc}") from None


def _ignore_outcome(work: asyncio.Future[Any]) -> None:
    if not work.cancelled():
        work.exception()  # retrieved, so asyncio does not log it as never retrieved


def _merge_key(data: Any, params: dict[str, Any] | None) -> Hashable | None:
    try:
        canonical_params = json.dumps(params, sort_keys=True)
    except (TypeError, ValueError):
        return None
    if isinstance(data, np.ndarray):
        # scoring's common case: exactly the signature's columns, all doubles.
        return ("rows", canonical_params)
    if isinstance(data, pd.DataFrame):
        return ("frame", tuple(data.columns), tuple(str(t) for t in data.dtypes),
                canonical_params)
    return None  # tensors and dicts are scored alone


def _by_rows(members: list[tuple[int, _Parsed]], max_rows: int,
             ) -> list[list[tuple[int, _Parsed]]]:
    """`members` in order, cut into calls of at most `max_rows` rows (a larger one alone)."""
    calls: list[list[tuple[int, _Parsed]]] = []
    rows = 0
    for member in members:
        if not calls or rows + member[1].rows > max_rows:
            calls.append([])
            rows = 0
        calls[-1].append(member)
        rows += member[1].rows
    return calls


def _merge(parts: list[Any], model: LoadedModel) -> pd.DataFrame:
    """One frame of every request's rows, in order; dtypes as each request had them."""
    if isinstance(parts[0], np.ndarray):
        return scoring.rows_frame(np.concatenate(parts), model.input_schema)
    frames: list[pd.DataFrame] = parts
    first = frames[0]
    dtypes = set(first.dtypes)
    if len(dtypes) == 1 and isinstance(next(iter(dtypes)), np.dtype) and next(
            iter(dtypes)).kind in "biuf":
        # One numeric block: concatenate the arrays and build one frame (pd.concat of many
        # small frames costs more than the predict it feeds).
        values = np.concatenate([frame.to_numpy() for frame in frames])
        return pd.DataFrame(values, columns=first.columns)
    return pd.concat(frames, ignore_index=True)


def _length(raw: Any) -> int:
    if isinstance(raw, (np.ndarray, pd.DataFrame, pd.Series, list)) and np.ndim(raw) > 0:
        return len(raw)
    return -1


def _slice(raw: Any, start: int, stop: int) -> Any:
    if isinstance(raw, (pd.DataFrame, pd.Series)):
        return raw.iloc[start:stop]
    return raw[start:stop]
