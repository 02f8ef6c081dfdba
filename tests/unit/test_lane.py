"""ScoringLane: admission, a queue per model version, deadlines, and the predict threads, on
fake models: no HTTP, no sleeping.

The fake holds its first predict until the test releases it, so the test decides exactly which
requests queue behind a running call; for deadlines the test moves the event loop's clock.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable, Sized
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow.types import ColSpec, DataType, Schema
from prometheus_client import CollectorRegistry

from receiver import scoring
from receiver.codec import MlflowCodec
from receiver.lane import INLINE_PARSE_BYTES, DeadlineExceeded, Overloaded, ScoringLane
from receiver.metrics import Metrics
from receiver.registry import LoadedModel
from receiver.service import Service
from receiver.settings import Settings
from receiver.threads import Limiters
from tests.support.fakes import FakeRegistry, loaded_model

JSON = MlflowCodec(scoring.JSON)
SKLEARN = "mlflow.sklearn"
CUSTOM = "mlflow.pyfunc.model"


class FakePyfunc:
    """Predicts 10 * column `a` (+ params["offset"]); raises on a negative `a`, as a model
    rejecting a bad value would. Its first call waits for `release`."""

    def __init__(self, loader: str = SKLEARN, short_answer_over: int | None = None) -> None:
        self.metadata = SimpleNamespace(flavors={"python_function": {"loader_module": loader}})
        self.calls: list[int] = []
        self.running = threading.Event()
        self.release = threading.Event()
        self.short_answer_over = short_answer_over

    def predict(self, data: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        self.calls.append(len(data))
        if len(self.calls) == 1:
            self.running.set()
            assert self.release.wait(timeout=10)
        if (data["a"] < 0).any():
            raise ValueError("a must not be negative")
        out = data["a"].to_numpy() * 10.0 + float((params or {}).get("offset", 0))
        if self.short_answer_over is not None and len(data) > self.short_answer_over:
            return out[:-1]  # a model that drops a row: the lane must notice
        return out


class SkippingLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock the test moves forward: timers due by then fire at once."""

    def __init__(self) -> None:
        super().__init__()
        self.skipped = 0.0

    def time(self) -> float:
        return super().time() + self.skipped


def make_lane(pyfunc: FakePyfunc, schema: Schema | None = None,
              **settings: Any) -> tuple[ScoringLane, LoadedModel, Metrics, Limiters]:
    config = Settings(tracking_uri="http://unused", model_names=("m",), **settings)
    metrics = Metrics(CollectorRegistry())
    limiters = Limiters.create(config.predict_threads)
    lane = ScoringLane(config, limiters, metrics)
    model = loaded_model(pyfunc=pyfunc, input_schema=schema)
    return lane, model, metrics, limiters


def body(*values: float, columns: tuple[str, ...] = ("a",),
         params: dict[str, Any] | None = None) -> bytes:
    rows = [[v] * len(columns) for v in values]
    document: dict[str, Any] = {"dataframe_split": {"columns": list(columns), "data": rows}}
    if params is not None:
        document["params"] = params
    return json.dumps(document).encode()


async def until(check: Callable[[], bool], timeout: float = 10) -> None:
    async def poll() -> None:
        while not check():
            await asyncio.sleep(0.005)
    await asyncio.wait_for(poll(), timeout)


async def behind_a_running_call(lane: ScoringLane, model: LoadedModel, pyfunc: FakePyfunc,
                                limiters: Limiters, bodies: list[bytes]
                                ) -> tuple[asyncio.Task[bytes], list[asyncio.Task[Any]]]:
    """Start one request and hold its predict; queue `bodies` behind it; return all tasks."""
    first = asyncio.ensure_future(lane.score(model, body(0.5), JSON))
    await until(pyfunc.running.is_set)
    queued = [asyncio.ensure_future(_outcome(lane.score(model, b, JSON))) for b in bodies]
    await until(lambda: lane.queued() == len(bodies))
    return first, queued


async def _outcome(call: Awaitable[bytes]) -> Any:
    try:
        return json.loads(await call)
    except Exception as exc:  # noqa: BLE001 - the test compares outcomes
        return exc


def predictions(*values: float, offset: float = 0) -> dict[str, list[float]]:
    return {"predictions": [v * 10.0 + offset for v in values]}


def test_a_lone_request_on_an_idle_lane_is_scored_at_once() -> None:
    pyfunc = FakePyfunc()
    pyfunc.release.set()
    lane, model, _, _ = make_lane(pyfunc)
    answer = asyncio.run(lane.score(model, body(1, 2), JSON))
    assert json.loads(answer) == predictions(1, 2)
    assert pyfunc.calls == [2]
    assert lane.depth() == 0 and not lane.busy()


def test_requests_queued_behind_a_call_merge_into_the_next_and_each_gets_its_own_rows() -> None:
    pyfunc = FakePyfunc()
    lane, model, metrics, limiters = make_lane(pyfunc)
    values = [(1,), (2, 3), (4,), (5, 6, 7)]

    async def scenario() -> list[Any]:
        first, queued = await behind_a_running_call(lane, model, pyfunc, limiters,
                                                    [body(*v) for v in values])
        assert lane.busy()
        pyfunc.release.set()
        assert json.loads(await first) == predictions(0.5)
        return await asyncio.gather(*queued)

    assert asyncio.run(scenario()) == [predictions(*v) for v in values]
    assert pyfunc.calls == [1, 7]  # the lone first request, then one merged call
    assert metrics.registry.get_sample_value("hotswap_predict_batch_requests_count") == 2
    assert metrics.registry.get_sample_value("hotswap_predict_batch_rows_sum") == 8
    assert lane.depth() == 0 and not lane.busy()


def test_bodies_in_the_signature_s_own_form_merge_as_rows_small_and_large() -> None:
    # All-double `dataframe_split` with the signature's columns: parsed to bare rows (the
    # large body in a parse thread), stacked into one frame for the merged call.
    pyfunc = FakePyfunc()
    schema = Schema([ColSpec(DataType.double, "a"), ColSpec(DataType.double, "b")])
    lane, model, _, limiters = make_lane(pyfunc, schema=schema, batch_max_rows=5000)
    large = [float(v) for v in range(3000)]
    assert len(body(*large, columns=("a", "b"))) > INLINE_PARSE_BYTES
    values = [(1,), tuple(large), (2, 3)]

    async def scenario() -> list[Any]:
        first, queued = await behind_a_running_call(
            lane, model, pyfunc, limiters, [body(*v, columns=("a", "b")) for v in values])
        pyfunc.release.set()
        await first
        return await asyncio.gather(*queued)

    assert asyncio.run(scenario()) == [predictions(*v) for v in values]
    assert pyfunc.calls[1:] == [3003]


def test_only_requests_with_the_same_columns_and_params_merge() -> None:
    pyfunc = FakePyfunc()
    lane, model, _, limiters = make_lane(pyfunc)
    bodies = [body(1), body(2, columns=("a", "b")), body(3), body(4, params={"offset": 1}),
              body(5, columns=("a", "b")), body(6, params={"offset": 1})]

    async def scenario() -> list[Any]:
        first, queued = await behind_a_running_call(lane, model, pyfunc, limiters, bodies)
        pyfunc.release.set()
        await first
        return await asyncio.gather(*queued)

    assert asyncio.run(scenario()) == [
        predictions(1), predictions(2), predictions(3), predictions(4, offset=1),
        predictions(5), predictions(6, offset=1)]
    # Oldest first: [1, 3], then [2, 5] (columns a, b), then [4, 6] (offset 1).
    assert pyfunc.calls == [1, 2, 2, 2]


def test_a_failing_merged_call_is_retried_alone_so_only_the_bad_request_fails() -> None:
    pyfunc = FakePyfunc()
    lane, model, _, limiters = make_lane(pyfunc)

    async def scenario() -> list[Any]:
        first, queued = await behind_a_running_call(
            lane, model, pyfunc, limiters, [body(1), body(-1), body(2, 3)])
        pyfunc.release.set()
        await first
        return await asyncio.gather(*queued)

    good, bad, other = asyncio.run(scenario())
    assert good == predictions(1) and other == predictions(2, 3)
    assert isinstance(bad, scoring.BadInput) and "must not be negative" in str(bad)
    assert pyfunc.calls[:2] == [1, 4]  # the merged call failed; then each alone
    assert sorted(pyfunc.calls[2:]) == [1, 1, 2]


def test_a_merged_call_answering_the_wrong_number_of_rows_is_retried_alone() -> None:
    pyfunc = FakePyfunc(short_answer_over=2)
    lane, model, _, limiters = make_lane(pyfunc)

    async def scenario() -> list[Any]:
        first, queued = await behind_a_running_call(lane, model, pyfunc, limiters,
                                                    [body(1), body(2), body(3)])
        pyfunc.release.set()
        await first
        return await asyncio.gather(*queued)

    assert asyncio.run(scenario()) == [predictions(1), predictions(2), predictions(3)]
    assert pyfunc.calls == [1, 3, 1, 1, 1]


def test_a_merged_call_never_exceeds_batch_max_rows() -> None:
    pyfunc = FakePyfunc()
    lane, model, _, limiters = make_lane(pyfunc, batch_max_rows=4)

    async def scenario() -> list[Any]:
        first, queued = await behind_a_running_call(
            lane, model, pyfunc, limiters, [body(1)] * 5 + [body(2, 3, 4, 5, 6)])
        pyfunc.release.set()
        await first
        return await asyncio.gather(*queued)

    assert asyncio.run(scenario()) == [predictions(1)] * 5 + [predictions(2, 3, 4, 5, 6)]
    # Requests are parsed in parallel, so their order in the queue may vary; the calls don't:
    # four 1-row requests together, the fifth alone, and the 5-row one alone (over the limit).
    assert sorted(pyfunc.calls) == [1, 1, 4, 5]


@pytest.mark.parametrize(("loader", "mode", "merged"), [
    (CUSTOM, "auto", False), (SKLEARN, "auto", True), (CUSTOM, "on", True),
    (SKLEARN, "off", False)])
def test_batching_mode_and_flavor_decide_whether_requests_merge(loader: str, mode: str,
                                                                 merged: bool) -> None:
    pyfunc = FakePyfunc(loader=loader)
    lane, model, _, _ = make_lane(pyfunc, batching=mode)

    async def scenario() -> list[Any]:
        first = asyncio.ensure_future(lane.score(model, body(0.5), JSON))
        await until(pyfunc.running.is_set)
        queued = [asyncio.ensure_future(_outcome(lane.score(model, body(v), JSON)))
                  for v in (1, 2, 3)]
        await until(lambda: lane.queued() == 3)
        assert lane.busy() and lane.depth() == 4
        pyfunc.release.set()
        await first
        return await asyncio.gather(*queued)

    assert asyncio.run(scenario()) == [predictions(1), predictions(2), predictions(3)]
    assert pyfunc.calls == ([1, 3] if merged else [1, 1, 1, 1])


def test_beyond_max_queue_a_request_is_refused_at_once() -> None:
    pyfunc = FakePyfunc()
    lane, model, metrics, limiters = make_lane(pyfunc, max_queue=3)

    async def scenario() -> None:
        first, queued = await behind_a_running_call(lane, model, pyfunc, limiters,
                                                    [body(1), body(2)])
        assert metrics.registry.get_sample_value("hotswap_lane_queue_depth") == 3
        with pytest.raises(Overloaded):
            await lane.score(model, body(3), JSON)
        pyfunc.release.set()
        await first
        assert await asyncio.gather(*queued) == [predictions(1), predictions(2)]
        # Room again: admitted and scored.
        assert json.loads(await lane.score(model, body(4), JSON)) == predictions(4)

    asyncio.run(scenario())
    assert metrics.registry.get_sample_value(
        "hotswap_requests_shed_total", {"reason": "overloaded"}) == 1
    assert 3 not in pyfunc.calls and metrics.registry.get_sample_value(
        "hotswap_lane_queue_depth") == 0


def test_a_request_past_its_deadline_is_answered_and_never_scored() -> None:
    pyfunc = FakePyfunc()
    lane, model, metrics, limiters = make_lane(pyfunc, request_timeout=30)
    loop = SkippingLoop()

    async def scenario() -> list[Any]:
        first, late = await behind_a_running_call(lane, model, pyfunc, limiters,
                                                  [body(7), body(8)])
        loop.skipped += 31  # every request so far is past its deadline now
        fresh = asyncio.ensure_future(_outcome(lane.score(model, body(9), JSON)))
        await until(lambda: lane.queued() == 3)
        pyfunc.release.set()
        return [await _outcome(first), *await asyncio.gather(*late), await fresh]

    try:
        running, seven, eight, nine = loop.run_until_complete(scenario())
    finally:
        loop.close()
    assert isinstance(seven, DeadlineExceeded) and isinstance(eight, DeadlineExceeded)
    assert nine == predictions(9)
    assert pyfunc.calls == [1, 1]  # 7 and 8 were dropped, not scored
    # The running call's own client is late too: its predict is not interrupted, its answer
    # is dropped.
    assert isinstance(running, DeadlineExceeded)
    assert metrics.registry.get_sample_value(
        "hotswap_requests_shed_total", {"reason": "timeout"}) == 3


def test_an_unbatched_request_waiting_for_the_predict_slot_times_out() -> None:
    pyfunc = FakePyfunc(loader=CUSTOM)
    lane, model, _, _ = make_lane(pyfunc, request_timeout=0.2)

    async def scenario() -> Any:
        first = asyncio.ensure_future(_outcome(lane.score(model, body(0.5), JSON)))
        await until(pyfunc.running.is_set)
        outcome = await _outcome(lane.score(model, body(1), JSON))
        pyfunc.release.set()
        await first  # itself late: a running predict is not interrupted, only its answer
        return outcome

    assert isinstance(asyncio.run(scenario()), DeadlineExceeded)
    assert pyfunc.calls == [1]


def test_malformed_bodies_fail_alone_before_the_queue() -> None:
    pyfunc = FakePyfunc()
    pyfunc.release.set()
    lane, model, _, _ = make_lane(pyfunc)

    async def scenario() -> tuple[Any, ...]:
        return await asyncio.gather(_outcome(lane.score(model, b"{not json", JSON)),
                                    _outcome(lane.score(model, body(1), JSON)))

    bad, good = asyncio.run(scenario())
    assert isinstance(bad, scoring.BadInput) and good == predictions(1)


# -- predict threads ---------------------------------------------------------------------------

REQUESTS = 12


class BlockingModel:
    """Stands in for a PyFuncModel: counts predictions in flight, holds each until released."""

    def __init__(self) -> None:
        self.running = 0
        self.release = threading.Event()
        self._lock = threading.Lock()

    def predict(self, data: Sized, params: object = None) -> list[int]:
        with self._lock:
            self.running += 1
        self.release.wait(timeout=10)
        return [1] * len(data)


@pytest.mark.parametrize("threads", [1, 3])
def test_predictions_in_flight_never_exceed_the_limit(threads: int) -> None:
    settings = Settings(tracking_uri="http://unused", model_names=("m",),
                        predict_threads=threads)
    service = Service(settings, registry=FakeRegistry())
    lane, limiters = service.lane, service.limiters
    pyfunc = BlockingModel()
    model = loaded_model(pyfunc=pyfunc)
    body = json.dumps({"dataframe_split": {"columns": ["a"], "data": [[1], [2]]}}).encode()

    async def burst() -> list[bytes]:
        calls = asyncio.gather(*(lane.score(model, body, JSON)
                                 for _ in range(REQUESTS)))
        # Wait (with a deadline) until every request is either predicting or queued.
        async def settled() -> None:
            while True:
                stats = limiters.predictions.statistics()
                if stats.tasks_waiting == REQUESTS - threads and pyfunc.running == threads:
                    return
                await asyncio.sleep(0.01)
        await asyncio.wait_for(settled(), timeout=10)
        assert pyfunc.running == threads  # the rest wait for a token, not for the model
        pyfunc.release.set()
        return await calls

    answers = asyncio.run(burst())
    assert [json.loads(a) for a in answers] == [{"predictions": [1, 1]}] * REQUESTS
    assert pyfunc.running == REQUESTS


class SideBySideModel:
    """Stands in for a PyFuncModel whose calls run side by side: each takes `seconds` without
    holding the GIL, as a model calling into native code would."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds

    def predict(self, data: Sized, params: object = None) -> list[int]:
        time.sleep(self._seconds)
        return [1] * len(data)


def test_calls_side_by_side_are_priced_at_the_throughput_they_make_together() -> None:
    width, rounds = 4, 6
    settings = Settings(tracking_uri="http://unused", model_names=("m",),
                        predict_threads=width, batching="off")
    service = Service(settings, registry=FakeRegistry())
    lane = service.lane
    model = loaded_model(pyfunc=SideBySideModel(0.05))
    one_row = body(1.0)

    async def run() -> float:
        started = asyncio.get_running_loop().time()
        for _ in range(rounds):
            await asyncio.gather(*(lane.score(model, one_row, JSON) for _ in range(width)))
        return (asyncio.get_running_loop().time() - started) / rounds

    seconds_per_round = asyncio.run(run())
    rate = lane.rows_per_second()
    assert rate is not None
    # Each round scores `width` rows in about one call's time: priced one call at a time, the
    # lane would be credited with a single row per round.
    assert rate * seconds_per_round > width / 2, (rate, seconds_per_round)


# -- score_all: the same merging for work outside the lane (the shadow) -------------------------

def test_score_all_merges_what_the_lane_would_and_fails_only_bad_bodies() -> None:
    pyfunc = FakePyfunc()
    pyfunc.release.set()
    lane, model, metrics, _ = make_lane(pyfunc, batch_max_rows=3)
    bodies = [body(1), body(2, columns=("a", "b")), body(3, 4), body(-1), b"{not json",
              body(5)]
    answers = lane.score_all(model, [(b, JSON) for b in bodies])
    scored = [json.loads(a) if isinstance(a, bytes) else a for a in answers]
    assert scored[:3] == [predictions(1), predictions(2), predictions(3, 4)]
    assert scored[5] == predictions(5)
    assert all(isinstance(a, scoring.BadInput) for a in answers[3:5])
    # Column a: [1], [3, 4] fill a 3-row call; [-1] and [5] the next, which fails and is
    # retried alone. Columns a, b: alone. The malformed body never reaches predict.
    assert pyfunc.calls == [3, 2, 1, 1, 1]
    # Outside the lane: its call counters are the lane's own traffic only.
    assert metrics.registry.get_sample_value("hotswap_predict_batch_requests_count") == 0
    assert lane.depth() == 0
