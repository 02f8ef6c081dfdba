"""Admission by expected wait: the throughput estimate, the decision, and the lane and the HTTP
edge around them (a refusal needs no body; a client that leaves is never scored). Fake models,
no sleeping: the tests give the estimate its calls' rows and seconds themselves."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from receiver.admission import AdmissionPolicy, Throughput
from receiver.lane import ClientGone, Overloaded
from receiver.service import Service
from tests.unit.test_endpoints import make_client
from tests.unit.test_lane import (
    JSON,
    FakePyfunc,
    behind_a_running_call,
    body,
    make_lane,
    predictions,
    until,
)


def measured(rows: int, requests: int, seconds: float) -> Throughput:
    throughput = Throughput(newest_weight=0.5)
    throughput.record(rows, requests, seconds)
    return throughput


def test_the_estimate_is_unknown_until_a_call_is_measured() -> None:
    throughput = Throughput()
    assert throughput.rows_per_second() is None
    throughput.record(0, 0, 0.5)  # a call whose requests had all gone: nothing learnt
    assert throughput.rows_per_second() is None
    throughput.record(100, 4, 0.5)
    assert throughput.rows_per_second() == 200
    assert throughput.rows_per_request() == 25


def test_the_estimate_follows_recent_calls() -> None:
    throughput = measured(100, 1, 1.0)
    throughput.record(300, 1, 1.0)
    assert throughput.rows_per_second() == pytest.approx(200)  # halfway, at weight 0.5
    for _ in range(20):
        throughput.record(10, 1, 1.0)
    assert throughput.rows_per_second() == pytest.approx(10, rel=0.01)


def test_a_call_weighs_by_its_rows_so_large_requests_are_priced_at_their_own_rate() -> None:
    # One-row calls spend 1 ms each, mostly fixed overhead: 1,000 rows/s. A 30,000-row call
    # in 60 ms (500,000 rows/s) then shows what large requests really cost.
    throughput = Throughput()
    for _ in range(30):
        throughput.record(1, 1, 0.001)
    throughput.record(30_000, 1, 0.060)
    for _ in range(10):  # one-row calls go on while large requests wait
        throughput.record(1, 1, 0.001)
    policy = AdmissionPolicy(max_wait=1.0, max_queue=1000, throughput=throughput)
    # Two more such requests are a fraction of a second of work, not 60 s at the one-row rate.
    wait = policy.expected_wait(parsed_rows=60_000, unparsed_requests=0)
    assert wait is not None and wait < 0.5
    assert policy.decide(admitted=3, parsed=2, parsed_rows=60_000).admitted


def test_cold_admits_up_to_the_count_and_no_further() -> None:
    policy = AdmissionPolicy(max_wait=1.0, max_queue=3, throughput=Throughput())
    assert policy.decide(admitted=2, parsed=2, parsed_rows=10_000).admitted
    refused = policy.decide(admitted=3, parsed=0, parsed_rows=0)
    assert (refused.admitted, refused.bound, refused.retry_after) == (False, "count", 1)


def test_admits_while_the_backlog_fits_the_budget() -> None:
    # 100 rows/s and a budget of 2 s: 200 rows of backlog fit, 201 do not.
    policy = AdmissionPolicy(max_wait=2.0, max_queue=1000, throughput=measured(100, 1, 1.0))
    assert policy.decide(admitted=2, parsed=2, parsed_rows=200).admitted
    refused = policy.decide(admitted=2, parsed=2, parsed_rows=201)
    assert (refused.admitted, refused.bound) == (False, "wait")
    assert refused.expected_wait == pytest.approx(2.01)


def test_retry_after_is_the_expected_wait_rounded_up() -> None:
    policy = AdmissionPolicy(max_wait=0.5, max_queue=1000, throughput=measured(100, 1, 1.0))
    assert policy.decide(admitted=1, parsed=1, parsed_rows=60).retry_after == 1
    assert policy.decide(admitted=1, parsed=1, parsed_rows=420).retry_after == 5


def test_no_wait_is_reported_beyond_the_request_timeout() -> None:
    # Every admitted request is answered or dropped within the timeout (the horizon), so a
    # 30,000-row request priced at the one-row calls' rate tells a client at most that.
    policy = AdmissionPolicy(max_wait=5.0, max_queue=1000, throughput=measured(2, 1, 0.008),
                             horizon=60.0)
    refused = policy.decide(admitted=2, parsed=1, parsed_rows=30_000)
    assert (refused.admitted, refused.expected_wait, refused.retry_after) == (False, 60.0, 60)


def test_requests_not_parsed_yet_count_at_the_recent_rows_per_request() -> None:
    # 10 rows per request at 100 rows/s: 30 unparsed requests are 3 s of backlog.
    policy = AdmissionPolicy(max_wait=2.5, max_queue=1000, throughput=measured(10, 1, 0.1))
    assert policy.expected_wait(parsed_rows=0, unparsed_requests=30) == pytest.approx(3.0)
    assert not policy.decide(admitted=30, parsed=0, parsed_rows=0).admitted
    assert policy.decide(admitted=20, parsed=0, parsed_rows=0).admitted


def test_the_count_stays_a_ceiling_however_fast_the_model() -> None:
    policy = AdmissionPolicy(max_wait=10.0, max_queue=4, throughput=measured(10**6, 1, 0.001))
    refused = policy.decide(admitted=4, parsed=4, parsed_rows=4)
    assert (refused.admitted, refused.bound) == (False, "count")


def test_the_lane_refuses_beyond_the_budget_once_measured_and_admits_when_it_drains() -> None:
    # A budget no backlog fits: once a call is measured, one waiting request is too many.
    pyfunc = FakePyfunc()
    pyfunc.release.set()
    lane, model, metrics, _ = make_lane(pyfunc, max_wait=1e-9, max_queue=100)

    async def scenario() -> None:
        assert metrics.registry.get_sample_value("hotswap_lane_expected_wait_seconds") == 0
        assert json.loads(await lane.score(model, body(1, 2), JSON)) == predictions(1, 2)
        assert metrics.registry.get_sample_value("hotswap_lane_expected_wait_seconds") == 0
        with lane.admit():
            assert (metrics.registry.get_sample_value("hotswap_lane_expected_wait_seconds")
                    or 0) > 0
            with pytest.raises(Overloaded) as refused:
                lane.admit()
            assert refused.value.retry_after == 1
            assert "HOTSWAP_MAX_WAIT" in str(refused.value)
        assert json.loads(await lane.score(model, body(3), JSON)) == predictions(3)

    asyncio.run(scenario())
    assert lane.depth() == 0
    assert metrics.registry.get_sample_value(
        "hotswap_requests_shed_total", {"reason": "overloaded"}) == 1


def test_a_request_whose_client_left_while_queued_is_never_scored() -> None:
    pyfunc = FakePyfunc()
    lane, model, metrics, limiters = make_lane(pyfunc)

    async def scenario() -> None:
        first, _ = await behind_a_running_call(lane, model, pyfunc, limiters, [])
        gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        leaving = asyncio.ensure_future(lane.score(model, body(7), JSON, gone=gone))
        staying = asyncio.ensure_future(lane.score(model, body(8), JSON))
        await until(lambda: lane.queued() == 2)  # both queued behind the running call
        gone.set_result(None)  # the client disconnects
        with pytest.raises(ClientGone):
            await leaving
        pyfunc.release.set()
        assert json.loads(await first) == predictions(0.5)
        assert json.loads(await staying) == predictions(8)

    asyncio.run(scenario())
    assert pyfunc.calls == [1, 1]  # the held call, then 8 alone: 7 was never scored
    assert lane.depth() == 0
    assert metrics.registry.get_sample_value(
        "hotswap_requests_shed_total", {"reason": "disconnected"}) == 1


@pytest.fixture()
def no_budget() -> Iterator[tuple[TestClient, Service]]:
    yield from make_client("1", max_wait=1e-9)


def test_a_refusal_is_503_with_retry_after_and_never_reads_the_body(
        no_budget: tuple[TestClient, Service]) -> None:
    client, service = no_budget
    assert client.post("/invocations", json={"inputs": [[1.0]]}).status_code == 200  # measured
    with service.lane.admit():  # one request waiting: over a budget of nothing
        # Malformed: a 503, not a 400, shows the body was never parsed.
        refused = client.post("/invocations", content=b"{not json",
                              headers={"content-type": "application/json"})
    assert refused.status_code == 503
    assert refused.json()["error_code"] == "OVERLOADED"
    assert refused.headers["retry-after"] == "1"
    assert client.post("/invocations", json={"inputs": [[1.0]]}).status_code == 200
